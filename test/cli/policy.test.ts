import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hashToken } from '../../src/policy/policy.js';
import { useTmpDirs } from '../helpers/tmp.js';

const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');
const tmp = useTmpDirs();
const kmsgw = (args: string[], cwd: string, input = '') =>
  spawnSync(process.execPath, [BIN, ...args], { cwd, input, encoding: 'utf8', env: { ...process.env, KMSGW_CONFIG: '' } });

describe('kmsgw policy', () => {
  it('check explains a decision and exits 0 when allowed, 1 when denied', async () => {
    const dir = await tmp();
    await writeFile(
      join(dir, 'kmsgw.yaml'),
      [
        'keys: { defaultKek: "aws-kms://alias/pg" }',
        'policy:',
        '  clients:',
        '    - name: postgres',
        '      match: { uids: [101] }',
        '      grants:',
        '        - { verbs: [GET], keys: ["pg/cluster-1/*"] }',
        '    - name: ops',
        `      match: { tokens: ["${hashToken('t')}"] }`,
        '      grants:',
        '        - { verbs: [admin], keys: ["*"] }',
      ].join('\n'),
    );
    const allowed = kmsgw(['policy', 'check', 'postgres', 'get', 'pg/cluster-1/tls'], dir);
    expect(allowed).toMatchObject({ status: 0, stdout: 'allowed: grant #1 of postgres (verbs GET on pg/cluster-1/*)\n' });
    const other = kmsgw(['policy', 'check', 'postgres', 'GET', 'pg/cluster-2/tls'], dir);
    expect(other).toMatchObject({ status: 1, stdout: 'denied: no grant of postgres allows GET on pg/cluster-2/tls (default deny)\n' });
    expect(kmsgw(['policy', 'check', 'ops', 'GET', 'pg/cluster-1/tls'], dir).status).toBe(1); // admin is not GET
    expect(kmsgw(['policy', 'check', 'ops', 'ROTATE', 'anything'], dir).status).toBe(0);
    expect(kmsgw(['policy', 'check', 'stranger', 'PING', 'x'], dir).status).toBe(0);
    expect(kmsgw(['policy', 'check', 'postgres', 'FROB', 'x'], dir).status).toBe(2);
    // --kek: the KEK a CREATE, ROTATE or REWRAP would name, checked against keys.allowedKeks and the grant.
    expect(kmsgw(['policy', 'check', 'ops', 'ROTATE', 'pg/x', '--kek', 'aws-kms://alias/pg'], dir)).toMatchObject({
      status: 0,
      stdout: 'allowed: grant #1 of ops (verbs admin on *)\n',
    });
    expect(kmsgw(['policy', 'check', 'ops', 'ROTATE', 'pg/x', '--kek', 'local:///home/me/own.kek'], dir)).toMatchObject({
      status: 1,
      stdout: 'denied: keys.allowedKeks does not allow KEK local:///home/me/own.kek\n',
    });
    const none = await tmp();
    expect(kmsgw(['policy', 'check', 'anyone', 'GET', 'x'], none).stdout).toMatch(/^allowed: .* no policy/);
  });

  it('hash-token prints the sha256: form the config stores', async () => {
    const dir = await tmp();
    const token = 's3cret-Yq8mR2vX9kT4wL7pN1cB6zH0jF5dG3';
    const r = kmsgw(['policy', 'hash-token'], dir, `${token}\n`);
    expect(r).toMatchObject({ status: 0, stdout: `${hashToken(token)}\n` });
    expect(r.stdout).not.toContain(token);
    expect(kmsgw(['policy', 'hash-token'], dir, '').status).toBe(2);
  });

  it('hash-token refuses a token shorter than 32 characters (failed AUTH is limited only per connection for anonymous peers)', async () => {
    const dir = await tmp();
    const r = kmsgw(['policy', 'hash-token'], dir, `${'x'.repeat(31)}\n`);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('token is shorter than 32 characters');
    expect(kmsgw(['policy', 'hash-token'], dir, `${'x'.repeat(32)}\n`).status).toBe(0);
  });
});
