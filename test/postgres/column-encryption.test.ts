/**
 * examples/column-encryption.mjs against a real PostgreSQL 15: the application encrypts a bytea
 * column through the gateway, with the row's primary key as AAD.
 *
 * The example runs as the test's user; the server as the `postgres` OS user (see
 * test/helpers/postgres.ts). The gateway's socket is mode 0666 here only because the harness
 * opens it up for the server's hooks; this test's client would not need it.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../../src/client/index.js';
import { NODE, pgPreflight, REPO, run, usePostgres } from '../helpers/postgres.js';

const pg = usePostgres();
const EXAMPLE = join(REPO, 'examples', 'column-encryption.mjs');
const EMAILS = ['alice@example.com', 'bob@example.com', 'carol@example.com'];

beforeAll(() => pgPreflight(), 60_000);

describe('examples/column-encryption.mjs', () => {
  it('stores only envelopes in the column and prints the decrypted values', { timeout: 120_000 }, async () => {
    const gw = await pg.startGateway();
    const sock = gw.socketPath as string;
    const cluster = await pg.initCluster();
    await cluster.start();

    const url = `postgresql://postgres@127.0.0.1:${cluster.port}/postgres`;
    const ex = await run(NODE, [EXAMPLE, url, sock], { cwd: REPO, env: { PATH: process.env['PATH'] } });
    expect(ex.code, ex.stderr).toBe(0);
    for (const [i, email] of EMAILS.entries()) expect(ex.stdout).toContain(`user ${i + 1}: ${email} `);
    expect(ex.stdout).toContain('row 1 envelope as row 2: DECRYPT_FAILED');

    // What the database holds, read with plain SQL: envelopes (version byte 1, 33 bytes of
    // overhead), none containing its plaintext.
    const rows = (await cluster.sql("select id, encode(email, 'hex') from example_users order by id")).split('\n').map((l) => l.split('|'));
    expect(rows.map(([id]) => id)).toEqual(['1', '2', '3']);
    const kms = await createClient({ socketPath: sock });
    try {
      for (const [i, [id, hex]] of rows.entries()) {
        const stored = Buffer.from(hex as string, 'hex');
        const plain = EMAILS[i] as string;
        expect(stored[0]).toBe(1);
        expect(stored.length).toBe(Buffer.byteLength(plain) + 33);
        expect(stored.includes(Buffer.from(plain))).toBe(false);
        expect(stored.includes(Buffer.from(plain.split('@')[0] as string))).toBe(false);
        // Sealed under the row's primary key as AAD, as the example says.
        expect((await kms.dec('app/users.email', stored, Buffer.from(`users.email:${id}`))).toString()).toBe(plain);
      }
    } finally {
      await kms.close();
    }
    expect(await cluster.sql("select count(*) from example_users where position(convert_to('alice', 'UTF8') in email) > 0")).toBe('0');

    // Running it again updates the rows in place (fresh nonces), still readable.
    const again = await run(NODE, [EXAMPLE, url, sock], { cwd: REPO, env: { PATH: process.env['PATH'] } });
    expect(again.code, again.stderr).toBe(0);
    expect(await cluster.sql('select count(*) from example_users')).toBe('3');
    expect(await cluster.sql("select encode(email, 'hex') from example_users where id = 1")).not.toBe(rows[0]?.[1]);
  });
});
