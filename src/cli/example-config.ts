/** The commented config `kmsgw init` writes. Every key is optional; shown values are the defaults. */
export const EXAMPLE_CONFIG = `# kmsgw configuration (YAML; JSON works too). Relative paths are resolved
# against this file's folder. Environment overrides: see README.md.

# Key store (wrapped DEKs only), its lock, and the local development KEK.
dataDir: .kmsgw

listen:
  # Unix socket; access is governed by its owner and mode. null turns it off.
  socket:
    path: .kmsgw/kmsgw.sock
    mode: "0600"
  # Optional plain TCP listener, loopback only (no TLS yet).
  # tcp:
  #   host: 127.0.0.1
  #   port: 7878

limits:
  maxLineBytes: 1048576     # longer request lines get ERR TOO_LARGE
  maxConnections: 1024      # more are answered ERR THROTTLED and closed
  maxInFlight: 1024         # pipelined requests per connection before reading pauses
  idleTimeoutMs: 300000     # idle connections are closed

cache:
  maxEntries: 10000         # unwrapped DEKs in memory (zeroized on eviction)
  ttlMs: 300000             # from unwrap; a disabled KEK stops working after this

keys:
  # Create keys on first GET/ENC. Convenient in development; turn off in production
  # so a typo in a key id is an error rather than a new key.
  autoCreate: true
  # KEK for keys created without one. local:// is for development only:
  # the KEK file then sits on this host. Relative paths are inside dataDir.
  defaultKek: local://local-kek

kms:
  timeoutMs: 2000           # deadline of every KMS call

log:
  level: info               # JSON lines on stderr; never key material
`;
