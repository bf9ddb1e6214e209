import { describe, expect, it } from 'vitest';
import { ConfigSchema } from '../../src/config/schema.js';

const base = { keys: { defaultKek: 'aws-kms://alias/k' } };
const issues = (vault: unknown, extra: object = {}) =>
  (ConfigSchema.safeParse({ ...base, ...extra, vault }).error?.issues ?? []).map((i) => `${i.path.join('.')}: ${i.message}`);

describe('vault config', () => {
  it('is off by default, with the secret KV mount and transit when turned on', () => {
    const c = ConfigSchema.parse(base);
    expect(c.vault).toEqual({
      insecure: false,
      mounts: { kv: ['secret'], transit: 'transit' },
      transitPrefix: 'transit/',
      maxBodyBytes: 1048576,
    });
  });

  it('needs TLS, or an acknowledged plain HTTP listener on loopback', () => {
    expect(issues({ listen: '127.0.0.1:8200' })).toEqual([
      'vault.listen: vault.listen needs TLS: configure listen.tls (cert, key, ca), or vault.insecure: true on a loopback address',
    ]);
    expect(issues({ listen: '127.0.0.1:8200', insecure: true })).toEqual([]);
    expect(issues({ listen: '0.0.0.0:8200', insecure: true })).toEqual([
      'vault.listen: vault.insecure serves plain HTTP: only on a loopback address, not 0.0.0.0',
    ]);
    expect(issues({ listen: '0.0.0.0:8200' }, { listen: { tls: { port: 7443, cert: 'c', key: 'k', ca: 'a' } } })).toEqual([]);
    expect(issues({ listen: 'nope' })[0]).toMatch(/^vault\.listen: vault\.listen "nope" must be host:port/);
    expect(issues({ mounts: { kv: ['a/b'] } })[0]).toMatch(/^vault\.mounts\.kv\.0/);
  });
});
