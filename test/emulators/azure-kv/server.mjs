#!/usr/bin/env node
// A small Azure Key Vault (keys data plane) emulator for tests: speaks the Key Vault REST API over HTTPS on
// 127.0.0.1 so the real, unmodified @azure/keyvault-keys SDK talks to it. RSA keys and Managed-HSM-style oct-HSM
// keys; wrap/unwrap/encrypt/decrypt with real node:crypto. See README.md.
//
//   node test/emulators/azure-kv/server.mjs --port <n> --cert <pem> --key <pem> [--state <file>] [--faults <file>]
//     [--tenant <id>] [--exit-with-stdin]
//
// --port 0 picks a free port. When ready it prints exactly one line "listening <port>" on stdout.
// --cert/--key: the TLS server certificate and private key (PEM). HTTPS only; the test helper makes a
//   self-signed one per run (SAN DNS:localhost, IP:127.0.0.1).
// --state <file>: keys (every version, with its private key material) are loaded from it at start and written to
//   it (atomically) after every change. Without it the state lives in memory only.
//   Test hooks are read from <state>.faults.json on every request (see README.md).
// --faults <file>: use this faults file instead of <state>.faults.json.
// --tenant <id>: the tenant named in the WWW-Authenticate challenge (default 00000000-0000-0000-0000-000000000000).
// --exit-with-stdin: exit when stdin closes (the parent died or closed the pipe), so no emulator is orphaned.
//
// SIGTERM / SIGINT: close the listener and every open (keep-alive) connection, exit 0.
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  generateKeyPair,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  randomUUID,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { promisify } from 'node:util';
import { faultsFile, fatal, handleShutdown, openStateFile, parseEmulatorArgs, printListening } from '../common.mjs';

const generateKeyPairAsync = promisify(generateKeyPair);

// ---------------------------------------------------------------------------------------------------------------
// Types (JSDoc)

/**
 * @typedef {'RSA' | 'RSA-HSM' | 'oct-HSM'} Kty
 *
 * @typedef {object} StoredVersion
 * @property {Kty} kty
 * @property {number} keySize bits
 * @property {string[]} keyOps
 * @property {boolean} enabled
 * @property {number} created unix seconds
 * @property {number} updated unix seconds
 * @property {number | null} nbf unix seconds (stored and returned, not enforced)
 * @property {number | null} exp unix seconds (stored and returned, not enforced)
 * @property {Record<string, string> | null} tags
 * @property {string} material RSA: PKCS#8 PEM private key; oct-HSM: base64 of the AES key
 *
 * @typedef {object} StoredKey
 * @property {string[]} order version ids, oldest first; the last one is the current version
 * @property {Record<string, StoredVersion>} versions
 *
 * @typedef {object} State
 * @property {1} format
 * @property {Record<string, StoredKey>} keys by key name
 *
 * @typedef {{ status: number, code: string, message: string, inner?: string, headers?: Record<string, string> }} KvError
 *
 * @typedef {{ t: string, method: string, path: string, op: string | null, key: string | null, version: string | null,
 *   alg: string | null, authorized: boolean, status: number }} LogEntry
 */

// ---------------------------------------------------------------------------------------------------------------
// Arguments

const NAME = 'azure-kv';
const {
  args,
  port: PORT,
  stateFile: STATE_FILE,
  faultsFile: FAULTS_FILE,
  exitWithStdin,
} = parseEmulatorArgs(NAME, {
  cert: { type: 'string' },
  key: { type: 'string' },
  tenant: { type: 'string', default: '00000000-0000-0000-0000-000000000000' },
});
if (!args.cert || !args.key) fatal(NAME, '--cert <pem> and --key <pem> are required (HTTPS only)');
const TENANT = args.tenant;

// ---------------------------------------------------------------------------------------------------------------
// Constants

const CHALLENGE = `Bearer authorization="https://login.microsoftonline.com/${TENANT}", resource="https://vault.azure.net"`;
const KEY_NAME_RE = /^[0-9a-zA-Z-]{1,127}$/;
const API_VERSION_RE = /^(7\.\d+|\d{4}-\d{2}-\d{2})(-preview(\.\d+)?)?$/;
const MAX_BODY = 1024 * 1024;
const ALL_KEY_OPS = ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey', 'import', 'export'];
/** @type {Record<string, { sizes: number[], defaultSize: number, defaultOps: string[] }>} */
const KEY_TYPES = {
  RSA: { sizes: [2048, 3072, 4096], defaultSize: 2048, defaultOps: ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey'] },
  'RSA-HSM': { sizes: [2048, 3072, 4096], defaultSize: 2048, defaultOps: ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey'] },
  'oct-HSM': { sizes: [128, 192, 256], defaultSize: 256, defaultOps: ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'] },
};
/** @type {Record<string, { oaepHash?: string }>} */
const RSA_ALGS = { 'RSA-OAEP': { oaepHash: 'sha1' }, 'RSA-OAEP-256': { oaepHash: 'sha256' }, RSA1_5: {} };
/** @type {Record<string, number>} AES key wrap (RFC 3394) algorithm -> key size in bits */
const KW_ALGS = { A128KW: 128, A192KW: 192, A256KW: 256 };
const KW_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');
/** URL path segment (lower case) -> Key Vault operation name */
const CRYPTO_OPS = /** @type {Record<string, 'wrapKey' | 'unwrapKey' | 'encrypt' | 'decrypt'>} */ ({
  wrapkey: 'wrapKey',
  unwrapkey: 'unwrapKey',
  encrypt: 'encrypt',
  decrypt: 'decrypt',
});
const LOG_LIMIT = 2000;

// ---------------------------------------------------------------------------------------------------------------
// State

const { state, save } = openStateFile({
  name: NAME,
  file: STATE_FILE,
  /** @type {State} */
  initial: { format: 1, keys: {} },
  isValid: (loaded) => loaded?.format === 1 && typeof loaded.keys === 'object' && loaded.keys !== null,
  invalid: 'not an azure-kv emulator state file (format 1)',
});

/** @type {LogEntry[]} */
const requestLog = [];

// ---------------------------------------------------------------------------------------------------------------
// Errors (Key Vault shape: {"error":{"code","message","innererror":{"code"}}})

/**
 * @param {number} status
 * @param {string} code
 * @param {string} message
 * @param {string} [inner] innererror.code
 * @returns {KvError}
 */
function kvError(status, code, message, inner) {
  return { status, code, message, ...(inner ? { inner } : {}) };
}

/** @param {string} message */
function badParameter(message) {
  return kvError(400, 'BadParameter', message);
}

/**
 * @param {string} name
 * @param {string} [version]
 */
function keyNotFound(name, version) {
  return kvError(
    404,
    'KeyNotFound',
    `A key with (name/id) ${name}${version ? `/${version}` : ''} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182`,
  );
}

/** @param {unknown} err */
function isKvError(err) {
  return typeof err === 'object' && err !== null && 'status' in err && 'code' in err && 'message' in err;
}

// ---------------------------------------------------------------------------------------------------------------
// Keys

const now = () => Math.floor(Date.now() / 1000);

/**
 * @param {string} base e.g. https://localhost:8443
 * @param {string} name
 * @param {string} version
 * @param {StoredVersion} v
 */
function keyBundle(base, name, version, v) {
  /** @type {Record<string, unknown>} */
  const key = { kid: `${base}/keys/${name}/${version}`, kty: v.kty, key_ops: v.keyOps };
  if (v.kty !== 'oct-HSM') {
    const jwk = createPublicKey(v.material).export({ format: 'jwk' });
    key.n = jwk.n;
    key.e = jwk.e;
  }
  return { key, attributes: attributes(v), ...(v.tags ? { tags: v.tags } : {}) };
}

/** @param {StoredVersion} v */
function attributes(v) {
  return {
    enabled: v.enabled,
    ...(v.nbf !== null ? { nbf: v.nbf } : {}),
    ...(v.exp !== null ? { exp: v.exp } : {}),
    created: v.created,
    updated: v.updated,
    recoveryLevel: 'Recoverable+Purgeable',
    recoverableDays: 90,
    exportable: false,
  };
}

/**
 * Finds a key version; an empty version means the current (latest) one. 404 KeyNotFound if missing; with `op`,
 * 403 KeyDisabled if the version is disabled.
 * @param {string} name
 * @param {string} version
 * @param {string | null} op operation name for the disabled-key check (null: no check)
 * @returns {{ version: string, v: StoredVersion }}
 */
function lookup(name, version, op) {
  const k = state.keys[name];
  const id = version || k?.order.at(-1);
  const v = k && id ? k.versions[id] : undefined;
  if (!v || !id) throw keyNotFound(name, version);
  if (op && !v.enabled) throw kvError(403, 'Forbidden', `Operation ${op} is not allowed on a disabled key.`, 'KeyDisabled');
  return { version: id, v };
}

/**
 * @param {unknown} ops
 * @param {string[]} fallback
 * @returns {string[]}
 */
function parseKeyOps(ops, fallback) {
  if (ops === undefined || ops === null) return [...fallback];
  if (!Array.isArray(ops)) throw badParameter('Property key_ops must be an array.');
  for (const op of ops) {
    if (!ALL_KEY_OPS.includes(op)) throw badParameter(`Invalid key operation '${String(op)}'.`);
  }
  return [...new Set(/** @type {string[]} */ (ops))];
}

/**
 * @param {unknown} value
 * @param {string} field
 * @returns {number | null}
 */
function optSeconds(value, field) {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number' || !Number.isFinite(value)) throw badParameter(`Property attributes.${field} must be a number.`);
  return Math.floor(value);
}

/**
 * @param {unknown} tags
 * @returns {Record<string, string> | null}
 */
function parseTags(tags) {
  if (tags === undefined || tags === null) return null;
  if (typeof tags !== 'object' || Array.isArray(tags)) throw badParameter('Property tags must be an object.');
  return /** @type {Record<string, string>} */ (tags);
}

/**
 * POST /keys/{name}/create: a new key, or a new (current) version of an existing one.
 * @param {string} base
 * @param {string} name
 * @param {Record<string, any>} body
 */
async function createKey(base, name, body) {
  const kty = body.kty;
  if (typeof kty !== 'string' || kty === '') throw badParameter('Property kty is required.');
  const type = KEY_TYPES[kty];
  if (!type) {
    throw badParameter(`The azure-kv emulator does not support key type '${kty}' (supported: RSA, RSA-HSM, oct-HSM).`);
  }
  const keySize = body.key_size ?? type.defaultSize;
  if (!type.sizes.includes(keySize)) {
    throw badParameter(`Invalid key size ${String(keySize)} for key type ${kty}; supported: ${type.sizes.join(', ')}.`);
  }
  if (body.public_exponent !== undefined && body.public_exponent !== null && body.public_exponent !== 65537) {
    throw badParameter('The azure-kv emulator supports only public_exponent 65537.');
  }
  const keyOps = parseKeyOps(body.key_ops, type.defaultOps);
  const attrs = body.attributes ?? {};
  const tags = parseTags(body.tags);
  const nbf = optSeconds(attrs.nbf, 'nbf');
  const exp = optSeconds(attrs.exp, 'exp');

  /** @type {string} */
  let material;
  if (kty === 'oct-HSM') {
    material = randomBytes(keySize / 8).toString('base64');
  } else {
    const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: keySize, publicExponent: 65537 });
    material = /** @type {string} */ (privateKey.export({ format: 'pem', type: 'pkcs8' }));
  }
  const t = now();
  /** @type {StoredVersion} */
  const v = {
    kty,
    keySize,
    keyOps,
    enabled: typeof attrs.enabled === 'boolean' ? attrs.enabled : true,
    created: t,
    updated: t,
    nbf,
    exp,
    tags,
    material,
  };
  const version = randomBytes(16).toString('hex');
  const k = (state.keys[name] ??= { order: [], versions: {} });
  k.versions[version] = v;
  k.order.push(version);
  save();
  return keyBundle(base, name, version, v);
}

/**
 * PATCH /keys/{name}/{version?}: attributes (enabled, nbf, exp), key_ops, tags. Allowed on a disabled key.
 * @param {string} base
 * @param {string} name
 * @param {string} version
 * @param {Record<string, any>} body
 */
function updateKey(base, name, version, body) {
  const found = lookup(name, version, null);
  const v = found.v;
  const attrs = body.attributes ?? {};
  if (attrs.enabled !== undefined && attrs.enabled !== null) {
    if (typeof attrs.enabled !== 'boolean') throw badParameter('Property attributes.enabled must be a boolean.');
  }
  const keyOps = body.key_ops !== undefined && body.key_ops !== null ? parseKeyOps(body.key_ops, v.keyOps) : null;
  const tags = body.tags !== undefined && body.tags !== null ? parseTags(body.tags) : null;
  const nbf = optSeconds(attrs.nbf, 'nbf');
  const exp = optSeconds(attrs.exp, 'exp');
  if (typeof attrs.enabled === 'boolean') v.enabled = attrs.enabled;
  if (nbf !== null) v.nbf = nbf;
  if (exp !== null) v.exp = exp;
  if (keyOps) v.keyOps = keyOps;
  if (tags) v.tags = tags;
  v.updated = now();
  save();
  return keyBundle(base, name, found.version, v);
}

/**
 * Offset paging with $skiptoken, like Key Vault's nextLink (maxresults 1..25, default 25).
 * @template T
 * @param {T[]} items
 * @param {URL} url
 * @param {string} base
 * @returns {{ value: T[], nextLink: string | null }}
 */
function paginate(items, url, base) {
  const maxParam = url.searchParams.get('maxresults');
  const max = maxParam === null || maxParam === '' ? 25 : Number(maxParam);
  if (!Number.isInteger(max) || max < 1 || max > 25) throw badParameter('Invalid maxresults: must be between 1 and 25.');
  const skipParam = url.searchParams.get('$skiptoken');
  const start = skipParam ? Number(skipParam) : 0;
  if (!Number.isInteger(start) || start < 0) throw badParameter('Invalid $skiptoken.');
  const value = items.slice(start, start + max);
  let nextLink = null;
  if (start + max < items.length) {
    const next = new URL(`${base}${url.pathname}`);
    next.searchParams.set('api-version', url.searchParams.get('api-version') ?? '');
    next.searchParams.set('$skiptoken', String(start + max));
    next.searchParams.set('maxresults', String(max));
    nextLink = next.toString();
  }
  return { value, nextLink };
}

// ---------------------------------------------------------------------------------------------------------------
// Crypto

/**
 * Raw RSA + PKCS#1 v1.5 unpadding in JS: Node 20 refuses RSA_PKCS1_PADDING for privateDecrypt (CVE-2023-46809),
 * and constant-time behaviour does not matter in a test emulator.
 * @param {import('node:crypto').KeyObject} priv
 * @param {Buffer} ciphertext
 */
function rsa15Decrypt(priv, ciphertext) {
  const em = privateDecrypt({ key: priv, padding: constants.RSA_NO_PADDING }, ciphertext);
  if (em[0] !== 0x00 || em[1] !== 0x02) throw new Error('decryption error');
  const sep = em.indexOf(0x00, 2);
  if (sep < 10) throw new Error('decryption error');
  return em.subarray(sep + 1);
}

/**
 * @param {'wrapKey' | 'unwrapKey' | 'encrypt' | 'decrypt'} op
 * @param {StoredVersion} v
 * @param {string} alg
 * @param {Buffer} value
 * @returns {Buffer}
 */
function runCrypto(op, v, alg, value) {
  const forward = op === 'wrapKey' || op === 'encrypt';
  const failed = () => badParameter('The parameter is incorrect.');
  if (v.kty === 'oct-HSM') {
    const bits = KW_ALGS[alg];
    if (bits === undefined || op === 'encrypt' || op === 'decrypt') {
      throw badParameter(
        `Algorithm '${alg}' is not supported for operation ${op} on key type oct-HSM (the emulator supports A128KW/A192KW/A256KW wrapKey/unwrapKey).`,
      );
    }
    if (bits !== v.keySize) throw badParameter(`Algorithm '${alg}' requires a ${bits}-bit key; this key has ${v.keySize} bits.`);
    try {
      const key = Buffer.from(v.material, 'base64');
      const c = forward ? createCipheriv(`id-aes${bits}-wrap`, key, KW_IV) : createDecipheriv(`id-aes${bits}-wrap`, key, KW_IV);
      return Buffer.concat([c.update(value), c.final()]);
    } catch {
      throw failed();
    }
  }
  const params = RSA_ALGS[alg];
  if (!params) throw badParameter(`Algorithm '${alg}' is not supported for key type ${v.kty}.`);
  const priv = createPrivateKey(v.material);
  try {
    if (alg === 'RSA1_5') {
      return forward ? publicEncrypt({ key: priv, padding: constants.RSA_PKCS1_PADDING }, value) : rsa15Decrypt(priv, value);
    }
    const opts = { key: priv, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: params.oaepHash };
    return forward ? publicEncrypt(opts, value) : privateDecrypt(opts, value);
  } catch {
    throw failed();
  }
}

/**
 * POST /keys/{name}/{version?}/{wrapkey|unwrapkey|encrypt|decrypt}
 * @param {string} base
 * @param {string} name
 * @param {string} version
 * @param {'wrapKey' | 'unwrapKey' | 'encrypt' | 'decrypt'} op
 * @param {Record<string, any>} body
 */
function cryptoOp(base, name, version, op, body) {
  const found = lookup(name, version, op);
  const v = found.v;
  if (!v.keyOps.includes(op)) {
    throw kvError(403, 'Forbidden', `Operation ${op} is not permitted on this key.`, 'KeyOperationForbidden');
  }
  if (typeof body.alg !== 'string' || body.alg === '') throw badParameter('Property alg is required.');
  if (typeof body.value !== 'string') throw badParameter('Property value is required.');
  if (!/^[A-Za-z0-9_\-+/]*=*$/.test(body.value)) throw badParameter('Property value must be base64url.');
  const out = runCrypto(op, v, body.alg, Buffer.from(body.value, 'base64url'));
  return { kid: `${base}/keys/${name}/${found.version}`, value: out.toString('base64url') };
}

// ---------------------------------------------------------------------------------------------------------------
// Routing

/**
 * @typedef {{ op: string, name: string | null, version: string | null, run: (base: string, url: URL, body: Record<string, any>) => unknown | Promise<unknown> }} Route
 */

/**
 * Maps a request to an operation. Path segments: /keys, /keys/{name}/create, /keys/{name}/versions,
 * /keys/{name}[/{version}], /keys/{name}/{version}/{wrapkey|unwrapkey|encrypt|decrypt}; an empty version
 * (e.g. /keys/k//wrapkey, /keys/k/) means the current version.
 * @param {string} method
 * @param {string} pathname
 * @returns {Route}
 */
function route(method, pathname) {
  const p = pathname
    .split('/')
    .slice(1)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        throw badParameter(`The request URI is malformed: ${pathname}`);
      }
    });
  if (p[0] !== 'keys') throw kvError(404, 'NotFound', `The azure-kv emulator has no route for ${method} ${pathname}.`);
  if (p.length === 1 || (p.length === 2 && p[1] === '')) {
    if (method !== 'GET') throw notImplemented(method, pathname);
    return {
      op: 'list',
      name: null,
      version: null,
      run: (base, url) => {
        const names = Object.keys(state.keys).sort();
        const page = paginate(names, url, base);
        return {
          value: page.value.map((n) => {
            const k = /** @type {StoredKey} */ (state.keys[n]);
            const id = /** @type {string} */ (k.order.at(-1));
            const v = /** @type {StoredVersion} */ (k.versions[id]);
            return { kid: `${base}/keys/${n}`, attributes: attributes(v), ...(v.tags ? { tags: v.tags } : {}) };
          }),
          nextLink: page.nextLink,
        };
      },
    };
  }
  const name = /** @type {string} */ (p[1]);
  if (!KEY_NAME_RE.test(name)) throw badParameter(`The request URI contains an invalid name: ${name}`);
  const a = p[2];
  const b = p[3];
  if (p.length > 4) throw notImplemented(method, pathname);

  if (a === 'create' && p.length === 3) {
    if (method !== 'POST') throw notImplemented(method, pathname);
    return { op: 'create', name, version: null, run: (base, _url, body) => createKey(base, name, body) };
  }
  if (a === 'versions' && p.length === 3) {
    if (method !== 'GET') throw notImplemented(method, pathname);
    return {
      op: 'versions',
      name,
      version: null,
      run: (base, url) => {
        const k = state.keys[name];
        if (!k) throw keyNotFound(name);
        const page = paginate(k.order, url, base);
        return {
          value: page.value.map((id) => {
            const v = /** @type {StoredVersion} */ (k.versions[id]);
            return { kid: `${base}/keys/${name}/${id}`, attributes: attributes(v), ...(v.tags ? { tags: v.tags } : {}) };
          }),
          nextLink: page.nextLink,
        };
      },
    };
  }
  const version = a ?? '';
  if (b !== undefined) {
    const op = CRYPTO_OPS[b.toLowerCase()];
    if (!op || method !== 'POST') throw notImplemented(method, pathname);
    return { op, name, version, run: (base, _url, body) => cryptoOp(base, name, version, op, body) };
  }
  if (method === 'GET') {
    return {
      op: 'get',
      name,
      version,
      run: (base) => {
        const found = lookup(name, version, 'get');
        return keyBundle(base, name, found.version, found.v);
      },
    };
  }
  if (method === 'PATCH') return { op: 'update', name, version, run: (base, _url, body) => updateKey(base, name, version, body) };
  throw notImplemented(method, pathname);
}

/**
 * @param {string} method
 * @param {string} pathname
 */
function notImplemented(method, pathname) {
  return kvError(501, 'NotImplemented', `The azure-kv emulator does not implement ${method} ${pathname}.`);
}

// ---------------------------------------------------------------------------------------------------------------
// Faults (test hooks): <state>.faults.json, re-read on every request. See README.md.

/** @typedef {{ name: string, times?: number, retryAfter?: number, ops?: string[] }} FaultEntry */

const faults = faultsFile({
  name: NAME,
  file: FAULTS_FILE,
  // An HTTP status 400-599, or RESET.
  isFaultKey: (k) => k === 'RESET' || /^[45]\d\d$/.test(k),
  /** @returns {FaultEntry} */
  parseEntry: (e) => ({
    name: String(e?.name ?? '*'),
    ...(e?.times !== undefined ? { times: Number(e.times) } : {}),
    ...(e?.retryAfter !== undefined ? { retryAfter: Number(e.retryAfter) } : {}),
    ...(Array.isArray(e?.ops) ? { ops: e.ops.map(String) } : {}),
  }),
});

/**
 * The error a faults-file rule answers with.
 * @param {number} status
 * @param {FaultEntry} entry
 * @returns {KvError}
 */
function faultError(status, entry) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (status === 429 || entry.retryAfter !== undefined) headers['retry-after'] = String(entry.retryAfter ?? 1);
  /** @type {KvError} */
  let err;
  switch (status) {
    case 403:
      err = kvError(
        403,
        'Forbidden',
        'Caller is not authorized to perform action on resource. If role assignments, deny assignments or role definitions were changed recently, please observe propagation time. (azure-kv emulator faults file)',
        'ForbiddenByRbac',
      );
      break;
    case 429:
      err = kvError(
        429,
        'Throttled',
        'Request was not processed because too many requests were received. Reason: The number of requests exceeded the vault limits. (azure-kv emulator faults file)',
      );
      break;
    case 500:
      err = kvError(500, 'InternalServerError', 'An unexpected error occurred. (azure-kv emulator faults file)');
      break;
    case 503:
      err = kvError(503, 'ServiceUnavailable', 'The service is currently unavailable. (azure-kv emulator faults file)');
      break;
    default:
      err = kvError(status, 'InjectedFault', `Injected HTTP ${status} (azure-kv emulator faults file).`);
  }
  err.headers = headers;
  return err;
}

/**
 * Applies the faults file to one request: delays it, or returns the fault to answer with.
 * @param {string} op
 * @param {string} resource
 * @returns {Promise<KvError | 'RESET' | null>}
 */
async function applyFaults(op, resource) {
  // resource: "name" or "name/version" ("" for GET /keys)
  const rule = await faults.apply(resource, (r) => !r.entry.ops || r.entry.ops.includes(op));
  if (!rule) return null;
  return rule.key === 'RESET' ? 'RESET' : faultError(Number(rule.key), rule.entry);
}

// ---------------------------------------------------------------------------------------------------------------
// Server

/**
 * @param {import('node:http').IncomingMessage} req
 * @param {import('node:http').ServerResponse} res
 */
async function handle(req, res) {
  const url = new URL(req.url ?? '/', 'https://emulator.invalid');
  const method = req.method ?? 'GET';
  /** @type {LogEntry} */
  const log = {
    t: new Date().toISOString(),
    method,
    path: url.pathname,
    op: null,
    key: null,
    version: null,
    alg: null,
    authorized: false,
    status: 0,
  };
  /**
   * @param {number} status
   * @param {unknown} obj
   * @param {Record<string, string>} [headers]
   */
  const send = (status, obj, headers = {}) => {
    log.status = status;
    const buf = Buffer.from(JSON.stringify(obj));
    res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': buf.length,
      'x-ms-request-id': randomUUID(),
      'x-ms-keyvault-service-version': '1.9.0.0 (azure-kv emulator)',
      ...headers,
    });
    res.end(buf);
  };
  /** @param {KvError} e */
  const sendError = (e) =>
    send(e.status, { error: { code: e.code, message: e.message, ...(e.inner ? { innererror: { code: e.inner } } : {}) } }, e.headers);

  // Test-only endpoints, no auth, not logged.
  if (url.pathname === '/ping' && method === 'GET') return send(200, { status: 'ok' });
  if (url.pathname === '/_emulator/requests' && method === 'GET') return send(200, { value: requestLog });

  pushLog(log);
  const body = await readBody(req);
  try {
    const r = route(method, url.pathname);
    log.op = r.op;
    log.key = r.name;
    log.version = r.version;
  } catch {
    // not a valid route: reported below (after auth, as Key Vault does)
  }

  // Challenge auth, as Key Vault does: no bearer token -> 401 with the challenge. Tokens are NOT validated.
  const auth = req.headers.authorization ?? '';
  if (!/^Bearer\s+\S+/i.test(auth)) {
    return send(
      401,
      { error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } },
      {
        'www-authenticate': CHALLENGE,
      },
    );
  }
  log.authorized = true;

  try {
    if (body === null) throw badParameter(`The request body is larger than ${MAX_BODY} bytes.`);
    const apiVersion = url.searchParams.get('api-version');
    if (!apiVersion) throw badParameter('The api-version query parameter (?api-version=) is required for all requests.');
    if (!API_VERSION_RE.test(apiVersion))
      throw badParameter(
        `The specified version (${apiVersion}) is not recognized. Consider using the latest supported version (2025-07-01).`,
      );

    const r = route(method, url.pathname);
    /** @type {Record<string, any>} */
    let json = {};
    if (body.length > 0) {
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        throw badParameter('The request body is not valid JSON.');
      }
      if (typeof json !== 'object' || json === null || Array.isArray(json)) throw badParameter('The request body must be a JSON object.');
    }
    if (typeof json.alg === 'string') log.alg = json.alg;

    const resource = r.name === null ? '' : r.version ? `${r.name}/${r.version}` : r.name;
    const fault = await applyFaults(r.op, resource);
    if (fault === 'RESET') {
      log.status = -1;
      req.socket.destroy();
      return;
    }
    if (fault) throw fault;

    const base = `https://${req.headers.host ?? `127.0.0.1:${server.address()?.port}`}`;
    const result = /** @type {{ kid?: unknown, key?: { kid?: unknown } }} */ (await r.run(base, url, json));
    // Log the version actually used (an empty version in the path means the current one; create makes one).
    const kid = r.op === 'list' || r.op === 'versions' ? undefined : (result.kid ?? result.key?.kid);
    if (typeof kid === 'string') log.version = kid.slice(kid.lastIndexOf('/') + 1);
    send(200, result);
  } catch (err) {
    if (isKvError(err)) return sendError(/** @type {KvError} */ (err));
    process.stderr.write(`azure-kv emulator: ${method} ${url.pathname} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    sendError(kvError(500, 'InternalServerError', `Internal error in the azure-kv emulator: ${String(err)}`));
  }
}

/** @param {LogEntry} entry */
function pushLog(entry) {
  requestLog.push(entry);
  if (requestLog.length > LOG_LIMIT) requestLog.splice(0, requestLog.length - LOG_LIMIT);
}

/**
 * @param {import('node:http').IncomingMessage} req
 * @returns {Promise<Buffer | null>} null when larger than MAX_BODY
 */
function readBody(req) {
  return new Promise((resolve, reject) => {
    /** @type {Buffer[]} */
    const chunks = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (/** @type {Buffer} */ c) => {
      size += c.length;
      if (size > MAX_BODY) tooBig = true;
      else chunks.push(c);
    });
    req.on('end', () => resolve(tooBig ? null : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

let tlsOptions;
try {
  tlsOptions = { cert: readFileSync(args.cert), key: readFileSync(args.key) };
} catch (err) {
  fatal(NAME, `cannot read --cert/--key: ${err instanceof Error ? err.message : String(err)}`);
}

const server = createServer(/** @type {import('node:https').ServerOptions} */ (tlsOptions), (req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`azure-kv emulator: request failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});
server.on('tlsClientError', () => {
  // A client that does not trust our certificate aborts the handshake: expected in tests, not worth a log line.
});
server.on('error', (err) => fatal(NAME, `cannot listen on 127.0.0.1:${PORT}: ${err.message}`));
server.listen(PORT, '127.0.0.1', () => {
  const addr = server.address();
  printListening(typeof addr === 'object' && addr ? addr.port : PORT);
});

handleShutdown({
  exitWithStdin,
  close: (done) => {
    server.close(done);
    server.closeAllConnections(); // keep-alive connections would otherwise hold close() open
  },
});
