import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { KeyService } from '../keys/key-service.js';
import type { Logger } from '../log/logger.js';
import type { Pipeline } from '../pipeline/pipeline.js';
import { parseListen } from '../ops/listen.js';
import { vaultError, type VaultReply } from './errors.js';
import type { Route } from './routes.js';
import { startVaultServer, type VaultServer } from './server.js';
import { transit } from './transit.js';
import { kv } from './kv.js';
import type { Secrets } from '../kv/secrets.js';

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
  const handle = async (route: Route, body: unknown, token: string | undefined): Promise<VaultReply> => {
    const session = pipeline.open({ transport: 'vault' });
    if (token !== undefined) {
      if (!/^[\x21-\x7e]{1,512}$/.test(token)) return vaultError(403, 'permission denied');
      const auth = await session.handle(`AUTH ${token}`);
      // Without a policy there is nothing to authenticate against (the development default).
      if (!auth.ok && auth.code === 'FORBIDDEN') return vaultError(403, 'permission denied');
    }
    if (route.kind.startsWith('transit-'))
      return transit(route as Parameters<typeof transit>[0], body, session, vault.transitPrefix, (id) => keys.info(id));
    return kv(route as Parameters<typeof kv>[0], body, session, secrets);
  };
  const server = await startVaultServer({
    host,
    port,
    mounts: { kv: vault.mounts.kv, transit: vault.mounts.transit ?? undefined },
    maxBodyBytes: vault.maxBodyBytes,
    handle,
    log,
    ...(tls === undefined ? {} : { tls }),
  });
  log.info({ host, port: server.port, tls: tls !== undefined }, 'Vault-compatible front door listening');
  return server;
}
