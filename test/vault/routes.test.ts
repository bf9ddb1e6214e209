import { describe, expect, it } from 'vitest';
import { keyPath, route, type Mounts } from '../../src/vault/routes.js';

const mounts: Mounts = { kv: ['secret'], transit: 'transit' };

describe('Vault routes', () => {
  it("routes pg_tde's exact calls (keyring_vault.c): validate the mount, list, store, fetch", () => {
    expect(route('GET', '/v1/sys/mounts/secret', mounts)).toEqual({ kind: 'mount-info', mount: 'secret' });
    expect(route('GET', '/v1/secret/metadata/?list=true', mounts)).toEqual({ kind: 'kv-list', mount: 'secret', path: '' });
    expect(route('POST', '/v1/secret/data/pg_tde_principal_key', mounts)).toEqual({
      kind: 'kv-write',
      mount: 'secret',
      path: 'pg_tde_principal_key',
    });
    expect(route('GET', '/v1/secret/data/pg_tde_principal_key', mounts)).toEqual({
      kind: 'kv-read',
      mount: 'secret',
      path: 'pg_tde_principal_key',
    });
  });

  it('routes the rest of the KV v2 subset: versions, LIST, metadata, delete', () => {
    expect(route('GET', '/v1/secret/data/a/b?version=3', mounts)).toEqual({ kind: 'kv-read', mount: 'secret', path: 'a/b', version: 3 });
    expect(route('GET', '/v1/secret/data/a?version=0', mounts)).toEqual({ kind: 'kv-read', mount: 'secret', path: 'a' });
    expect(route('PUT', '/v1/secret/data/a', mounts)).toMatchObject({ kind: 'kv-write' });
    expect(route('LIST', '/v1/secret/metadata/dir', mounts)).toEqual({ kind: 'kv-list', mount: 'secret', path: 'dir/' });
    expect(route('GET', '/v1/secret/metadata/dir/', mounts)).toEqual({ kind: 'none', status: 404 });
    expect(route('GET', '/v1/secret/metadata/a', mounts)).toEqual({ kind: 'kv-metadata', mount: 'secret', path: 'a' });
    expect(route('DELETE', '/v1/secret/metadata/a', mounts)).toEqual({ kind: 'kv-delete-all', mount: 'secret', path: 'a' });
    expect(route('GET', '/v1/sys/health', mounts)).toEqual({ kind: 'health' });
  });

  it('routes the Transit subset', () => {
    expect(route('POST', '/v1/transit/encrypt/orders', mounts)).toEqual({ kind: 'transit-encrypt', key: 'orders' });
    expect(route('POST', '/v1/transit/decrypt/orders', mounts)).toEqual({ kind: 'transit-decrypt', key: 'orders' });
    expect(route('POST', '/v1/transit/rewrap/orders', mounts)).toEqual({ kind: 'transit-rewrap', key: 'orders' });
    expect(route('POST', '/v1/transit/datakey/plaintext/orders', mounts)).toEqual({
      kind: 'transit-datakey',
      key: 'orders',
      plaintext: true,
    });
    expect(route('POST', '/v1/transit/datakey/wrapped/orders', mounts)).toEqual({
      kind: 'transit-datakey',
      key: 'orders',
      plaintext: false,
    });
    expect(route('POST', '/v1/transit/keys/orders/rotate', mounts)).toEqual({ kind: 'transit-rotate', key: 'orders' });
    expect(route('GET', '/v1/transit/keys/orders', mounts)).toEqual({ kind: 'transit-key', key: 'orders' });
  });

  it('answers 404 for what is not served and 405 for a served path with another method', () => {
    for (const target of [
      '/v2/secret/data/a',
      '/v1/other/data/a',
      '/v1/secret/data/',
      '/v1/secret/data/../x',
      '/v1/secret/nope/a',
      '/v1/sys/mounts/other',
      '/v1/transit/sign/k',
      '/v1/secret/data/a%2F..%2Fb',
      '/v1/transit/datakey/other/k',
    ]) {
      expect(route('GET', target, mounts), target).toMatchObject({ kind: 'none', status: 404 });
    }
    expect(route('DELETE', '/v1/secret/data/a', mounts)).toEqual({ kind: 'none', status: 405 });
    expect(route('GET', '/v1/transit/encrypt/k', mounts)).toEqual({ kind: 'none', status: 405 });
    expect(route('POST', '/v1/sys/health', mounts)).toEqual({ kind: 'none', status: 405 });
    expect(route('POST', '/v1/transit/encrypt/k', { kv: ['secret'], transit: undefined })).toEqual({ kind: 'none', status: 404 });
  });

  it('keeps paths to safe segments', () => {
    expect(keyPath('a/b-c_d.e:f')).toBe('a/b-c_d.e:f');
    for (const bad of ['', '/a', 'a/', 'a//b', '..', 'a/../b', 'a b', 'a\u0000', 'x'.repeat(201)])
      expect(keyPath(bad), bad).toBeUndefined();
  });
});
