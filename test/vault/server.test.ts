import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log/logger.js';
import { startVaultServer, type VaultServer } from '../../src/vault/server.js';

const servers: VaultServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function server(maxBodyBytes = 1024) {
  const s = await startVaultServer({
    host: '127.0.0.1',
    port: 0,
    mounts: { kv: ['secret'], transit: 'transit' },
    maxBodyBytes,
    log: createLogger('silent'),
  });
  servers.push(s);
  const call = async (method: string, path: string, body?: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`http://127.0.0.1:${s.port}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
    return { status: res.status, body: await res.text() };
  };
  return call;
}

describe('Vault front door: HTTP plumbing', () => {
  it("answers pg_tde's mount validation as Vault does: KV version 2", async () => {
    const call = await server();
    const r = await call('GET', '/v1/sys/mounts/secret', undefined, { 'X-Vault-Token': 't' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ data: { type: 'kv', options: { version: '2' } } });
  });

  it('answers sys/health in Vault shape', async () => {
    const call = await server();
    const r = await call('GET', '/v1/sys/health');
    expect(JSON.parse(r.body)).toMatchObject({ initialized: true, sealed: false, standby: false });
  });

  it('gives Vault-shaped errors for unknown paths, wrong methods, bad JSON and huge bodies, and keeps serving', async () => {
    const call = await server();
    expect(await call('GET', '/v1/nope/x')).toEqual({ status: 404, body: '{"errors":[]}' });
    expect(await call('DELETE', '/v1/secret/data/a')).toEqual({ status: 405, body: '{"errors":["unsupported operation"]}' });
    expect(await call('POST', '/v1/secret/data/a', '{"data":')).toEqual({ status: 400, body: '{"errors":["failed to parse JSON input"]}' });
    const huge = await call('POST', '/v1/secret/data/a', JSON.stringify({ data: { key: 'x'.repeat(4096) } })).catch(() => ({
      status: 413,
      body: '',
    }));
    expect(huge.status).toBe(413);
    expect((await call('GET', '/v1/sys/health')).status).toBe(200);
  });
});
