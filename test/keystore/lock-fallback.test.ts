import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeyStoreError } from '../../src/keystore/errors.js';
import { acquireStoreLock, LOCK_FILE } from '../../src/keystore/lock.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();

describe('store lock without the native addon: an abstract Unix socket', () => {
  it('excludes a second holder, survives a live pid in the lock file, and is freed by release', async () => {
    const dir = await tmp();
    await writeFile(join(dir, LOCK_FILE), `${process.pid}\n`);
    const lock = await acquireStoreLock(dir, { addon: null });
    expect(lock.mechanism).toMatch(/^abstract socket @kmsgw-store-[0-9a-f]{64} \(native addon unavailable: disabled\)$/);
    await expect(acquireStoreLock(dir, { addon: null })).rejects.toThrow(/abstract socket @kmsgw-store-[0-9a-f]{64} is bound/);
    await lock.release();
    await lock.release();
    await (await acquireStoreLock(dir, { addon: null })).release();
  });

  it('is used when flock fails on the store filesystem, and says why', async () => {
    const dir = await tmp();
    const noFlock = {
      flockExclusive(): boolean {
        throw new Error('No locks available');
      },
    };
    const lock = await acquireStoreLock(dir, { addon: noFlock });
    expect(lock.mechanism).toContain(`(flock failed on ${join(dir, LOCK_FILE)}: No locks available)`);
    await expect(acquireStoreLock(dir, { addon: noFlock })).rejects.toBeInstanceOf(KeyStoreError);
    await lock.release();
  });
});
