import { randomFillSync } from 'node:crypto';
import { withSecrets } from '../crypto/secret.js';
import type { KeyInfo } from '../keys/versions.js';
import type { Session } from '../pipeline/pipeline.js';
import type { Outcome } from '../protocol/reply.js';
import type { RequestTrace } from '../request/context.js';
import { errorText, fromGateway, vaultData, vaultError, type VaultReply } from './errors.js';
import { GatewayError } from '../protocol/errors.js';
import type { Route } from './routes.js';

type TransitRoute = Extract<Route, { kind: `transit-${string}` }>;

const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const CIPHERTEXT_RE = /^vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})$/;

/** One item of a request (or of its `batch_input`). */
interface Item {
  readonly plaintext?: unknown;
  readonly ciphertext?: unknown;
  readonly associated_data?: unknown;
  readonly context?: unknown;
}

/** What `POST transit/keys/<k>` may ask for. */
interface KeyOptions {
  readonly type?: unknown;
  readonly derived?: unknown;
  readonly convergent_encryption?: unknown;
  readonly exportable?: unknown;
}

type ItemResult = { readonly ok: true; readonly data: Record<string, unknown> } | { readonly ok: false; readonly error: VaultReply };

type Refusal = Extract<ItemResult, { ok: false }>;

const bad = (text: string): Refusal => ({ ok: false, error: vaultError(400, text) });

/** A base64 field as the protocol takes it: only the base64 alphabet, so it cannot add tokens to a line. */
function base64Field(value: unknown, name: string): string | ItemResult {
  if (typeof value !== 'string' || !B64_RE.test(value) || value.length === 0) return bad(`${name} must be non-empty base64`);
  return value;
}

/**
 * Vault Transit over kmsgw keys: each request item becomes a protocol line on the request's
 * pipeline session (so policy, audit and metrics apply as for the line protocol), and the
 * ciphertext is `vault:v<N>:<envelope>` with N the DEK version the session's trace reports.
 */
export async function transit(
  route: TransitRoute,
  body: unknown,
  session: Session,
  prefix: string,
  describe: (keyId: string) => Promise<KeyInfo>,
): Promise<VaultReply> {
  const id = `${prefix}${route.key}`;
  const input = (typeof body === 'object' && body !== null ? body : {}) as Item & KeyOptions & { batch_input?: unknown };
  switch (route.kind) {
    case 'transit-encrypt':
    case 'transit-decrypt':
    case 'transit-rewrap': {
      const op = route.kind === 'transit-encrypt' ? encrypt : route.kind === 'transit-decrypt' ? decrypt : rewrap;
      if (input.batch_input !== undefined) {
        if (!Array.isArray(input.batch_input)) {
          return (await recorded(session, route.kind === 'transit-encrypt' ? 'ENC' : 'DEC', id, bad('batch_input must be an array'))).error;
        }
        const results = [];
        for (const item of input.batch_input as Item[]) {
          const r = await op(session, id, typeof item === 'object' && item !== null ? item : {});
          results.push(r.ok ? r.data : { error: (r.error.body as { errors: string[] }).errors.join('; ') });
        }
        return vaultData({ batch_results: results });
      }
      const r = await op(session, id, input);
      return r.ok ? vaultData(r.data) : r.error;
    }
    case 'transit-datakey':
      return datakey(session, id, route.plaintext);
    case 'transit-create':
      // kmsgw keys are AES-256-GCM data keys: anything else asked for is refused, not silently made.
      if (input.type !== undefined && input.type !== 'aes256-gcm96') {
        return (await recorded(session, 'CREATE', id, bad('only key type aes256-gcm96 is supported'))).error;
      }
      if (input.derived === true || input.convergent_encryption === true || input.exportable === true) {
        return (await recorded(session, 'CREATE', id, bad('derived, convergent and exportable keys are not supported'))).error;
      }
    // falls through
    case 'transit-rotate': {
      const outcome = await session.handle(`${route.kind === 'transit-create' ? 'CREATE' : 'ROTATE'} ${id}`);
      // Creating a key that exists changes nothing, as in Vault: applications create their key at every start.
      const done = outcome.ok || (route.kind === 'transit-create' && outcome.code === 'EXISTS');
      return done ? { status: 204, body: null } : fromGateway(outcome.code, outcome.text);
    }
    case 'transit-key': {
      // Checked, audited and metered as INFO, with the key service's typed record (nothing parsed back).
      const info = await session.perform('INFO', id, 'INFO', () => describe(id));
      return info.ok ? vaultData(transitKey(route.key, info.value)) : fromGateway(info.code, info.text);
    }
  }
}

async function sealed(session: Session, id: string, plaintext: string, aad: string | undefined): Promise<ItemResult> {
  const trace: RequestTrace = {};
  const outcome: Outcome = await session.handle(`ENC ${id} ${plaintext}${aad === undefined ? '' : ` ${aad}`}`, trace);
  if (!outcome.ok) return { ok: false, error: fromGateway(outcome.code, outcome.text) };
  return { ok: true, data: { ciphertext: `vault:v${trace.version}:${outcome.payload}`, key_version: trace.version } };
}

/** A refusal before any protocol line was sent, recorded as that line's refusal would be. */
async function recorded<T extends ItemResult>(session: Session, verb: 'ENC' | 'DEC' | 'CREATE', id: string, result: T): Promise<T> {
  if (!result.ok) {
    const text = errorText(result.error);
    await session.perform(verb, id, undefined, () => Promise.reject(new GatewayError('BAD_REQUEST', text)));
  }
  return result;
}

function common(item: Item): string | undefined | ItemResult {
  if (item.context !== undefined) return bad('context is not supported: kmsgw has no derived keys');
  return item.associated_data === undefined ? undefined : base64Field(item.associated_data, 'associated_data');
}

async function encrypt(session: Session, id: string, item: Item): Promise<ItemResult> {
  const aad = common(item);
  if (typeof aad === 'object') return recorded(session, 'ENC', id, aad);
  const plaintext = base64Field(item.plaintext, 'plaintext');
  if (typeof plaintext !== 'string') return recorded(session, 'ENC', id, plaintext);
  return sealed(session, id, plaintext, aad);
}

async function opened(session: Session, id: string, item: Item): Promise<ItemResult & { aad?: string }> {
  const aad = common(item);
  if (typeof aad === 'object') return recorded(session, 'DEC', id, aad);
  const m = typeof item.ciphertext === 'string' ? CIPHERTEXT_RE.exec(item.ciphertext) : null;
  if (m === null) return recorded(session, 'DEC', id, bad('invalid ciphertext: expected vault:v<N>:<base64>'));
  const outcome = await session.handle(`DEC ${id}@${m[1]} ${m[2]}${aad === undefined ? '' : ` ${aad}`}`);
  if (!outcome.ok) return { ok: false, error: fromGateway(outcome.code, outcome.text) };
  return { ok: true, data: { plaintext: outcome.payload }, ...(aad === undefined ? {} : { aad }) };
}

function decrypt(session: Session, id: string, item: Item): Promise<ItemResult> {
  return opened(session, id, item);
}

async function rewrap(session: Session, id: string, item: Item): Promise<ItemResult> {
  const open = await opened(session, id, item);
  if (!open.ok) return open;
  return sealed(session, id, open.data['plaintext'] as string, open.aad);
}

/** A fresh 256-bit data key, sealed under the Transit key; its plaintext only when asked for. */
function datakey(session: Session, id: string, withPlaintext: boolean): Promise<VaultReply> {
  return withSecrets(async (scope) => {
    const key = randomFillSync(scope.alloc(32));
    const plaintext = key.toString('base64');
    const r = await sealed(session, id, plaintext, undefined);
    if (!r.ok) return r.error;
    return vaultData({ ...r.data, ...(withPlaintext ? { plaintext } : {}) });
  });
}

/** A kmsgw key as Vault's `GET transit/keys/<k>` shows one: versions by creation time, the newest used to encrypt. */
function transitKey(name: string, info: KeyInfo): Record<string, unknown> {
  const enabled = info.versions.filter((v) => v.state === 'enabled');
  return {
    name,
    type: 'aes256-gcm96',
    keys: Object.fromEntries(enabled.map((v) => [String(v.version), Math.floor(Date.parse(v.created) / 1000)])),
    latest_version: info.primary,
    min_decryption_version: enabled[0]?.version ?? null,
    min_encryption_version: 0,
    deletion_allowed: false,
    exportable: false,
    derived: false,
    supports_encryption: true,
    supports_decryption: true,
    supports_derivation: false,
    supports_signing: false,
  };
}
