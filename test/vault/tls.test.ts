import { request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { startTestGateway, useRunningGateways } from '../helpers/gateway.js';
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
});
