import type { SecretMetadata, Secrets, SecretVersion } from '../kv/secrets.js';
import type { Session } from '../pipeline/pipeline.js';
import { GatewayError } from '../protocol/errors.js';
import type { KvVerb } from '../policy/types.js';
import type { RequestTrace } from '../request/context.js';
import type { Result } from '../protocol/reply.js';
import { fromGateway, vaultData, vaultError, type VaultReply } from './errors.js';
import type { Route } from './routes.js';

type KvRoute = Extract<Route, { kind: `kv-${string}` }>;

/** The kmsgw key id of a secret or folder: policy grants and audit records name it. */
export const secretId = (mount: string, path: string): string => `kv/${mount}/${path}`;

/**
 * KV v2 over kmsgw secrets: each request is one `Session.perform` (policy, audit, metrics as for a
 * protocol line), its typed result turned into Vault's JSON here and nowhere else.
 */
export async function kv(route: KvRoute, body: unknown, session: Session, secrets: Secrets): Promise<VaultReply> {
  const id = secretId(route.mount, route.path);
  const perform = <T>(verb: KvVerb, run: (trace: RequestTrace) => Promise<T>): Promise<Result<T>> => session.perform(verb, id, verb, run);
  switch (route.kind) {
    case 'kv-read':
      return reply(
        await perform('KVREAD', async (trace) => {
          const secret = await secrets.read(id, route.version);
          trace.version = secret.version.version;
          return secret;
        }),
        (s) => vaultData({ data: s.data, metadata: versionMetadata(s.version) }),
      );
    case 'kv-write': {
      return reply(
        await perform('KVWRITE', async (trace) => {
          // Checked inside, so a malformed write is refused and recorded like any other.
          const input = parseWrite(body);
          if (typeof input === 'string') throw new GatewayError('BAD_REQUEST', input);
          const made = await secrets.write(id, input.data, input.cas);
          trace.version = made.version;
          return made;
        }),
        (v) => vaultData(versionMetadata(v)),
      );
    }
    case 'kv-list':
      return reply(
        // As LIST does on the line protocol, only the secrets the client may list are named.
        await perform('KVLIST', () => secrets.list(id, (secret) => session.may('KVLIST', secret))),
        // Vault answers an empty folder 404 (pg_tde takes 200 or 404 for an empty mount).
        (keys) => (keys.length === 0 ? vaultError(404) : vaultData({ keys })),
      );
    case 'kv-metadata':
      return reply(await perform('KVREAD', () => secrets.metadata(id)), (m) => vaultData(metadata(m)));
    case 'kv-delete-all':
      return reply(await perform('KVDELETE', () => secrets.deleteAll(id)), () => ({ status: 204, body: null }));
  }
}

function reply<T>(result: Result<T>, ok: (value: T) => VaultReply): VaultReply {
  if (result.ok) return ok(result.value);
  // Vault's 404 for a missing secret has an empty error list; pg_tde reads it as "no such key".
  return result.code === 'NOT_FOUND' ? vaultError(404) : fromGateway(result.code, result.text);
}

/** `{"data":{...},"options":{"cas":N}}`, or why not. */
function parseWrite(body: unknown): { data: Record<string, unknown>; cas: number | undefined } | string {
  if (!isObject(body) || !isObject(body['data'])) return 'no data provided';
  const options = body['options'];
  if (options !== undefined && options !== null && !isObject(options)) return 'options must be an object';
  const cas = isObject(options) ? options['cas'] : undefined;
  if (cas !== undefined && (typeof cas !== 'number' || !Number.isSafeInteger(cas) || cas < 0)) return 'cas must be a non-negative integer';
  return { data: body['data'], cas };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function versionMetadata(v: SecretVersion): Record<string, unknown> {
  return {
    created_time: v.created,
    custom_metadata: null,
    deletion_time: v.destroyed ?? '',
    destroyed: v.destroyed !== undefined,
    version: v.version,
  };
}

function metadata(m: SecretMetadata): Record<string, unknown> {
  return {
    cas_required: m.casRequired,
    created_time: m.created,
    current_version: m.current,
    custom_metadata: Object.keys(m.customMetadata).length === 0 ? null : m.customMetadata,
    delete_version_after: '0s',
    max_versions: m.maxVersions,
    oldest_version: m.oldest,
    updated_time: m.updated,
    versions: Object.fromEntries(
      m.versions.map((v) => [
        String(v.version),
        { created_time: v.created, deletion_time: v.destroyed ?? '', destroyed: v.destroyed !== undefined },
      ]),
    ),
  };
}
