import { isLoopback } from '../server/identity.js';

/** Splits `ops.listen` (`host:port`, `[::1]:9464` for IPv6); throws with a message naming the field. */
export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = Number(m?.[3]);
  if (m === null || port > 65535) throw new Error(`ops.listen ${JSON.stringify(listen)} must be host:port, such as 127.0.0.1:9464`);
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Why `listen` may not be used (with `allowRemote` as given), or undefined when it may. */
export function listenProblem(listen: string, allowRemote: boolean): string | undefined {
  let host: string;
  try {
    host = parseListen(listen).host;
  } catch (err) {
    return (err as Error).message;
  }
  if (allowRemote || isLoopback(host)) return undefined;
  return `ops.listen host ${host} is not a loopback address: the ops endpoints are not authenticated; set ops.allowRemote: true to serve them there`;
}

/** Why `vault.listen` may not be used: plain HTTP only when acknowledged and on loopback, else TLS needs `listen.tls`. */
export function vaultListenProblem(listen: string, insecure: boolean, tls: boolean): string | undefined {
  let host: string;
  try {
    host = parseListen(listen).host;
  } catch (err) {
    return (err as Error).message.replace('ops.listen', 'vault.listen');
  }
  if (insecure) return isLoopback(host) ? undefined : `vault.insecure serves plain HTTP: only on a loopback address, not ${host}`;
  return tls ? undefined : 'vault.listen needs TLS: configure listen.tls (cert, key, ca), or vault.insecure: true on a loopback address';
}
