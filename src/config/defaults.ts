/**
 * Defaults that more than one module needs. Kept free of imports so the CLI's
 * client commands can use them without loading the config schema.
 */

/** File `kmsgw serve` and `kmsgw policy check` read from the working folder when no `--config` is given. */
export const DEFAULT_CONFIG_FILE = 'kmsgw.yaml';

/** Folder for the key store, its lock, the local KEK and the socket. */
export const DEFAULT_DATA_DIR = '.kmsgw';

/** Unix socket the gateway listens on and clients connect to (`$KMSGW_SOCKET` overrides it for clients). */
export const DEFAULT_SOCKET_PATH = `${DEFAULT_DATA_DIR}/kmsgw.sock`;
