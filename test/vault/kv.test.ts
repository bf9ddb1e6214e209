import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashToken } from '../../src/policy/policy.js';
import { rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

const PG_TOKEN = 'pg-tde-token-0123456789abcdef';
const APP_TOKEN = 'app-token-0123456789abcdef';
const LIST_TOKEN = 'list-token-0123456789abcdef';

/** The parts of Vault's replies the tests read. */
interface VaultJson {
  data?: { data?: unknown; metadata?: unknown; version?: number; keys?: string[]; versions?: Record<string, unknown> };
  errors?: string[];
}

/** A gateway whose policy lets pg_tde use kv/secret/* and another client only Transit. */
async function frontDoor() {
  const dir = await tmp();
  const gw = await startTestGateway(dir, {
    vault: { listen: '127.0.0.1:0', insecure: true },
    audit: { file: 'audit.log', fsync: 'always' },
    policy: {
      clients: [
        {
          name: 'pg_tde',
          match: { tokens: [hashToken(PG_TOKEN)] },
          grants: [{ verbs: ['KVREAD', 'KVWRITE', 'KVLIST', 'KVDELETE'], keys: ['kv/secret/*'] }],
        },
        { name: 'app', match: { tokens: [hashToken(APP_TOKEN)] }, grants: [{ verbs: ['ENC', 'DEC'], keys: ['transit/*'] }] },
        {
          name: 'lister',
          match: { tokens: [hashToken(LIST_TOKEN)] },
          grants: [{ verbs: ['KVLIST', 'KVREAD'], keys: ['kv/secret/', 'kv/secret/team-a/*'] }],
        },
      ],
    },
  });
  running.push(gw);
  const base = `http://127.0.0.1:${gw.vault?.port as number}`;
  /** One request as curl in keyring_vault.c makes it: token header, JSON content type. */
  const call = async (method: string, path: string, body?: unknown, token = PG_TOKEN) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { 'X-Vault-Token': token, 'Content-Type': 'application/json' },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, json: (text === '' ? null : JSON.parse(text)) as VaultJson | null };
  };
  return { gw, dir, call, base };
}

/** Every byte of the key store, as text. */
async function storeText(dir: string): Promise<string> {
  const root = join(dir, 'data');
  const files = await readdir(root, { recursive: true, withFileTypes: true });
  const texts = await Promise.all(files.filter((f) => f.isFile()).map((f) => readFile(join(f.parentPath, f.name), 'latin1')));
  return texts.join('\n');
}

describe('Vault KV v2 through the front door', () => {
  it("answers pg_tde's exact call sequence: validate the mount, list, store, fetch, 404 for a missing key", async () => {
    const { call, base } = await frontDoor();
    const mount = await call('GET', '/v1/sys/mounts/secret');
    expect(mount.status).toBe(200);
    expect(mount.json?.data).toMatchObject({ type: 'kv', options: { version: '2' } });
    // An empty mount lists as 404, which pg_tde accepts as well as 200.
    expect((await call('GET', '/v1/secret/metadata/?list=true')).status).toBe(404);
    const key = Buffer.alloc(32, 7).toString('base64');
    const stored = await call('POST', '/v1/secret/data/pg_tde/principal_key_1', `{"data":{"key":"${key}"}}`);
    expect(stored.status).toBe(200);
    expect(stored.json?.data).toMatchObject({ version: 1, destroyed: false, deletion_time: '' });
    const fetched = await call('GET', '/v1/secret/data/pg_tde/principal_key_1');
    expect(fetched.status).toBe(200);
    expect(fetched.json?.data?.data).toEqual({ key });
    expect(fetched.json?.data?.metadata).toMatchObject({ version: 1, destroyed: false });
    expect(await call('GET', '/v1/secret/data/pg_tde/principal_key_2')).toEqual({ status: 404, json: { errors: [] } });
    const listed = await call('GET', '/v1/secret/metadata/?list=true');
    expect(listed.json?.data).toEqual({ keys: ['pg_tde/'] });
    expect((await call('LIST', '/v1/secret/metadata/pg_tde')).json?.data).toEqual({ keys: ['principal_key_1'] });
    // A Vault Enterprise namespace (pg_tde's optional X-Vault-Namespace) is refused, never mixed into the one key space.
    const res = await fetch(`${base}/v1/secret/data/pg_tde/principal_key_1`, {
      headers: { 'X-Vault-Token': PG_TOKEN, 'X-Vault-Namespace': 'team-a', 'Content-Type': 'application/json' },
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ errors: ['namespaces are not supported: kmsgw serves the root namespace only'] });
  });

  it('keeps versions, refuses a stale check-and-set, and crypto-shreds on DELETE metadata', async () => {
    const { gw, call } = await frontDoor();
    const path = '/v1/secret/data/app/db';
    expect((await call('PUT', path, { data: { password: 'one' } })).json?.data?.version).toBe(1);
    expect((await call('POST', path, { data: { password: 'two' }, options: { cas: 1 } })).json?.data?.version).toBe(2);
    const stale = await call('POST', path, { data: { password: 'three' }, options: { cas: 1 } });
    expect(stale.status).toBe(400);
    expect(stale.json?.errors?.[0]).toMatch(/check-and-set parameter did not match the current version/);
    expect((await call('GET', `${path}?version=1`)).json?.data?.data).toEqual({ password: 'one' });
    expect((await call('GET', path)).json?.data?.data).toEqual({ password: 'two' });
    const meta = await call('GET', '/v1/secret/metadata/app/db');
    expect(meta.json?.data).toMatchObject({ current_version: 2, oldest_version: 1, max_versions: 10, cas_required: false });
    expect(Object.keys(meta.json?.data?.versions ?? {})).toEqual(['1', '2']);
    // The secret is a kmsgw key: its DEK versions are the secret's versions.
    const wrapsBefore = gw.store.peek('kv/secret/app/db')?.versions.map((v) => v.wraps.length);
    expect(wrapsBefore).toEqual([1, 1]);
    expect((await call('DELETE', '/v1/secret/metadata/app/db')).status).toBe(204);
    expect((await call('GET', path)).status).toBe(404);
    expect((await call('GET', `${path}?version=1`)).status).toBe(404);
    expect((await call('GET', '/v1/secret/metadata/app/db')).status).toBe(404);
    expect((await call('LIST', '/v1/secret/metadata/app')).status).toBe(404);
    const record = await gw.store.fetch('kv/secret/app/db');
    for (const v of record?.versions ?? []) {
      expect(v).toMatchObject({ state: 'destroyed', wraps: [], commit: null });
      expect(v.value).toBeUndefined();
    }
    // Written again, it starts from no check-and-set (cas 0), numbered on past the shredded versions.
    expect((await call('POST', path, { data: { password: 'new' }, options: { cas: 0 } })).json?.data?.version).toBe(3);
    expect((await call('DELETE', '/v1/secret/metadata/never/was')).status).toBe(204);
  });

  it('lists only the secrets a client may list, as LIST does on the line protocol', async () => {
    const { call } = await frontDoor();
    for (const path of ['team-a/db', 'team-b/db', 'top'])
      expect((await call('POST', `/v1/secret/data/${path}`, { data: { v: 1 } })).status).toBe(200);
    expect((await call('LIST', '/v1/secret/metadata/')).json?.data?.keys).toEqual(['team-a/', 'team-b/', 'top']);
    expect((await call('LIST', '/v1/secret/metadata/', undefined, LIST_TOKEN)).json?.data?.keys).toEqual(['team-a/']);
    expect((await call('LIST', '/v1/secret/metadata/team-b', undefined, LIST_TOKEN)).status).toBe(403);
    expect((await call('GET', '/v1/secret/data/team-a/db', undefined, LIST_TOKEN)).json?.data?.data).toEqual({ v: 1 });
    // sys/health is unauthenticated, as in Vault: a token that is no client's does not make it 403.
    expect((await call('GET', '/v1/sys/health', undefined, 'no-such-token-0123456789abcdef')).status).toBe(200);
    expect((await call('GET', '/v1/sys/mounts/secret', undefined, 'no-such-token-0123456789abcdef')).status).toBe(403);
  });

  it("keeps 10 versions (Vault's default): older ones lose their DEK and value in the write that passes the limit", async () => {
    const { call, gw } = await frontDoor();
    for (let i = 1; i <= 12; i++) expect((await call('POST', '/v1/secret/data/many', { data: { i } })).json?.data?.version).toBe(i);
    expect((await call('GET', '/v1/secret/data/many?version=2')).status).toBe(404);
    expect((await call('GET', '/v1/secret/data/many?version=3')).json?.data?.data).toEqual({ i: 3 });
    expect((await call('GET', '/v1/secret/metadata/many')).json?.data).toMatchObject({ current_version: 12, oldest_version: 3 });
    const versions = (await gw.store.fetch('kv/secret/many'))?.versions ?? [];
    expect(versions.map((v) => v.state)).toEqual([...Array(2).fill('destroyed'), ...Array(10).fill('enabled')]);
    expect(versions.slice(0, 2).every((v) => v.value === undefined && v.wraps.length === 0)).toBe(true);
  });

  it('stores no plaintext: the key store holds only sealed values and wrapped DEKs', async () => {
    const { dir, call, gw } = await frontDoor();
    const secret = 'hunter2-very-secret-plaintext';
    await call('POST', '/v1/secret/data/s', { data: { password: secret } });
    await call('POST', '/v1/secret/data/s', { data: { password: `${secret}-v2` } });
    await gw.close();
    running.splice(running.indexOf(gw), 1);
    const text = await storeText(dir);
    expect(text).toContain('kv/secret/s');
    expect(text).not.toContain(secret);
    expect(text).not.toContain(Buffer.from(secret).toString('base64').slice(0, 16));
    expect(text).not.toContain('password');
  });

  it('refuses tokens without a grant (403), unknown tokens (403) and keeps serving after bad input; every request is audited', async () => {
    const { dir, call, gw } = await frontDoor();
    expect((await call('GET', '/v1/secret/data/x', undefined, APP_TOKEN)).status).toBe(403);
    expect((await call('POST', '/v1/secret/data/x', { data: { a: 1 } }, APP_TOKEN)).status).toBe(403);
    expect((await call('GET', '/v1/secret/data/x', undefined, 'not-a-known-token-at-all')).status).toBe(403);
    expect((await call('POST', '/v1/secret/data/x', '{"data": nope')).status).toBe(400);
    expect((await call('POST', '/v1/secret/data/x', { nodata: 1 })).status).toBe(400);
    expect((await call('POST', '/v1/secret/data/x', { data: { a: 1 }, options: { cas: -1 } })).status).toBe(400);
    expect((await call('POST', '/v1/secret/data/x', { data: 'a string' })).status).toBe(400);
    expect((await call('GET', '/v1/secret/data/../etc/passwd')).status).toBe(404);
    expect((await call('GET', '/v1/sys/unknown')).status).toBe(404);
    expect((await call('POST', '/v1/secret/data/x', { data: { a: 1 } })).status).toBe(200);
    // A kmsgw key at a KV id is not a secret: it is neither read nor overwritten as one.
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`AUTH ${PG_TOKEN}`)).toBe('OK pg_tde');
    c.close();
    await gw.close();
    running.splice(running.indexOf(gw), 1);
    const records = (await readFile(join(dir, 'audit.log'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    // One record per HTTP request (and the line protocol's AUTH): refusals before routing too.
    expect(records.map((r) => [r['client'], r['verb'], r['keyId'] ?? '-', r['outcome']])).toEqual([
      ['app', 'KVREAD', 'kv/secret/x', 'FORBIDDEN'],
      ['app', 'KVWRITE', 'kv/secret/x', 'FORBIDDEN'],
      ['vault:127.0.0.1', 'AUTH', '-', 'FORBIDDEN'],
      ['pg_tde', 'invalid', '-', 'BAD_REQUEST'],
      ['pg_tde', 'KVWRITE', 'kv/secret/x', 'BAD_REQUEST'],
      ['pg_tde', 'KVWRITE', 'kv/secret/x', 'BAD_REQUEST'],
      ['pg_tde', 'KVWRITE', 'kv/secret/x', 'BAD_REQUEST'],
      ['pg_tde', 'invalid', '-', 'NOT_FOUND'],
      ['pg_tde', 'invalid', '-', 'NOT_FOUND'],
      ['pg_tde', 'KVWRITE', 'kv/secret/x', 'OK'],
      ['pg_tde', 'AUTH', '-', 'OK'],
    ]);
    expect(JSON.stringify(records)).not.toContain(PG_TOKEN);
  });
});
