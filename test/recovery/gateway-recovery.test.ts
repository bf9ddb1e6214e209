// Break glass through the real gateway: keys.recovery seals every new DEK version to an offline age recipient,
// ADDRECOVERY seals versions made before, and with the gateway's data dir and every KMS gone `kmsgw recover`
// (or the Debian `age` tool alone) gives back every DEK.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureLocalKek } from '../../adapters/local/index.js';
import { fileNameFor } from '../../src/keystore/file/index.js';
import type { KeyRecord } from '../../src/keystore/types.js';
import { kmsgw, requireBuiltCli } from '../helpers/cli.js';
import { okPayload, rawConnect, startTestGateway, testGatewayConfig, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { age, ageKeygen, requireAgeTools } from './age-cli.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
requireBuiltCli();
requireAgeTools();

describe('offline recovery key (keys.recovery)', () => {
  it('every DEK comes back with the age identity alone: from `age -d` and from `kmsgw recover` into a new store', async () => {
    const dir = await tmp();
    const offline = await tmp(); // stands for the safe: never seen by the gateway
    const identity = await ageKeygen(offline);
    const storeDir = join(dir, 'shared-store'); // stands for a bucket: it survives the host
    const kekFile = join(dir, 'data', 'kms', 'kek'); // stands for the KMS: lost with the host
    const config = { keystore: { url: `file://${storeDir}` }, keys: { autoCreate: false, defaultKek: `local://${kekFile}` } };

    // Keys made before recovery was configured, then sealed by ADDRECOVERY.
    const gw = await startTestGateway(dir, config);
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE pg/old')).toBe('OK 1');
    expect(await c.ask('ADDRECOVERY pg/old')).toBe('ERR BAD_REQUEST keys.recovery names no age recipient on this gateway');
    // A reload (SIGHUP) brings in the recipient: no restart.
    const reloaded = await gw.reload({
      config: testGatewayConfig(dir, { ...config, keys: { ...config.keys, recovery: [identity.recipient] } }),
      file: undefined,
      baseDir: dir,
    });
    expect(reloaded).toMatchObject({ ok: true, restartRequired: [] });
    expect(reloaded.ok && reloaded.applied).toContain('keys.recovery');
    expect(await c.ask('CREATE pg/tde')).toBe('OK 1');
    expect(await c.ask('ROTATE pg/tde')).toBe('OK 2');
    expect(await c.ask('CREATE app/col')).toBe('OK 1');
    expect(await c.ask('ADDRECOVERY pg/old')).toBe('OK 1');
    expect(await c.ask('ADDRECOVERY pg/old')).toBe('OK 0');
    const info = JSON.parse(okPayload(await c.ask('INFO pg/tde'))) as { versions: Array<{ recovery: unknown }> };
    expect(info.versions.map((v) => v.recovery)).toEqual([{ recipients: [identity.recipient] }, { recipients: [identity.recipient] }]);
    const deks = new Map<string, string>();
    for (const ref of ['pg/tde@1', 'pg/tde@2', 'app/col@1', 'pg/old@1']) deks.set(ref, okPayload(await c.ask(`GET ${ref}`)));
    c.close();
    await gw.close();
    running.pop();

    // The stored copy is a standard age file: `age -d -i identity` prints the DEK.
    const record = JSON.parse(await readFile(join(storeDir, fileNameFor('pg/tde')), 'utf8')) as KeyRecord;
    const sealed = record.versions[1]?.recovery?.sealed as string;
    expect(sealed).toMatch(/^-----BEGIN AGE ENCRYPTED FILE-----/);
    expect((await age(['-d', '-i', identity.file], sealed)).toString('base64')).toBe(deks.get('pg/tde@2'));

    // The host is lost, and its KMS with it: only the store and the offline identity are left.
    await rm(join(dir, 'data'), { recursive: true, force: true });
    const rebuilt = join(dir, 'rebuilt');
    const newHost = await tmp();
    const newKekFile = join(newHost, 'data', 'kek');
    await mkdir(join(newHost, 'data'), { mode: 0o700 });
    await ensureLocalKek(newKekFile);
    const newKek = `local://${newKekFile}`;
    const r = await kmsgw([
      'recover',
      '--identity',
      identity.file,
      '--store',
      `file://${storeDir}`,
      '--out',
      `file://${rebuilt}`,
      '--kek',
      newKek,
    ]);
    expect(r.stderr).not.toMatch(/AGE-SECRET-KEY/);
    expect(r.code, r.stderr).toBe(0);

    const restored = await startTestGateway(newHost, {
      keystore: { url: `file://${rebuilt}` },
      keys: { autoCreate: false, defaultKek: newKek },
    });
    running.push(restored);
    const c2 = await rawConnect(restored.socketPath as string);
    for (const [ref, dek] of deks) expect(okPayload(await c2.ask(`GET ${ref}`)), ref).toBe(dek);
    c2.close();
  });
});
