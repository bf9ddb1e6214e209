/**
 * PostgreSQL 15's TLS server key, encrypted with a passphrase that kmsgw serves:
 * ssl_passphrase_command = 'node bin/kmsgw.js get pg/tls --format hex --socket ...'.
 *
 * The server runs as the `postgres` OS user (see test/helpers/postgres.ts), so the gateway's
 * socket is opened up to mode 0666 in a traversable folder: a test-only setting (the default,
 * 0600, lets only the gateway's own user connect).
 */
import { chown, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { kmsgwCommand, NODE, KMSGW_BIN, pgPreflight, run, runAsPg, usePostgres } from '../helpers/postgres.js';

const pg = usePostgres();

beforeAll(() => pgPreflight(), 60_000);

describe('PostgreSQL ssl_passphrase_command through kmsgw', () => {
  it(
    'starts with a key whose passphrase comes from the gateway, serves TLS, and does not start without the gateway',
    { timeout: 180_000 },
    async () => {
      const gw = await pg.startGateway();
      const sock = gw.socketPath as string;

      expect((await run(NODE, [KMSGW_BIN, 'key', 'create', 'pg/tls', '--socket', sock])).code).toBe(0);
      // Fetched as the server will fetch it: as its OS user.
      const got = await runAsPg(NODE, [KMSGW_BIN, 'get', 'pg/tls', '--format', 'hex', '--socket', sock], { cwd: '/' });
      expect(got).toMatchObject({ code: 0, stderr: '' });
      const passphrase = got.stdout.trim();
      expect(passphrase).toMatch(/^[0-9a-f]{64}$/);

      const dir = await pg.pgDir();
      const keyFile = join(dir, 'server.key');
      const certFile = join(dir, 'server.crt');
      const req = await run('openssl', [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-passout',
        `pass:${passphrase}`,
      ]);
      expect(req.code, req.stderr).toBe(0);
      const pem = (await run('cat', [keyFile])).stdout;
      expect(pem).toContain('BEGIN ENCRYPTED PRIVATE KEY');
      // The server insists on owning a 0600 key file.
      const pgUid = Number((await run('stat', ['-c', '%u', dir])).stdout.trim());
      const pgGid = Number((await run('stat', ['-c', '%g', dir])).stdout.trim());
      for (const f of [keyFile, certFile]) await chown(f, pgUid, pgGid);
      await run('chmod', ['0600', keyFile]);

      const cluster = await pg.initCluster({
        settings: {
          ssl: true,
          ssl_cert_file: certFile,
          ssl_key_file: keyFile,
          ssl_passphrase_command: kmsgwCommand(['get', 'pg/tls', '--format', 'hex', '--socket', sock]),
          ssl_passphrase_command_supports_reload: true,
        },
      });
      await cluster.start();

      const sslInUse = 'select ssl from pg_stat_ssl where pid = pg_backend_pid()';
      expect(await cluster.sql(sslInUse, { sslmode: 'require' })).toBe('t');
      // The reload re-runs the command (supports_reload) and the key loads again.
      expect(await cluster.sql('select pg_reload_conf()')).toBe('t');
      await new Promise((r) => setTimeout(r, 500));
      expect(await cluster.sql(sslInUse, { sslmode: 'require' })).toBe('t');
      expect(await cluster.log()).not.toMatch(/kmsgw:/);
      await cluster.stop();

      // Without the gateway the key cannot be opened, so the server does not start.
      await gw.close();
      await writeFile(cluster.logFile, '');
      const again = await cluster.tryStart();
      expect(again.ok).toBe(false);
      const log = await cluster.log();
      expect(log).toMatch(/kmsgw: UNAVAILABLE cannot reach the gateway/);
      expect(log).toMatch(/FATAL: +command ".*kmsgw\.js get pg\/tls .*" failed/);
    },
  );
});
