// Extra, isolated LocalStack instances for tests that need to take KMS away (outage tests), plus KEK
// creation with a fixed key id and key material, so a restarted instance (PERSISTENCE=0, so it forgets
// every key) can be given the same key again and old ciphertexts decrypt:
//
//   const ls = await startLocalStack();                       // own port, own state dir
//   const kek = { customId: randomUUID(), customKeyMaterial: randomBytes(32) };
//   const arn = await createKek(ls.endpoint, kek);
//   ... wrap DEKs through the gateway ...
//   await ls.stop();                                          // outage
//   await ls.start();  await createKek(ls.endpoint, kek);     // back, same key
//   ... cold GETs decrypt the old wrapped DEKs ...
//   await ls.stop();                                          // (the global teardown also stops leftovers)
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, type Tag } from '@aws-sdk/client-kms';
import { inject } from 'vitest';
import { LOCALSTACK_DIR, REGION, kmsClient, runLocalStackScript, startOnly, stopInstance, tail } from '../setup/localstack.js';
import { freePort } from './net.js';

export interface LocalStackInstance {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly port: number;
  readonly region: string;
  /** Holds localstack.pid and localstack.log. */
  readonly stateDir: string;
  /** SIGTERM (SIGKILL after 10 s); resolves once the process is gone. Idempotent. */
  stop(): Promise<void>;
  /** Starts it again on the same port; resolves once KMS answers. Keys are NOT kept (PERSISTENCE=0). */
  start(): Promise<void>;
}

let installed: Promise<void> | undefined;

/** install.sh once per worker (~0.4 s when up to date): the global setup may have reused a foreign LocalStack. */
function ensureInstalled(): Promise<void> {
  installed ??= runLocalStackScript('install.sh', [], 15 * 60_000).then((r) => {
    if (r.code !== 0) {
      installed = undefined;
      throw new Error(`LocalStack did not start: localstack/install.sh failed (exit ${r.code ?? r.signal}).\n${tail(r.output)}`);
    }
  });
  return installed;
}

function extrasDir(): string {
  try {
    const dir = inject('localstackExtrasDir');
    if (dir) return dir;
  } catch {
    // not in a vitest worker
  }
  // Without the global setup nobody sweeps these up: call stop() yourself.
  return join(LOCALSTACK_DIR, 'extras');
}

/**
 * Starts a separate LocalStack (KMS and S3) on `port` (default: a free one) with its own state dir, and waits
 * until KMS and S3 answer. Takes ~2-3 s. Throws "LocalStack did not start ..." with the log tail on failure.
 */
export async function startLocalStack(options: { port?: number } = {}): Promise<LocalStackInstance> {
  await ensureInstalled();
  // LocalStack's twisted gateway binds 0.0.0.0, whatever GATEWAY_LISTEN says.
  const port = options.port ?? (await freePort('0.0.0.0'));
  const stateDir = join(extrasDir(), `ls-${port}-${randomUUID().slice(0, 8)}`);
  mkdirSync(stateDir, { recursive: true });
  const instance: LocalStackInstance = {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    region: REGION,
    stateDir,
    stop: () => stopInstance(port, stateDir),
    start: () => startOnly(port, stateDir),
  };
  await instance.start();
  return instance;
}

export interface KekOptions {
  /** Fixed key id; must be a UUID (LocalStack's ciphertext header holds exactly 36 bytes of key id). */
  customId?: string;
  /** 32 bytes of AES key material, raw or base64. Same id + material => old ciphertexts decrypt. */
  customKeyMaterial?: Uint8Array | string;
  /** Also create this alias (e.g. 'alias/outage') for the key. */
  alias?: string;
  description?: string;
  region?: string;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Creates a symmetric KMS key in the LocalStack at `endpoint` and returns its ARN, using LocalStack's CreateKey tags
 * `_custom_id_` and `_custom_key_material_` (verified with LocalStack 4.14.0: create with id + material,
 * encrypt, restart, create again, the old ciphertext decrypts).
 */
export async function createKek(endpoint: string, options: KekOptions = {}): Promise<string> {
  const tags: Tag[] = [];
  if (options.customId !== undefined) {
    if (!UUID_RE.test(options.customId)) {
      throw new Error(`createKek: customId must be a UUID (LocalStack cannot find shorter/longer ids later), got '${options.customId}'`);
    }
    tags.push({ TagKey: '_custom_id_', TagValue: options.customId.toLowerCase() });
  }
  if (options.customKeyMaterial !== undefined) {
    const raw =
      typeof options.customKeyMaterial === 'string'
        ? Buffer.from(options.customKeyMaterial, 'base64')
        : Buffer.from(options.customKeyMaterial);
    if (raw.length !== 32) throw new Error(`createKek: customKeyMaterial must be 32 bytes, got ${raw.length}`);
    tags.push({ TagKey: '_custom_key_material_', TagValue: raw.toString('base64') });
  }
  const kms = kmsClient(endpoint, options.region ?? REGION);
  try {
    const res = await kms.send(
      new CreateKeyCommand({
        Description: options.description ?? 'kmsgw test KEK',
        KeySpec: 'SYMMETRIC_DEFAULT',
        KeyUsage: 'ENCRYPT_DECRYPT',
        ...(tags.length > 0 ? { Tags: tags } : {}),
      }),
    );
    const keyId = res.KeyMetadata?.KeyId;
    const arn = res.KeyMetadata?.Arn;
    if (!keyId || !arn) throw new Error('createKek: CreateKey returned no KeyId/Arn');
    if (options.alias !== undefined) {
      await kms.send(new CreateAliasCommand({ AliasName: options.alias, TargetKeyId: keyId }));
    }
    return arn;
  } finally {
    kms.destroy();
  }
}
