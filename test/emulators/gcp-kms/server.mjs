#!/usr/bin/env node
// A small Google Cloud KMS emulator for tests: serves the real google.cloud.kms.v1.KeyManagementService protos
// (from @google-cloud/kms) over plaintext gRPC on 127.0.0.1. Symmetric ENCRYPT_DECRYPT keys only; see README.md.
//
//   node test/emulators/gcp-kms/server.mjs --port <n> [--state <file>] [--exit-with-stdin]
//
// --port 0 picks a free port. When ready it prints exactly one line "listening <port>" on stdout.
// --state <file>: the state (key rings, keys, versions with their AES key material) is loaded from it at start
//   and written to it (atomically) after every change. Without it the state lives in memory only.
//   Test hooks are read from <file>.faults.json on every call (see README.md).
// --faults <file>: use this faults file instead of <state>.faults.json.
// --exit-with-stdin: exit when stdin closes (the parent died or closed the pipe), so no emulator is orphaned.
//
// SIGTERM / SIGINT shut it down (exit 0).
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { faultsFile, fatal, handleShutdown, openStateFile, parseEmulatorArgs, printListening } from '../common.mjs';
import { crc32c } from './crc32c.mjs';

const { status: Status } = grpc;

// ---------------------------------------------------------------------------------------------------------------
// Types (JSDoc)

/**
 * @typedef {'ENABLED' | 'DISABLED' | 'DESTROY_SCHEDULED' | 'DESTROYED'} VersionState
 *
 * @typedef {object} StoredVersion
 * @property {VersionState} state
 * @property {string} createTime ISO 8601
 * @property {string | null} destroyTime ISO 8601, set while DESTROY_SCHEDULED (and once DESTROYED)
 * @property {string | null} destroyEventTime ISO 8601, set once DESTROYED
 * @property {string | null} material base64 of the 32-byte AES-256 key; null once DESTROYED
 *
 * @typedef {object} StoredKey
 * @property {string} createTime
 * @property {string} uid hex, 8 random bytes; embedded in every ciphertext so Decrypt can tell keys apart
 * @property {string | null} primary version id ("1", "2", ...) or null
 * @property {number} nextVersion
 * @property {Record<string, string>} labels
 * @property {number} destroyScheduledSeconds
 * @property {Record<string, StoredVersion>} versions
 *
 * @typedef {object} State
 * @property {1} format
 * @property {Record<string, { createTime: string }>} keyRings by full KeyRing name
 * @property {Record<string, StoredKey>} cryptoKeys by full CryptoKey name
 *
 * @typedef {{ code: number, details: string, metadata?: grpc.Metadata }} RpcError
 *
 * @typedef {{ value: string | number } | null | undefined} Int64Value
 */

// ---------------------------------------------------------------------------------------------------------------
// Arguments

const NAME = 'gcp-kms';
const { port: PORT, stateFile: STATE_FILE, faultsFile: FAULTS_FILE, exitWithStdin } = parseEmulatorArgs(NAME, {});

// ---------------------------------------------------------------------------------------------------------------
// Constants

const MAX_PLAINTEXT = 64 * 1024;
const MAX_AAD = 64 * 1024;
const DEFAULT_DESTROY_SCHEDULED_SECONDS = 30 * 24 * 3600;
/** Ciphertext layout: magic(1) | key uid(8) | version(4, BE) | nonce(12) | AES-256-GCM ciphertext | tag(16). */
const MAGIC = 0x4b;
const HEADER_LEN = 1 + 8 + 4;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const ID_RE = /^[a-zA-Z0-9_-]{1,63}$/;
const LOCATION_RE = /^projects\/([^/]+)\/locations\/([^/]+)$/;
const KEY_RING_RE = /^projects\/([^/]+)\/locations\/([^/]+)\/keyRings\/([^/]+)$/;
const CRYPTO_KEY_RE = /^(projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+)\/cryptoKeys\/([^/]+)$/;
const VERSION_RE = /^(projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+)\/cryptoKeyVersions\/([^/]+)$/;

// ---------------------------------------------------------------------------------------------------------------
// State

const { state, save } = openStateFile({
  name: NAME,
  file: STATE_FILE,
  /** @type {State} */
  initial: { format: 1, keyRings: {}, cryptoKeys: {} },
  isValid: (loaded) => loaded?.format === 1 && typeof loaded.keyRings === 'object' && typeof loaded.cryptoKeys === 'object',
  invalid: 'not a gcp-kms emulator state file (format 1)',
});

/** Moves versions whose scheduled destruction time has passed to DESTROYED (and drops their key material). */
function advanceDestruction() {
  const now = Date.now();
  let changed = false;
  for (const key of Object.values(state.cryptoKeys)) {
    for (const v of Object.values(key.versions)) {
      if (v.state === 'DESTROY_SCHEDULED' && v.destroyTime && Date.parse(v.destroyTime) <= now) {
        v.state = 'DESTROYED';
        v.destroyEventTime = new Date().toISOString();
        v.material = null;
        changed = true;
      }
    }
  }
  if (changed) save();
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/**
 * @param {number} code
 * @param {string} details
 * @returns {RpcError}
 */
function rpcError(code, details) {
  return { code, details };
}

/** @param {string} name */
function notFound(name) {
  return rpcError(Status.NOT_FOUND, `Resource '${name}' was not found`);
}

/**
 * @param {string} iso
 * @returns {{ seconds: string, nanos: number }}
 */
function timestamp(iso) {
  const ms = Date.parse(iso);
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}

/** @param {number} n */
function int64(n) {
  return { value: String(n) };
}

/**
 * True when the optional Int64Value was set (proto3 message presence).
 * @param {Int64Value} v
 * @returns {v is { value: string | number }}
 */
function isSet(v) {
  return v !== null && v !== undefined;
}

/**
 * Validates an optional request checksum; throws INVALID_ARGUMENT like Cloud KMS on mismatch.
 * @param {Int64Value} given
 * @param {Uint8Array} data
 * @param {string} checksumField
 * @param {string} dataField
 * @returns {boolean} whether a checksum was given (and verified)
 */
function verifyCrc(given, data, checksumField, dataField) {
  if (!isSet(given)) return false;
  if (Number(given.value) !== crc32c(data)) {
    throw rpcError(Status.INVALID_ARGUMENT, `The checksum in field ${checksumField} did not match the data in field ${dataField}.`);
  }
  return true;
}

/**
 * @param {string} name
 * @returns {{ keyName: string, key: StoredKey }}
 */
function getKey(name) {
  if (!CRYPTO_KEY_RE.test(name)) throw invalidName(name, 'CryptoKey');
  const key = state.cryptoKeys[name];
  if (!key) throw notFound(name);
  return { keyName: name, key };
}

/**
 * @param {string} name
 * @returns {{ keyName: string, key: StoredKey, id: string, version: StoredVersion }}
 */
function getVersion(name) {
  const m = VERSION_RE.exec(name);
  if (!m) throw invalidName(name, 'CryptoKeyVersion');
  const keyName = /** @type {string} */ (m[1]);
  const id = /** @type {string} */ (m[2]);
  const key = state.cryptoKeys[keyName];
  const version = key?.versions[id];
  if (!key || !version) throw notFound(name);
  return { keyName, key, id, version };
}

/**
 * @param {string} name
 * @param {string} kind
 */
function invalidName(name, kind) {
  return rpcError(Status.INVALID_ARGUMENT, `Resource name [${name}] does not match any known pattern for a ${kind}.`);
}

/**
 * @param {string} keyName
 * @param {string} id
 * @param {StoredVersion} v
 */
function versionToProto(keyName, id, v) {
  return {
    name: `${keyName}/cryptoKeyVersions/${id}`,
    state: v.state,
    protectionLevel: 'SOFTWARE',
    algorithm: 'GOOGLE_SYMMETRIC_ENCRYPTION',
    createTime: timestamp(v.createTime),
    generateTime: timestamp(v.createTime),
    destroyTime: v.destroyTime ? timestamp(v.destroyTime) : null,
    destroyEventTime: v.destroyEventTime ? timestamp(v.destroyEventTime) : null,
  };
}

/**
 * @param {string} keyName
 * @param {StoredKey} key
 */
function keyToProto(keyName, key) {
  const primary = key.primary !== null ? key.versions[key.primary] : undefined;
  return {
    name: keyName,
    primary: primary && key.primary !== null ? versionToProto(keyName, key.primary, primary) : null,
    purpose: 'ENCRYPT_DECRYPT',
    createTime: timestamp(key.createTime),
    versionTemplate: { protectionLevel: 'SOFTWARE', algorithm: 'GOOGLE_SYMMETRIC_ENCRYPTION' },
    labels: key.labels,
    importOnly: false,
    destroyScheduledDuration: { seconds: String(key.destroyScheduledSeconds), nanos: 0 },
  };
}

/**
 * @param {StoredKey} key
 * @returns {string}
 */
function newVersion(key) {
  const id = String(key.nextVersion++);
  key.versions[id] = {
    state: 'ENABLED',
    createTime: new Date().toISOString(),
    destroyTime: null,
    destroyEventTime: null,
    material: randomBytes(32).toString('base64'),
  };
  return id;
}

/**
 * FAILED_PRECONDITION unless the version is ENABLED.
 * @param {string} versionName
 * @param {StoredVersion} v
 */
function requireEnabled(versionName, v) {
  if (v.state !== 'ENABLED') {
    throw rpcError(Status.FAILED_PRECONDITION, `${versionName} is not enabled, current state is: ${v.state}.`);
  }
}

/**
 * Simple offset-based paging.
 * @template T
 * @param {T[]} items
 * @param {{ pageSize?: number, pageToken?: string }} req
 * @returns {{ page: T[], nextPageToken: string, totalSize: number }}
 */
function paginate(items, req) {
  const start = req.pageToken ? Number(req.pageToken) : 0;
  if (!Number.isInteger(start) || start < 0) throw rpcError(Status.INVALID_ARGUMENT, 'Invalid page_token.');
  const size = req.pageSize && req.pageSize > 0 ? Math.min(req.pageSize, 1000) : 1000;
  const page = items.slice(start, start + size);
  const next = start + size < items.length ? String(start + size) : '';
  return { page, nextPageToken: next, totalSize: items.length };
}

/** @param {Record<string, unknown>} obj */
function sortedVersionIds(obj) {
  return Object.keys(obj).sort((a, b) => Number(a) - Number(b));
}

// ---------------------------------------------------------------------------------------------------------------
// Faults (test hooks): <state>.faults.json, re-read on every call. See README.md.

/** @typedef {{ name: string, times?: number, retryDelayMs?: number }} FaultEntry */

const faults = faultsFile({
  name: NAME,
  file: FAULTS_FILE,
  // Any gRPC status name except OK.
  isFaultKey: (k) => k in Status && k !== 'OK',
  /** @returns {FaultEntry} */
  parseEntry: (e) => ({
    name: String(e?.name),
    times: e?.times,
    ...(typeof e?.retryDelayMs === 'number' && e.retryDelayMs >= 0 ? { retryDelayMs: e.retryDelayMs } : {}),
  }),
});

/** @type {Record<string, string>} */
const PERMISSIONS = {
  Encrypt: 'cloudkms.cryptoKeyVersions.useToEncrypt',
  Decrypt: 'cloudkms.cryptoKeyVersions.useToDecrypt',
  CreateKeyRing: 'cloudkms.keyRings.create',
  GetKeyRing: 'cloudkms.keyRings.get',
  CreateCryptoKey: 'cloudkms.cryptoKeys.create',
  GetCryptoKey: 'cloudkms.cryptoKeys.get',
};

// Protobuf wire format, just enough for a google.rpc.Status with a google.rpc.RetryInfo in it.

/** @param {number} n a non-negative integer */
function varint(n) {
  const out = [];
  let v = BigInt(n);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Buffer.from(out);
}

/**
 * @param {number} field
 * @param {number} n
 */
function varintField(field, n) {
  return n === 0 ? Buffer.alloc(0) : Buffer.concat([varint(field << 3), varint(n)]);
}

/**
 * @param {number} field
 * @param {Buffer} bytes
 */
function bytesField(field, bytes) {
  return Buffer.concat([varint((field << 3) | 2), varint(bytes.length), bytes]);
}

/**
 * The `grpc-status-details-bin` trailer Cloud KMS sends with a retry hint: a google.rpc.Status with
 * the same code and message and one detail, a google.rpc.RetryInfo { retry_delay }.
 * @param {RpcError} err
 * @param {number} delayMs
 */
function withRetryInfo(err, delayMs) {
  const duration = Buffer.concat([varintField(1, Math.floor(delayMs / 1000)), varintField(2, (delayMs % 1000) * 1_000_000)]);
  const retryInfo = bytesField(1, duration);
  const any = Buffer.concat([bytesField(1, Buffer.from('type.googleapis.com/google.rpc.RetryInfo')), bytesField(2, retryInfo)]);
  const status = Buffer.concat([varintField(1, err.code), bytesField(2, Buffer.from(err.details)), bytesField(3, any)]);
  const metadata = new grpc.Metadata();
  metadata.set('grpc-status-details-bin', status);
  return { ...err, metadata };
}

/**
 * @param {string} codeName the faults-file key, a gRPC status name
 * @param {string} method
 * @param {string} resource
 * @param {FaultEntry} entry
 * @returns {RpcError}
 */
function faultError(codeName, method, resource, entry) {
  const err = faultStatus(codeName, method, resource);
  return entry.retryDelayMs === undefined ? err : withRetryInfo(err, Math.round(entry.retryDelayMs));
}

/**
 * @param {string} codeName
 * @param {string} method
 * @param {string} resource
 * @returns {RpcError}
 */
function faultStatus(codeName, method, resource) {
  const code = /** @type {Record<string, number>} */ (/** @type {unknown} */ (Status))[codeName] ?? Status.UNKNOWN;
  switch (code) {
    case Status.PERMISSION_DENIED:
      return rpcError(
        code,
        `Permission '${PERMISSIONS[method] ?? 'cloudkms.cryptoKeyVersions.use'}' denied on resource '${resource}' (or it may not exist).`,
      );
    case Status.RESOURCE_EXHAUSTED:
      return rpcError(
        code,
        "Quota exceeded for quota metric 'Cryptographic requests' and limit 'Cryptographic requests per minute' of service 'cloudkms.googleapis.com' for consumer 'project_number:0'.",
      );
    case Status.UNAVAILABLE:
      return rpcError(code, 'The service is currently unavailable.');
    default:
      return rpcError(code, `Injected ${codeName} (gcp-kms emulator faults file).`);
  }
}

/**
 * Applies the faults file to one call: delays it, or returns the error to fail it with.
 * @param {string} method
 * @param {string} resource
 * @returns {Promise<RpcError | null>}
 */
async function applyFaults(method, resource) {
  const rule = await faults.apply(resource);
  return rule ? faultError(rule.key, method, resource, rule.entry) : null;
}

// ---------------------------------------------------------------------------------------------------------------
// RPC implementations. Each takes the request (camelCase, proto-loader defaults) and returns the response or
// throws an RpcError.

/** @type {Record<string, { resource: (req: any) => string, run: (req: any) => unknown }>} */
const handlers = {
  CreateKeyRing: {
    resource: (req) => req.parent,
    run(req) {
      if (!LOCATION_RE.test(req.parent)) throw invalidName(req.parent, 'Location');
      if (!ID_RE.test(req.keyRingId)) {
        throw rpcError(
          Status.INVALID_ARGUMENT,
          `key_ring_id must match the regular expression [a-zA-Z0-9_-]{1,63}, got "${req.keyRingId}".`,
        );
      }
      const name = `${req.parent}/keyRings/${req.keyRingId}`;
      if (state.keyRings[name]) throw rpcError(Status.ALREADY_EXISTS, `KeyRing ${name} already exists.`);
      state.keyRings[name] = { createTime: new Date().toISOString() };
      save();
      return { name, createTime: timestamp(state.keyRings[name].createTime) };
    },
  },

  GetKeyRing: {
    resource: (req) => req.name,
    run(req) {
      if (!KEY_RING_RE.test(req.name)) throw invalidName(req.name, 'KeyRing');
      const ring = state.keyRings[req.name];
      if (!ring) throw notFound(req.name);
      return { name: req.name, createTime: timestamp(ring.createTime) };
    },
  },

  ListKeyRings: {
    resource: (req) => req.parent,
    run(req) {
      if (!LOCATION_RE.test(req.parent)) throw invalidName(req.parent, 'Location');
      const names = Object.keys(state.keyRings)
        .filter((n) => n.startsWith(`${req.parent}/keyRings/`))
        .sort();
      const { page, nextPageToken, totalSize } = paginate(names, req);
      return {
        keyRings: page.map((n) => ({
          name: n,
          createTime: timestamp(/** @type {{ createTime: string }} */ (state.keyRings[n]).createTime),
        })),
        nextPageToken,
        totalSize,
      };
    },
  },

  CreateCryptoKey: {
    resource: (req) => req.parent,
    run(req) {
      if (!KEY_RING_RE.test(req.parent)) throw invalidName(req.parent, 'KeyRing');
      if (!state.keyRings[req.parent]) throw notFound(req.parent);
      if (!ID_RE.test(req.cryptoKeyId)) {
        throw rpcError(
          Status.INVALID_ARGUMENT,
          `crypto_key_id must match the regular expression [a-zA-Z0-9_-]{1,63}, got "${req.cryptoKeyId}".`,
        );
      }
      const ck = req.cryptoKey ?? {};
      if (ck.purpose !== 'ENCRYPT_DECRYPT') {
        throw rpcError(
          Status.INVALID_ARGUMENT,
          ck.purpose === 'CRYPTO_KEY_PURPOSE_UNSPECIFIED' || !ck.purpose
            ? 'The request must specify a CryptoKey purpose.'
            : `The gcp-kms emulator supports only purpose ENCRYPT_DECRYPT, got ${ck.purpose}.`,
        );
      }
      const tmpl = ck.versionTemplate;
      if (tmpl) {
        if (tmpl.algorithm && !['GOOGLE_SYMMETRIC_ENCRYPTION', 'CRYPTO_KEY_VERSION_ALGORITHM_UNSPECIFIED'].includes(tmpl.algorithm)) {
          throw rpcError(
            Status.INVALID_ARGUMENT,
            `Algorithm ${tmpl.algorithm} is not valid for purpose ENCRYPT_DECRYPT (the emulator supports GOOGLE_SYMMETRIC_ENCRYPTION).`,
          );
        }
        if (tmpl.protectionLevel && !['SOFTWARE', 'PROTECTION_LEVEL_UNSPECIFIED'].includes(tmpl.protectionLevel)) {
          throw rpcError(
            Status.INVALID_ARGUMENT,
            `The gcp-kms emulator supports only protection level SOFTWARE, got ${tmpl.protectionLevel}.`,
          );
        }
      }
      const name = `${req.parent}/cryptoKeys/${req.cryptoKeyId}`;
      if (state.cryptoKeys[name]) throw rpcError(Status.ALREADY_EXISTS, `CryptoKey ${name} already exists.`);
      const dsd = ck.destroyScheduledDuration;
      /** @type {StoredKey} */
      const key = {
        createTime: new Date().toISOString(),
        uid: randomBytes(8).toString('hex'),
        primary: null,
        nextVersion: 1,
        labels: { ...(ck.labels ?? {}) },
        destroyScheduledSeconds: dsd ? Number(dsd.seconds) : DEFAULT_DESTROY_SCHEDULED_SECONDS,
        versions: {},
      };
      if (!req.skipInitialVersionCreation) key.primary = newVersion(key);
      state.cryptoKeys[name] = key;
      save();
      return keyToProto(name, key);
    },
  },

  GetCryptoKey: {
    resource: (req) => req.name,
    run(req) {
      const { keyName, key } = getKey(req.name);
      return keyToProto(keyName, key);
    },
  },

  ListCryptoKeys: {
    resource: (req) => req.parent,
    run(req) {
      if (!KEY_RING_RE.test(req.parent)) throw invalidName(req.parent, 'KeyRing');
      if (!state.keyRings[req.parent]) throw notFound(req.parent);
      const names = Object.keys(state.cryptoKeys)
        .filter((n) => n.startsWith(`${req.parent}/cryptoKeys/`))
        .sort();
      const { page, nextPageToken, totalSize } = paginate(names, req);
      return {
        cryptoKeys: page.map((n) => keyToProto(n, /** @type {StoredKey} */ (state.cryptoKeys[n]))),
        nextPageToken,
        totalSize,
      };
    },
  },

  CreateCryptoKeyVersion: {
    resource: (req) => req.parent,
    run(req) {
      const { keyName, key } = getKey(req.parent);
      const id = newVersion(key);
      save();
      return versionToProto(keyName, id, /** @type {StoredVersion} */ (key.versions[id]));
    },
  },

  GetCryptoKeyVersion: {
    resource: (req) => req.name,
    run(req) {
      const { keyName, id, version } = getVersion(req.name);
      return versionToProto(keyName, id, version);
    },
  },

  ListCryptoKeyVersions: {
    resource: (req) => req.parent,
    run(req) {
      const { keyName, key } = getKey(req.parent);
      const ids = sortedVersionIds(key.versions);
      const { page, nextPageToken, totalSize } = paginate(ids, req);
      return {
        cryptoKeyVersions: page.map((id) => versionToProto(keyName, id, /** @type {StoredVersion} */ (key.versions[id]))),
        nextPageToken,
        totalSize,
      };
    },
  },

  UpdateCryptoKeyPrimaryVersion: {
    resource: (req) => req.name,
    run(req) {
      const { keyName, key } = getKey(req.name);
      const id = String(req.cryptoKeyVersionId ?? '');
      if (!key.versions[id]) throw notFound(`${keyName}/cryptoKeyVersions/${id}`);
      key.primary = id;
      save();
      return keyToProto(keyName, key);
    },
  },

  UpdateCryptoKeyVersion: {
    resource: (req) => req.cryptoKeyVersion?.name ?? '',
    run(req) {
      const paths = /** @type {string[]} */ (req.updateMask?.paths ?? []);
      if (paths.length === 0) throw rpcError(Status.INVALID_ARGUMENT, 'The request must specify an update_mask.');
      const bad = paths.filter((p) => p !== 'state');
      if (bad.length > 0) {
        throw rpcError(Status.INVALID_ARGUMENT, `The gcp-kms emulator can update only "state", not: ${bad.join(', ')}.`);
      }
      const { keyName, id, version } = getVersion(req.cryptoKeyVersion?.name ?? '');
      const target = req.cryptoKeyVersion.state;
      if (target !== 'ENABLED' && target !== 'DISABLED') {
        throw rpcError(Status.INVALID_ARGUMENT, `A CryptoKeyVersion's state can only be updated to ENABLED or DISABLED, got ${target}.`);
      }
      if (version.state !== 'ENABLED' && version.state !== 'DISABLED') {
        throw rpcError(
          Status.FAILED_PRECONDITION,
          `${keyName}/cryptoKeyVersions/${id} is not enabled or disabled, current state is: ${version.state}.`,
        );
      }
      version.state = target;
      save();
      return versionToProto(keyName, id, version);
    },
  },

  DestroyCryptoKeyVersion: {
    resource: (req) => req.name,
    run(req) {
      const { keyName, key, id, version } = getVersion(req.name);
      if (version.state !== 'ENABLED' && version.state !== 'DISABLED') {
        throw rpcError(
          Status.FAILED_PRECONDITION,
          `${keyName}/cryptoKeyVersions/${id} is not enabled or disabled, current state is: ${version.state}.`,
        );
      }
      version.state = 'DESTROY_SCHEDULED';
      version.destroyTime = new Date(Date.now() + key.destroyScheduledSeconds * 1000).toISOString();
      save();
      return versionToProto(keyName, id, version);
    },
  },

  RestoreCryptoKeyVersion: {
    resource: (req) => req.name,
    run(req) {
      const { keyName, id, version } = getVersion(req.name);
      if (version.state !== 'DESTROY_SCHEDULED') {
        throw rpcError(
          Status.FAILED_PRECONDITION,
          `${keyName}/cryptoKeyVersions/${id} is not scheduled for destruction, current state is: ${version.state}.`,
        );
      }
      version.state = 'DISABLED';
      version.destroyTime = null;
      save();
      return versionToProto(keyName, id, version);
    },
  },

  Encrypt: {
    resource: (req) => req.name,
    run(req) {
      const plaintext = /** @type {Buffer} */ (req.plaintext);
      const aad = /** @type {Buffer} */ (req.additionalAuthenticatedData);
      if (plaintext.length > MAX_PLAINTEXT) {
        throw rpcError(Status.INVALID_ARGUMENT, `The plaintext must be no larger than 65536 bytes, got ${plaintext.length} bytes.`);
      }
      if (aad.length > MAX_AAD) {
        throw rpcError(
          Status.INVALID_ARGUMENT,
          `The additional_authenticated_data must be no larger than 65536 bytes, got ${aad.length} bytes.`,
        );
      }
      const verifiedPlaintext = verifyCrc(req.plaintextCrc32c, plaintext, 'plaintext_crc32c', 'plaintext');
      const verifiedAad = verifyCrc(
        req.additionalAuthenticatedDataCrc32c,
        aad,
        'additional_authenticated_data_crc32c',
        'additional_authenticated_data',
      );
      /** @type {string} */
      let keyName;
      /** @type {StoredKey} */
      let key;
      /** @type {string} */
      let id;
      if (VERSION_RE.test(req.name)) {
        ({ keyName, key, id } = getVersion(req.name));
      } else {
        ({ keyName, key } = getKey(req.name));
        if (key.primary === null) {
          throw rpcError(Status.FAILED_PRECONDITION, `${keyName} has no primary CryptoKeyVersion and cannot be used for encryption.`);
        }
        id = key.primary;
      }
      const versionName = `${keyName}/cryptoKeyVersions/${id}`;
      const version = /** @type {StoredVersion} */ (key.versions[id]);
      requireEnabled(versionName, version);

      const header = Buffer.alloc(HEADER_LEN);
      header[0] = MAGIC;
      Buffer.from(key.uid, 'hex').copy(header, 1);
      header.writeUInt32BE(Number(id), 9);
      const nonce = randomBytes(NONCE_LEN);
      const cipher = createCipheriv('aes-256-gcm', Buffer.from(/** @type {string} */ (version.material), 'base64'), nonce);
      cipher.setAAD(Buffer.concat([header, aad]));
      const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      const ciphertext = Buffer.concat([header, nonce, body, cipher.getAuthTag()]);
      return {
        name: versionName,
        ciphertext,
        ciphertextCrc32c: int64(crc32c(ciphertext)),
        verifiedPlaintextCrc32c: verifiedPlaintext,
        verifiedAdditionalAuthenticatedDataCrc32c: verifiedAad,
        protectionLevel: 'SOFTWARE',
      };
    },
  },

  Decrypt: {
    resource: (req) => req.name,
    run(req) {
      const ciphertext = /** @type {Buffer} */ (req.ciphertext);
      const aad = /** @type {Buffer} */ (req.additionalAuthenticatedData);
      verifyCrc(req.ciphertextCrc32c, ciphertext, 'ciphertext_crc32c', 'ciphertext');
      verifyCrc(req.additionalAuthenticatedDataCrc32c, aad, 'additional_authenticated_data_crc32c', 'additional_authenticated_data');
      const { keyName, key } = getKey(req.name);

      const invalid = () => rpcError(Status.INVALID_ARGUMENT, 'Decryption failed: the ciphertext is invalid.');
      if (ciphertext.length < HEADER_LEN + NONCE_LEN + TAG_LEN || ciphertext[0] !== MAGIC) throw invalid();
      const header = ciphertext.subarray(0, HEADER_LEN);
      if (header.subarray(1, 9).toString('hex') !== key.uid) {
        throw rpcError(Status.INVALID_ARGUMENT, "Decryption failed: verify that 'name' refers to the correct CryptoKey.");
      }
      const id = String(header.readUInt32BE(9));
      const version = key.versions[id];
      if (!version) throw invalid();
      requireEnabled(`${keyName}/cryptoKeyVersions/${id}`, version);

      const nonce = ciphertext.subarray(HEADER_LEN, HEADER_LEN + NONCE_LEN);
      const body = ciphertext.subarray(HEADER_LEN + NONCE_LEN, ciphertext.length - TAG_LEN);
      const tag = ciphertext.subarray(ciphertext.length - TAG_LEN);
      /** @type {Buffer} */
      let plaintext;
      try {
        const decipher = createDecipheriv('aes-256-gcm', Buffer.from(/** @type {string} */ (version.material), 'base64'), nonce);
        decipher.setAAD(Buffer.concat([header, aad]));
        decipher.setAuthTag(tag);
        plaintext = Buffer.concat([decipher.update(body), decipher.final()]);
      } catch {
        throw invalid();
      }
      return {
        plaintext,
        plaintextCrc32c: int64(crc32c(plaintext)),
        usedPrimary: key.primary === id,
        protectionLevel: 'SOFTWARE',
      };
    },
  },
};

// ---------------------------------------------------------------------------------------------------------------
// Server

const require = createRequire(import.meta.url);
const KMS_PROTOS = join(dirname(require.resolve('@google-cloud/kms/package.json')), 'build', 'protos');
// google/api, google/longrunning and google/protobuf protos ship with google-gax (a dependency of @google-cloud/kms).
const gaxMain = createRequire(require.resolve('@google-cloud/kms/package.json')).resolve('google-gax');
const GAX_PROTOS = join(dirname(dirname(dirname(gaxMain))), 'build', 'protos');

const packageDefinition = protoLoader.loadSync('google/cloud/kms/v1/service.proto', {
  includeDirs: [KMS_PROTOS, GAX_PROTOS],
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const proto = /** @type {any} */ (grpc.loadPackageDefinition(packageDefinition));
/** @type {grpc.ServiceDefinition} */
const serviceDefinition = proto.google.cloud.kms.v1.KeyManagementService.service;

/** @type {grpc.UntypedServiceImplementation} */
const implementation = {};
for (const [method, handler] of Object.entries(handlers)) {
  if (!(method in serviceDefinition)) throw new Error(`KeyManagementService has no method ${method}`);
  /** @type {grpc.handleUnaryCall<any, any>} */
  const unary = (call, callback) => {
    const resource = String(handler.resource(call.request) ?? '');
    applyFaults(method, resource)
      .then((fault) => {
        if (fault) throw fault;
        advanceDestruction();
        callback(null, handler.run(call.request));
      })
      .catch((err) => {
        if (err && typeof err === 'object' && 'code' in err && typeof err.code === 'number') {
          callback(/** @type {grpc.ServiceError} */ (err));
        } else {
          process.stderr.write(`gcp-kms emulator: ${method} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
          callback({ code: Status.INTERNAL, details: `Internal error in the gcp-kms emulator: ${String(err)}` });
        }
      });
  };
  implementation[method] = unary;
}

const server = new grpc.Server();
server.addService(serviceDefinition, implementation);
server.bindAsync(`127.0.0.1:${PORT}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) fatal(NAME, `cannot listen on 127.0.0.1:${PORT}: ${err.message}`);
  printListening(port);
});

handleShutdown({
  exitWithStdin,
  close: (done) => server.tryShutdown(done),
  force: () => server.forceShutdown(),
});
