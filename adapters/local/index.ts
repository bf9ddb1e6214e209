import { constants } from 'node:fs';
import { createCipheriv, createDecipheriv, randomFillSync } from 'node:crypto';
import { mkdir, open, realpath, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { GatewayError, KmsError } from '../../src/protocol/errors.js';
import { DEFAULT_ADAPTER_SETTINGS } from '../settings.js';
import type { AdapterModule, AdapterOptions, KeyWrapper, WrapContext, WrappedKey } from '../types.js';

/**
 * Development and test KEK: a 32-byte file on local disk. It gives the
 * gateway's envelope scheme without a cloud account, but the KEK then sits on
 * the same host as the gateway, which is what a cloud KMS exists to avoid:
 * hence off unless `kms.adapters.local.enabled`, and confined to one folder.
 */

const FORMAT = 0x01;
const NONCE = 12;
const TAG = 16;
const KEK_BYTES = 32;
// Non-blocking, so a FIFO or device named as a KEK cannot park a file-I/O thread in open();
// no symlink as the last component (the real path was checked just before).
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/** `local://name` is relative to the data folder; `local:///abs/path` is absolute. */
export function localKekPath(kek: string, dataDir: string): string {
  if (!kek.startsWith('local://')) throw new GatewayError('BAD_REQUEST', 'not a local:// KEK URI');
  const path = kek.slice('local://'.length);
  if (path.length === 0) throw new GatewayError('BAD_REQUEST', 'local:// KEK URI needs a path');
  return isAbsolute(path) ? path : resolve(dataDir, path);
}

/**
 * The file a local KEK URI names and the folder it must stay in (`kms.adapters.local.dir`,
 * default `dataDir`). Refuses with KMS_DENIED, before any file is touched, when local KEKs
 * are off or the path, as written, leaves the folder; symlinks are checked when it is read.
 */
export function confinedKekPath(kek: string, options: AdapterOptions): { path: string; dir: string } {
  const settings = (options.settings ?? DEFAULT_ADAPTER_SETTINGS).local;
  if (!settings.enabled) throw new KmsError('KMS_DENIED', 'local KEKs are disabled on this gateway');
  const path = localKekPath(kek, options.dataDir);
  const dir = resolve(settings.dir ?? options.dataDir);
  if (!isInside(path, dir)) throw outside();
  return { path, dir };
}

/** Whether `path` names something strictly inside `dir` (both absolute; no I/O). */
function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel !== '' && rel !== '..' && !rel.startsWith('../') && !isAbsolute(rel);
}

const outside = () => new KmsError('KMS_DENIED', 'local KEK file is outside the allowed folder');
const notAKek = () => new KmsError('KMS_DENIED', `local KEK must be a regular file of exactly ${KEK_BYTES} bytes`);

function wrapAad(ctx: Pick<WrapContext, 'keyId' | 'version'>): Buffer {
  return Buffer.from(`kmsgw/v1 local-wrap ${ctx.keyId} ${ctx.version}`, 'latin1');
}

/**
 * Reads the KEK at `path`, which must stay inside `dir` once symlinks are resolved and be
 * a regular file of exactly 32 bytes. Only a path already checked to be inside `dir`
 * reaches the file system, and nothing here can block on a FIFO.
 */
async function readKek(path: string, dir: string): Promise<Buffer> {
  let handle: FileHandle | undefined;
  const kek = Buffer.alloc(KEK_BYTES);
  try {
    const real = await realpath(path);
    if (!isInside(real, await realpath(dir))) throw outside();
    handle = await open(real, OPEN_FLAGS);
    const stats = await handle.stat();
    if (!stats.isFile() || stats.size !== KEK_BYTES) throw notAKek();
    const { bytesRead } = await handle.read(kek, 0, KEK_BYTES, 0);
    if (bytesRead !== KEK_BYTES) throw new KmsError('KMS_DENIED', 'local KEK file is short');
    return kek;
  } catch (err) {
    kek.fill(0);
    if (err instanceof KmsError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new KmsError('KMS_DENIED', 'local KEK file not found', { cause: err });
    if (code === 'EACCES') throw new KmsError('KMS_DENIED', 'local KEK file not readable', { cause: err });
    // A symlink swapped in after the check (O_NOFOLLOW), or a path through a non-folder.
    if (code === 'ELOOP' || code === 'ENOTDIR') throw notAKek();
    throw new KmsError('KMS_UNAVAILABLE', 'local KEK file could not be read', { cause: err });
  } finally {
    await handle?.close();
  }
}

/**
 * Creates a KEK file of 32 random bytes with mode 0600 when none exists.
 * Returns true when it made one. An existing file is never touched.
 */
export async function ensureLocalKek(path: string): Promise<boolean> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const kek = Buffer.alloc(KEK_BYTES);
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    randomFillSync(kek);
    await handle.write(kek, 0, KEK_BYTES, 0);
    await handle.sync();
    return true;
  } finally {
    kek.fill(0);
    await handle.close();
  }
}

export class LocalWrapper implements KeyWrapper {
  private kekBytes: Promise<Buffer> | undefined;
  private readonly path: string;
  private readonly dir: string;

  constructor(
    readonly kek: string,
    options: AdapterOptions,
  ) {
    const confined = confinedKekPath(kek, options);
    this.path = confined.path;
    this.dir = confined.dir;
  }

  private key(): Promise<Buffer> {
    // A failed read is not cached, so creating the file later fixes it without a restart.
    this.kekBytes ??= readKek(this.path, this.dir).catch((err: unknown) => {
      this.kekBytes = undefined;
      throw err;
    });
    return this.kekBytes;
  }

  async wrap(dek: Buffer, ctx: WrapContext): Promise<WrappedKey> {
    const kek = await this.key();
    const blob = Buffer.alloc(1 + NONCE + dek.length + TAG);
    blob[0] = FORMAT;
    randomFillSync(blob, 1, NONCE);
    const cipher = createCipheriv('aes-256-gcm', kek, blob.subarray(1, 1 + NONCE));
    cipher.setAAD(wrapAad(ctx));
    const body = cipher.update(dek);
    body.copy(blob, 1 + NONCE);
    cipher.final();
    cipher.getAuthTag().copy(blob, 1 + NONCE + dek.length);
    return { blob };
  }

  async unwrap(wrapped: WrappedKey, ctx: WrapContext): Promise<Buffer> {
    const kek = await this.key();
    const { blob } = wrapped;
    if (blob.length < 1 + NONCE + TAG || blob[0] !== FORMAT) {
      throw new KmsError('DECRYPT_FAILED', 'wrapped key is not in the local format');
    }
    const decipher = createDecipheriv('aes-256-gcm', kek, blob.subarray(1, 1 + NONCE));
    decipher.setAAD(wrapAad(ctx));
    decipher.setAuthTag(blob.subarray(blob.length - TAG));
    const dek = decipher.update(blob.subarray(1 + NONCE, blob.length - TAG));
    try {
      decipher.final();
    } catch (err) {
      dek.fill(0);
      throw new KmsError('DECRYPT_FAILED', 'wrapped key failed authentication under the local KEK', { cause: err });
    }
    return dek;
  }

  async close(): Promise<void> {
    const pending = this.kekBytes;
    this.kekBytes = undefined;
    if (pending) (await pending.catch(() => undefined))?.fill(0);
  }
}

export function createWrapper(kek: string, options: AdapterOptions): KeyWrapper {
  return new LocalWrapper(kek, options) satisfies KeyWrapper;
}

export default { createWrapper } satisfies AdapterModule;
