/*
 * Over 300 lines because the whole configuration is one zod schema: every field with its TSDoc and
 * default in one place, and the checks across sections (default KEKs against allow-lists and local
 * KEKs) next to the fields they read.
 */
import { z } from 'zod';
import { AdapterSettingsSchema } from '../../adapters/settings.js';
import { DEFAULT_DATA_DIR, DEFAULT_SOCKET_PATH } from './defaults.js';
import { KeyStoreSettingsSchema } from '../keystore/settings.js';
import { listenProblem, vaultListenProblem } from '../ops/listen.js';
import { KekGlobSchema, matchesAny } from '../policy/glob.js';
import { defaultKeks } from '../keys/kek-order.js';
import { REVOCATION_MODES } from '../keys/kek-order.js';
import { AgeRecipientSchema } from '../keystore/types.js';
import { MAX_KEKS } from '../protocol/parser.js';
import { PolicySchema } from '../policy/policy.js';

const kekUri = z.string().regex(/^[a-z][a-z0-9+.-]*:\/\/[^\s,]+$/, 'must be a KEK URI such as local://local-kek');

const octalMode = z
  .union([z.number().int().min(0).max(0o777), z.string().regex(/^0?[0-7]{3}$/, 'must be an octal mode such as "0600"')])
  .transform((v) => (typeof v === 'number' ? v : Number.parseInt(v, 8)));

/**
 * The whole configuration. Every field has a default, but the default KEK is a
 * local file, which must be enabled (`kms.adapters.local.enabled`) or replaced
 * by a cloud KEK: `{}` alone is refused. Relative paths are resolved against
 * the config file's folder.
 */
export const ConfigSchema = z
  .object({
    /** Folder for the key store, its lock and (by default) the socket and local KEK. */
    dataDir: z.string().min(1).default(DEFAULT_DATA_DIR),
    listen: z
      .object({
        /** Unix socket; `null` turns it off. */
        socket: z
          .object({
            path: z.string().min(1).default(DEFAULT_SOCKET_PATH),
            mode: octalMode.default(0o600),
          })
          .strict()
          .nullable()
          .prefault({}),
        /**
         * Optional plain TCP listener: refused unless `insecure: true` and on loopback
         * (no authentication of the peer, no encryption); a warning is logged at start.
         */
        tcp: z
          .object({
            host: z.string().default('127.0.0.1'),
            port: z.number().int().min(0).max(65535),
            /** Must be true: an explicit acknowledgement that this listener has no TLS. */
            insecure: z.boolean().default(false),
          })
          .strict()
          .optional(),
        /** TLS 1.3 listener with client certificates (mTLS); the identity is the certificate's CN or first SAN. */
        tls: z
          .object({
            host: z.string().default('127.0.0.1'),
            port: z.number().int().min(0).max(65535),
            /** Server certificate chain (PEM file). */
            cert: z.string().min(1),
            /** Server private key (PEM file). */
            key: z.string().min(1),
            /** CA (PEM file) that client certificates must chain to. */
            ca: z.string().min(1),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        /** Longest request line in bytes, without its LF. */
        maxLineBytes: z
          .number()
          .int()
          .min(1024)
          .max(64 * 1024 * 1024)
          .default(1024 * 1024),
        /** Most client connections at once. */
        maxConnections: z.number().int().min(1).max(1_000_000).default(1024),
        /**
         * Most connections at once from one peer: a Unix uid (with peer credentials), a TLS
         * certificate identity, or a TCP address. One client cannot take every connection.
         */
        maxConnectionsPerPeer: z.number().int().min(1).max(1_000_000).default(256),
        /**
         * Most bytes of unfinished request lines held across all connections (each line may have
         * up to maxLineBytes); the connection whose data passes it is cut.
         */
        maxBufferedBytes: z
          .number()
          .int()
          .min(1024)
          .max(4 * 1024 * 1024 * 1024)
          .default(64 * 1024 * 1024),
        /** Most pipelined requests awaiting a reply per connection before reading pauses. */
        maxInFlight: z.number().int().min(1).max(1_000_000).default(1024),
        /** Idle connections are closed after this many ms (0: never). */
        idleTimeoutMs: z.number().int().min(0).default(300_000),
        /** A request line must arrive whole within this many ms of its first byte (slow senders; 0: never). */
        requestTimeoutMs: z.number().int().min(0).default(30_000),
        /**
         * On SIGTERM, how long requests already read may take to be answered before their
         * connections are cut (new connections and new lines are refused at once).
         */
        shutdownGraceMs: z.number().int().min(0).max(600_000).default(10_000),
      })
      .strict()
      .prefault({}),
    cache: z
      .object({
        /** Most unwrapped DEKs held in memory. */
        maxEntries: z.number().int().min(1).default(10_000),
        /** How long an unwrapped DEK is served, in ms, from its unwrap. */
        ttlMs: z.number().int().min(1).default(300_000),
        /**
         * How long past its TTL an unwrapped DEK is still kept (in memory, zeroized when it ends), in ms,
         * to be served only while unwrapping it again fails with KMS_UNAVAILABLE or THROTTLED; never
         * after KMS_DENIED. 0: a DEK is zeroized at its TTL and refused while the KMS is down.
         */
        staleIfErrorMs: z
          .number()
          .int()
          .min(0)
          .max(7 * 24 * 3_600_000)
          .default(3_600_000),
        /**
         * Key-id globs (`pg/*`) whose current versions are unwrapped at start, before the gateway reports
         * ready, so the first PostgreSQL start after a restart does not wait on the KMS. Failures are logged
         * and tolerated.
         */
        warm: z.array(z.string().regex(/^\S{1,1024}$/, 'must be a key-id glob such as pg/*')).default([]),
      })
      .strict()
      .prefault({}),
    /**
     * Where wrapped DEKs live (`keystore.url`) and how this gateway keeps up with other gateways
     * sharing them; `kmsgw store copy` and `verify` read its endpoint, path style and region.
     */
    keystore: KeyStoreSettingsSchema.prefault({}),
    keys: z
      .object({
        /** Create unknown keys on first GET/ENC (the development default); off means CREATE first. */
        autoCreate: z.boolean().default(false),
        /**
         * Most ENC calls per DEK version (AES-GCM with random nonces: NIST's bound is 2^32).
         * Warnings are logged at 50 %, 75 % and 90 %; past it ENC is refused until ROTATE.
         */
        maxEncryptionsPerVersion: z
          .number()
          .int()
          .min(1)
          .max(2 ** 32)
          .default(2 ** 32),
        /**
         * KEK for keys created without one; `local://` needs `kms.adapters.local.enabled`. A list (or a
         * comma-separated string) wraps every new DEK under each KEK: unwraps fail over between them.
         */
        defaultKek: z
          .union([kekUri, z.array(kekUri).min(1).max(MAX_KEKS)])
          .default('local://local-kek')
          .refine((v) => defaultKeks(v).length <= MAX_KEKS && new Set(defaultKeks(v)).size === defaultKeks(v).length, {
            message: `at most ${MAX_KEKS} distinct KEKs`,
          }),
        /**
         * Fewest KEKs that must wrap a new DEK version for it to be stored; the others are retried in the
         * background (every `kms.canaryIntervalMs`) and shown as pending in INFO. Absent: every KEK named.
         */
        minWraps: z.number().int().min(1).max(MAX_KEKS).optional(),
        /**
         * Offline recovery (docs/recovery.md): age X25519 recipients (`age1…`) every new DEK version is also
         * sealed to, as a standard age file in the record. The identities stay offline; `kmsgw recover` or
         * the `age` tool opens them with no KMS.
         */
        recovery: z.array(AgeRecipientSchema).max(16).default([]),
        /**
         * KEK URI globs that DEKs may be wrapped under: every KEK a CREATE, ROTATE or REWRAP
         * names (or a ROTATE keeps) must match one, whoever asks. Must allow `defaultKek`.
         * @default [defaultKek]
         */
        allowedKeks: z.array(KekGlobSchema).min(1).optional(),
      })
      .strict()
      .prefault({}),
    kms: z
      .object({
        /**
         * Deadline of each KMS call in ms, retries included; a dead KMS never hangs a client longer. A key
         * under several KEKs whose KMSs all hang waits at most this plus `hedgeMs` per further KEK.
         */
        timeoutMs: z.number().int().min(1).max(120_000).default(2000),
        /**
         * Period of the background canary (a wrap and unwrap of a random value under every KEK in use),
         * in ms: readiness reflects it, and a KEK disabled in the KMS stops being served within it even
         * with no traffic. 0 turns the canary off.
         */
        canaryIntervalMs: z.number().int().min(0).max(86_400_000).default(30_000),
        /** Retries of KMS calls failing with KMS_UNAVAILABLE or THROTTLED, inside `timeoutMs`. */
        retry: z
          .object({
            /** Attempts per call, the first included (1: no retry). */
            attempts: z.number().int().min(1).max(10).default(3),
            /** Backoff before the second attempt in ms, doubled for each further one, with full jitter. */
            baseDelayMs: z.number().int().min(0).max(60_000).default(50),
            /** Longest backoff in ms (a Retry-After from the KMS may ask for longer). */
            maxDelayMs: z.number().int().min(0).max(60_000).default(1000),
          })
          .strict()
          .prefault({}),
        /**
         * For keys under several KEKs: how long the preferred KEK may take before the next one is also
         * asked, in ms. The first answer wins; the others are cancelled. A KEK that fails with
         * KMS_UNAVAILABLE or THROTTLED hands over at once.
         */
        hedgeMs: z.number().int().min(0).max(60_000).default(250),
        /**
         * Most KMS calls in flight at once, across every KEK: a burst of cold keys queues instead of
         * tripping the cloud's request quotas. A call that cannot start within `timeoutMs` is THROTTLED.
         */
        maxConcurrent: z.number().int().min(1).max(10_000).default(64),
        /**
         * KEK URI globs, most preferred first (the local region, then the others): unwraps ask a key's KEKs
         * in this order and new DEKs are generated by the first that can. Absent: the order the key lists them.
         */
        preference: z.array(KekGlobSchema).max(64).default([]),
        /**
         * A denial (KMS_DENIED) of one KEK of a key under several: `any` stops that key version being served
         * until the KEK unwraps again or is removed from it (a denial usually means someone revoked access on
         * purpose); `all` serves it while any of its KEKs unwraps. See docs/security.md.
         */
        revocation: z.enum(REVOCATION_MODES).default('any'),
        /** Per-KEK circuit breaker: a dead KMS costs microseconds per request, not a deadline. */
        breaker: z
          .object({
            /** Calls in a row failing with KMS_UNAVAILABLE or THROTTLED (after retries) that open it. */
            failures: z.number().int().min(1).max(1000).default(5),
            /** How long calls then fail at once, in ms, before one probe call tries the KMS again. */
            openMs: z.number().int().min(1).max(600_000).default(10_000),
          })
          .strict()
          .prefault({}),
        /** Per-adapter settings, keyed by KEK URI scheme; validated here, at start-up, without loading any SDK. */
        adapters: AdapterSettingsSchema.prefault({}),
      })
      .strict()
      .prefault({}),
    /**
     * The Vault-compatible HTTP front door (docs/vault-api.md): KV v2 and Transit for pg_tde and Vault
     * clients. Off unless `listen` is set. TLS 1.3 with `listen.tls`'s certificate, or plain HTTP only
     * with `insecure: true` on a loopback address.
     */
    vault: z
      .object({
        /** `host:port`; absent: no front door. */
        listen: z.string().optional(),
        /** Must be true to serve plain HTTP (loopback only): an explicit acknowledgement, as for `listen.tcp`. */
        insecure: z.boolean().default(false),
        mounts: z
          .object({
            /** KV v2 mount names served. */
            kv: z.array(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/)).default(['secret']),
            /** The Transit mount; null: no Transit. */
            transit: z
              .string()
              .regex(/^[A-Za-z0-9_-]{1,64}$/)
              .nullable()
              .default('transit'),
          })
          .strict()
          .prefault({}),
        /** kmsgw key id prefix of Transit keys, so the same key is usable from the line protocol. */
        transitPrefix: z
          .string()
          .regex(/^[A-Za-z0-9._\-/:]{0,64}$/)
          .default('transit/'),
        /** Largest request body in bytes. */
        maxBodyBytes: z
          .number()
          .int()
          .min(1024)
          .max(64 * 1024 * 1024)
          .default(1024 * 1024),
      })
      .strict()
      .prefault({}),
    /** Who may use which key. Absent: every client may do everything (the development default; a warning is logged). */
    policy: PolicySchema.optional(),
    audit: z
      .object({
        /**
         * The audit log: one hash-chained JSON line per request (docs/audit.md), appended to
         * this file, created with mode 0600. Relative to the config file's folder. Absent: no audit log.
         */
        file: z.string().min(1).optional(),
        /**
         * When appended records are forced to disk: `always` (after every batch, before the next
         * is written), `interval` (every `fsyncIntervalMs`), `never` (left to the OS; still on close).
         */
        fsync: z.enum(['always', 'interval', 'never']).default('interval'),
        /** Period of the `interval` fsync policy, in ms: at most this much of the log is lost on a power cut. */
        fsyncIntervalMs: z.number().int().min(1).max(3_600_000).default(1000),
        /**
         * When records cannot be kept (a write or fsync fails, too much waits for the disk): `false`
         * refuses every request from then on (fail closed); `true` serves on, dropping and counting
         * records and logging warnings (fail open: availability over a complete audit trail).
         */
        failOpen: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    /** The ops HTTP listener: /livez, /readyz and /metrics for probes and Prometheus (docs/operations.md). */
    ops: z
      .object({
        /**
         * `host:port` of the ops listener (`127.0.0.1:9464`); absent: no ops listener. A host that is
         * not loopback is refused unless `allowRemote: true`: the endpoints have no authentication.
         */
        listen: z.string().optional(),
        /** Must be true to serve the ops endpoints on a non-loopback address (they are not authenticated). */
        allowRemote: z.boolean().default(false),
        /** Collect request and KMS call metrics; false only for the benchmark's A/B (gauges stay). */
        metrics: z.boolean().default(true),
      })
      .strict()
      .superRefine((ops, ctx) => {
        const problem = ops.listen === undefined ? undefined : listenProblem(ops.listen, ops.allowRemote);
        if (problem !== undefined) ctx.addIssue({ code: 'custom', path: ['listen'], message: problem });
      })
      .prefault({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        /**
         * `json` (one object a line) or `pretty` (pino-pretty, for people). Absent: `pretty` when
         * stderr is a terminal, else `json`; decided when the logger is made (src/log/logger.ts),
         * since a config is validated where no stderr is in question.
         */
        format: z.enum(['json', 'pretty']).optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    const vault = config.vault;
    if (vault.listen !== undefined) {
      const problem = vaultListenProblem(vault.listen, vault.insecure, config.listen.tls !== undefined);
      if (problem !== undefined) ctx.addIssue({ code: 'custom', path: ['vault', 'listen'], message: problem });
    }
    const { allowedKeks } = config.keys;
    for (const defaultKek of defaultKeks(config.keys.defaultKek)) {
      if (defaultKek.startsWith('local://') && !config.kms.adapters.local.enabled) {
        ctx.addIssue({
          code: 'custom',
          path: ['keys', 'defaultKek'],
          message: `${defaultKek} is a local KEK file, and local:// KEKs are off: name a cloud KEK, or set kms.adapters.local.enabled: true (development only)`,
        });
      }
      if (allowedKeks !== undefined && !matchesAny(allowedKeks)(defaultKek)) {
        ctx.addIssue({ code: 'custom', path: ['keys', 'allowedKeks'], message: `must allow keys.defaultKek (${defaultKek})` });
      }
    }
  });

export type Config = z.output<typeof ConfigSchema>;
export type ConfigInput = z.input<typeof ConfigSchema>;
