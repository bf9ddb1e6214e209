import { request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect as tlsConnect } from 'node:tls';
import type { ConfigInput } from '../../src/config/schema.js';
import { makeTestPki, type CertPair, type TestPki } from '../helpers/certs.js';
import { startTestGateway, testGatewayConfig, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
let pki: TestPki;
beforeAll(async () => {
  pki = await makeTestPki();
});
afterAll(async () => {
  await pki?.dispose();
});

function get(port: number, path: string, tls: { maxVersion?: 'TLSv1.2' } = {}): Promise<{ status: number; body: string }> {
  return new Promise((done, fail) => {
    const req = request({ host: '127.0.0.1', port, path, ca: pki.ca.cert, ...tls }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
    req.end();
  });
}

describe('Vault front door over TLS', () => {
  it("serves TLS 1.3 with listen.tls's certificate, and refuses TLS 1.2", async () => {
    const gw = await startTestGateway(await tmp(), {
      listen: { tls: { host: '127.0.0.1', port: 0, cert: pki.server.certPath, key: pki.server.keyPath, ca: pki.ca.certPath } },
      vault: { listen: '127.0.0.1:0' },
    });
    running.push(gw);
    const port = gw.vault?.port as number;
    const health = await get(port, '/v1/sys/health');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ sealed: false });
    await expect(get(port, '/v1/sys/health', { maxVersion: 'TLSv1.2' })).rejects.toThrow();
  });

  it("takes listen.tls's renewed certificate at a reload (SIGHUP), as the TLS listener does", async () => {
    const dir = await tmp();
    const config = (cert: CertPair): ConfigInput => ({
      listen: { tls: { host: '127.0.0.1', port: 0, cert: cert.certPath, key: cert.keyPath, ca: pki.ca.certPath } },
      vault: { listen: '127.0.0.1:0' },
    });
    const gw = await startTestGateway(dir, config(pki.server));
    running.push(gw);
    const port = gw.vault?.port as number;
    const subject = () =>
      new Promise<string>((done, fail) => {
        const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
          done(String(socket.getPeerCertificate().subject?.CN));
          socket.destroy();
        });
        socket.on('error', fail);
      });
    const before = await subject();
    const result = await gw.reload({ config: testGatewayConfig(dir, config(pki.client)), file: undefined, baseDir: dir });
    expect(result).toMatchObject({ ok: true, reopened: ['listen.tls'] });
    expect(await subject()).toBe('pg-cluster-1');
    expect(before).not.toBe('pg-cluster-1');
  });
});
