import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashToken } from '../../src/policy/policy.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { b64, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const run = promisify(execFile);
const tmp = useTmpDirs();
const running = useRunningGateways();
const REPO = join(import.meta.dirname, '..', '..');
const CLIENT_DIR = join(REPO, 'test', 'clients', 'hvac');
const PYTHON = join(process.env['KMSGW_CACHE_DIR'] ?? join(REPO, '.cache'), 'hvac', 'venv', 'bin', 'python');
const TOKEN = 'hvac-token-0123456789abcdef';
const OTHER = 'other-token-0123456789abcdef';

let pki: TestPki;
beforeAll(async () => {
  // The pinned client in its venv (< 1 s when present); a failure fails the file, it never skips.
  await run('bash', [join(CLIENT_DIR, 'install.sh')]).catch((err: Error & { stderr?: string }) => {
    throw new Error(`hvac could not be installed (test/clients/hvac/install.sh): ${err.stderr ?? err.message}`);
  });
  pki = await makeTestPki();
}, 120_000);
afterAll(async () => {
  await pki?.dispose();
});

describe('the official Vault client (hvac) against the front door', () => {
  it('does KV v2 (versions, cas, list, delete) and Transit (encrypt, batch, datakey, rotate, rewrap) over TLS, unchanged', async () => {
    const gw = await startTestGateway(await tmp(), {
      listen: { tls: { host: '127.0.0.1', port: 0, cert: pki.server.certPath, key: pki.server.keyPath, ca: pki.ca.certPath } },
      vault: { listen: '127.0.0.1:0' },
      keys: { autoCreate: false },
      policy: {
        clients: [
          {
            name: 'hvac',
            match: { tokens: [hashToken(TOKEN)] },
            grants: [
              { verbs: ['KVREAD', 'KVWRITE', 'KVLIST', 'KVDELETE'], keys: ['kv/secret/*'] },
              { verbs: ['ENC', 'DEC', 'admin'], keys: ['transit/*'] },
            ],
          },
          { name: 'other', match: { tokens: [hashToken(OTHER)] }, grants: [{ verbs: ['ENC', 'DEC'], keys: ['transit/*'] }] },
        ],
      },
    });
    running.push(gw);
    const env = {
      ...process.env,
      VAULT_ADDR: `https://127.0.0.1:${gw.vault?.port as number}`,
      VAULT_CACERT: pki.ca.certPath,
      VAULT_TOKEN: TOKEN,
      OTHER_TOKEN: OTHER,
    };
    const result = await run(PYTHON, [join(CLIENT_DIR, 'scenario.py')], { env, timeout: 60_000 }).catch(
      (err: Error & { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? err.message }),
    );
    expect(result.stderr).toBe('');
    expect(result.stdout.trim().split('\n')).toEqual([
      'ok health',
      'ok kv create',
      'ok kv update with cas',
      'ok kv cas conflict',
      'ok kv read versions',
      'ok kv metadata',
      'ok kv list',
      'ok kv forbidden without a grant',
      'ok kv delete',
      'ok transit encrypt decrypt',
      'ok transit batch',
      'ok transit datakey',
      'ok transit rotate rewrap',
      'ok transit forbidden without a grant',
      'done',
    ]);
    // hvac's Transit key is the kmsgw key transit/orders, usable from the line protocol.
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`AUTH ${TOKEN}`)).toBe('OK hvac');
    const enc = await c.ask(`ENC transit/orders ${b64('from the line protocol')}`);
    expect(enc).toMatch(/^OK /);
    c.close();
  });
});
