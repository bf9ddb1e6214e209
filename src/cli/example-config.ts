/**
 * The commented config `kmsgw init` writes. Every key is optional; shown values are the
 * defaults, except the two development settings (keys.autoCreate, kms.adapters.local.enabled).
 */
export const EXAMPLE_CONFIG = `# kmsgw configuration (YAML; JSON works too). Relative paths are resolved
# against this file's folder. Environment overrides: see README.md.

# Key store (wrapped DEKs only), its lock, and the local development KEK.
dataDir: .kmsgw

listen:
  # Unix socket; access is governed by its owner and mode. null turns it off.
  socket:
    path: .kmsgw/kmsgw.sock
    mode: "0600"
  # Optional plain TCP listener: loopback only, and only with insecure: true (no TLS).
  # tcp:
  #   host: 127.0.0.1
  #   port: 7878
  #   insecure: true
  # TLS 1.3 with client certificates; a client's identity is its certificate's CN.
  # tls:
  #   host: 127.0.0.1
  #   port: 7879
  #   cert: tls/server.crt
  #   key: tls/server.key
  #   ca: tls/clients-ca.crt

limits:
  maxLineBytes: 1048576     # longer request lines get ERR TOO_LARGE
  maxConnections: 1024      # more are answered ERR THROTTLED and closed
  maxConnectionsPerPeer: 256  # from one uid, certificate or TCP address
  maxBufferedBytes: 67108864  # unfinished request lines across all connections
  maxInFlight: 1024         # pipelined requests per connection before reading pauses
  idleTimeoutMs: 300000     # idle connections are closed
  requestTimeoutMs: 30000   # a request line must arrive whole within this (slow senders)
  shutdownGraceMs: 10000    # on SIGTERM, time to answer every request already read

# Where wrapped DEKs live. The default is a folder on this host (dataDir/keys); for a cluster of
# hosts (a standby, a PITR restore on a new VM) use an object store all of them reach:
#   s3://<bucket>/<prefix>, gs://<bucket>/<prefix>, azblob://<account>/<container>/<prefix>
keystore:
  # url: s3://acme-kmsgw-keys/pg/cluster-1/
  # endpoint: http://127.0.0.1:4566   # emulators and S3-compatible stores only
  # forcePathStyle: true              # likewise
  refreshMs: 30000          # other gateways' ROTATE/DESTROY reach this one within this
  timeoutMs: 5000           # deadline of one store call (then ERR STORE_UNAVAILABLE)
  cacheRecords: 10000       # key records held in memory

cache:
  maxEntries: 10000         # unwrapped DEKs in memory (zeroized on eviction)
  ttlMs: 300000             # from unwrap; then unwrapped again
  staleIfErrorMs: 3600000   # past its TTL, still served while the KMS is unreachable (never when it denies)
  warm: []                  # key-id globs unwrapped at start, e.g. ["pg/*"]

keys:
  # Create keys on first GET/ENC. Convenient in development; turn off in production
  # so a typo in a key id is an error rather than a new key.
  autoCreate: true
  # KEK for keys created without one. local:// is for development only:
  # the KEK file then sits on this host. Relative paths are inside dataDir.
  # A list wraps every DEK under each KEK (regions, clouds): unwraps fail over between them.
  defaultKek: local://local-kek
  # defaultKek:
  #   - aws-kms://arn:aws:kms:eu-west-1:111122223333:key/...
  #   - gcp-kms://projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k
  # minWraps: 1             # store a new version once this many KEKs wrapped it (default: all)
  # Offline break-glass key (docs/recovery.md): every new DEK version is also sealed to these
  # age recipients; the identity stays offline. Reloadable.
  # recovery: ["age1..."]
  # KEK URI globs a DEK may be wrapped under (whatever CREATE, ROTATE or REWRAP names);
  # the default allows only defaultKek.
  # allowedKeks: ["aws-kms://arn:aws:kms:eu-west-1:111122223333:key/*"]
  # ENC per DEK version before ROTATE is required (AES-GCM random nonces: NIST bound 2^32).
  maxEncryptionsPerVersion: 4294967296

kms:
  timeoutMs: 2000           # deadline of every KMS call, retries included
  maxConcurrent: 64         # KMS calls in flight at once (a burst of cold keys queues)
  hedgeMs: 250              # keys under several KEKs: ask the next KEK after this long
  # preference: ["aws-kms://arn:aws:kms:eu-west-1:*"]   # KEKs asked first (this host's region)
  revocation: any           # one KEK of a key denied: any = stop the key; all = serve from the others
  canaryIntervalMs: 30000   # wrap+unwrap per KEK in use: readiness; a disabled KEK stops being served within it
  retry:
    attempts: 3             # on KMS_UNAVAILABLE/THROTTLED, with jittered backoff
    baseDelayMs: 50
    maxDelayMs: 1000
  breaker:
    failures: 5             # failed calls in a row for one KEK that open its breaker
    openMs: 10000           # calls then fail at once for this long, then one probe
  adapters:
    # KEK files on this host (local://). Off unless enabled: turn it off in production,
    # where defaultKek names a cloud KEK.
    local:
      enabled: true
      # dir: /etc/kmsgw         # the only folder local KEK files may be in (default: dataDir)

# Who may use which key. Without a policy every client that can reach the socket may do
# everything (fine for development; the gateway warns at start). With one: default deny.
# policy:
#   clients:
#     - name: postgres
#       match:
#         uids: [101]                 # Unix socket peer uid (SO_PEERCRED)
#         # certs: [pg-cluster-1]     # TLS client certificate CN
#         # tokens: ["sha256:..."]    # AUTH <token>; store only hashes: kmsgw policy hash-token
#       grants:
#         - verbs: [GET, ENC, DEC]
#           keys: ["pg/*"]
#     - name: ops
#       match: { uids: [0] }
#       grants:
#         - verbs: [admin]            # CREATE ROTATE REWRAP DESTROY INFO LIST
#           keys: ["*"]
#           # keks: ["aws-kms://*"]   # KEK URIs its CREATE/ROTATE/REWRAP may name (default: allowedKeks)
#   authFailures: { max: 5, windowMs: 60000 }   # failed AUTH per connection and per peer uid/cert

# Hash-chained audit log, one JSON line per request (docs/audit.md).
# audit:
#   file: .kmsgw/audit.log
#   fsync: interval           # always | interval | never
#   failOpen: false           # false: refuse requests when the log cannot be written

log:
  level: info               # on stderr; never key material
  # format: json            # json or pretty (default: pretty on a terminal, else json)

# Health and metrics over HTTP (docs/operations.md): /livez, /readyz, /metrics.
# ops:
#   listen: 127.0.0.1:9464

# Vault-compatible HTTP front door for pg_tde (KV v2) and Transit clients (docs/vault-api.md).
# TLS 1.3 with listen.tls's certificate; grants: KVREAD KVWRITE KVLIST KVDELETE on kv/<mount>/<path>.
# vault:
#   listen: 127.0.0.1:8200
#   insecure: false           # true: plain HTTP, loopback only
#   mounts: { kv: [secret], transit: transit }
#   transitPrefix: transit/   # Transit key k is the kmsgw key transit/k
`;
