// Shared by the `kmsgw store` tests: real key stores made by a real gateway (the CLI runs through helpers/cli.ts).
import { cp, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { rawConnect, startTestGateway, type TestGateway } from '../helpers/gateway.js';

/** Two long ids: both are kept under hashed file names (see fileNameFor). */
export const LONG_IDS = [`x${'/:'.repeat(127)}y`.slice(0, 256), 'L'.repeat(256)] as const;

/** Every id `makeKeys` creates, sorted as listings are. */
export const IDS = ['a..b', 'app:users.email', 'pg/cluster-1/tde', ...LONG_IDS].sort();

/**
 * A gateway (fake KEK, so a second gateway can unwrap a copy) whose store holds real records:
 * `pg/cluster-1/tde` with three versions, the first destroyed; the others with one version.
 */
export async function gatewayWithKeys(dir: string): Promise<{ gw: TestGateway; keysDir: string; url: string }> {
  const gw = await startTestGateway(dir, { keys: { defaultKek: 'fake://store-test' } });
  const c = await rawConnect(gw.socketPath as string);
  try {
    for (const id of IDS) expect(await c.ask(`CREATE ${id}`)).toBe('OK 1');
    expect(await c.ask('ROTATE pg/cluster-1/tde')).toBe('OK 2');
    expect(await c.ask('ROTATE pg/cluster-1/tde')).toBe('OK 3');
    expect(await c.ask('DESTROY pg/cluster-1/tde@1')).toBe('OK 1');
  } finally {
    c.close();
  }
  const keysDir = join(dir, 'data', 'keys');
  expect((await readdir(keysDir)).filter((n) => n.includes('~'))).toHaveLength(2); // the long ids are hashed
  return { gw, keysDir, url: `file://${keysDir}` };
}

/** A plain folder store (no gateway) with a copy of `keysDir`'s records. */
export async function copyOfStore(keysDir: string, dir: string): Promise<string> {
  await cp(keysDir, dir, { recursive: true, filter: (src) => !src.endsWith('.lock') });
  return dir;
}

/** The record files of a folder store, name → bytes. */
export async function recordFiles(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of (await readdir(dir)).sort()) if (name.endsWith('.json')) out.set(name, await readFile(join(dir, name)));
  return out;
}

/** The path of `id`'s record in a folder store. */
export const recordPath = (dir: string, id: string): string => join(dir, fileNameFor(id));
