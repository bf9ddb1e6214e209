import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { KeyService } from '../keys/key-service.js';
import type { Logger } from '../log/logger.js';
import type { Pipeline, Session } from '../pipeline/pipeline.js';
import { GatewayError } from '../protocol/errors.js';
import { MAX_TOKEN_LENGTH } from '../protocol/parser.js';
import { failure } from '../protocol/reply.js';
import { parseListen } from '../ops/listen.js';
import { CODE_OF, errorText, fromGateway, vaultError, type VaultReply } from './errors.js';
import { isTransit, type KeyRoute } from './routes.js';
import { startVaultServer, type Answered, type VaultRequest, type VaultServer } from './server.js';
import { transit } from './transit.js';
import { kv } from './kv.js';
import type { Secrets } from '../kv/secrets.js';

/** What `AUTH` accepts as a token: printable ASCII without spaces, at most MAX_TOKEN_LENGTH characters. */
const TOKEN_RE = new RegExp(`^[\\x21-\\x7e]{1,${MAX_TOKEN_LENGTH}}$`);

/**
 * The front door as the gateway runs it (`vault.*`): each request gets its own pipeline session,
 * authenticated by its `X-Vault-Token` as `AUTH` would be, so policy and audit apply unchanged.
 * Undefined when `vault.listen` is not set.
 */
export async function startFrontDoor(
  config: Config,
  pipeline: Pipeline,
  keys: Pick<KeyService, 'info'>,
  secrets: Secrets,
  log: Logger,
  baseDir: string,
): Promise<VaultServer | undefined> {
  const vault = config.vault;
  if (vault.listen === undefined) return undefined;
  const files = config.listen.tls;
  // The config already refuses a plain listener that is not acknowledged and on loopback.
  if (!vault.insecure && files === undefined) throw new ConfigError('vault.listen needs listen.tls, or vault.insecure on loopback');
  const tls =
    vault.insecure || files === undefined
      ? undefined
      : { cert: await readFile(resolve(baseDir, files.cert)), key: await readFile(resolve(baseDir, files.key)) };
  const { host, port } = parseListen(vault.listen);
  /** A pipeline session for one request, as the client its `X-Vault-Token` names; a refused token is recorded and 403. */
  const open = (request: VaultRequest): { session: Session } | { refused: Promise<VaultReply> } => {
    const session = pipeline.open({ transport: 'vault', ...(request.address === undefined ? {} : { address: request.address }) });
    const token = request.token;
    if (token === undefined) return { session };
    const auth = TOKEN_RE.test(token) ? session.authenticate(token) : failure('FORBIDDEN', 'authentication failed');
    // Without a policy there is nothing to authenticate against (the development default): the token is not needed.
    if (auth.ok || auth.code !== 'FORBIDDEN') return { session };
    return {
      refused: session
        .perform('AUTH', undefined, undefined, () => Promise.reject(new GatewayError('FORBIDDEN', auth.text)))
        .then(() => vaultError(403, 'permission denied')),
    };
  };
  const handle = async (route: KeyRoute, body: unknown, request: VaultRequest): Promise<VaultReply> => {
    const opened = open(request);
    if ('refused' in opened) return opened.refused;
    const { session } = opened;
    if (isTransit(route)) return transit(route, body, session, vault.transitPrefix, (id) => keys.info(id));
    return kv(route, body, session, secrets);
  };
  /** Health, mount info and refusals before routing are recorded too, as the line protocol records PING and bad lines. */
  const settle = async (what: Answered, reply: VaultReply, request: VaultRequest): Promise<VaultReply> => {
    // sys/health is unauthenticated in Vault: a token sent along (hvac sends its own) is not looked at.
    const opened = open(what === 'HEALTH' ? { ...request, token: undefined } : request);
    if ('refused' in opened) return opened.refused;
    const result = await opened.session.perform(what, undefined, undefined, () => {
      if (reply.status >= 400) throw new GatewayError(CODE_OF[reply.status] ?? 'BAD_REQUEST', errorText(reply));
    });
    // Only the audit log being unavailable turns an answer into a refusal here.
    return !result.ok && result.code === 'INTERNAL' ? fromGateway(result.code, result.text) : reply;
  };
  const server = await startVaultServer({
    host,
    port,
    mounts: { kv: vault.mounts.kv, transit: vault.mounts.transit ?? undefined },
    maxBodyBytes: vault.maxBodyBytes,
    handle,
    settle,
    log,
    ...(tls === undefined ? {} : { tls }),
  });
  log.info({ host, port: server.port, tls: tls !== undefined }, 'Vault-compatible front door listening');
  return server;
}
