import { envelopeVersion, open, seal } from '../crypto/envelope.js';
import { NoncePool } from '../crypto/nonce.js';
import { withSecrets } from '../crypto/secret.js';
import type { DekService } from '../keys/dek-service.js';
import type { KeyService, MadeVersion, Purpose } from '../keys/key-service.js';
import type { Logger } from '../log/logger.js';
import type { AccessControl } from '../policy/types.js';
import { decodeBase64 } from '../protocol/base64.js';
import { GatewayError } from '../protocol/errors.js';
import type { Command, KeyRef } from '../protocol/parser.js';
import { failure, failureFrom, success, type Outcome, type Reply } from '../protocol/reply.js';
import type { RequestTrace } from '../request/context.js';

/** A value now or later: cached work stays synchronous. */
type Maybe<T> = T | Promise<T>;

/** Borrows a DEK for one request; must not keep it. */
type DekUse = (dek: Buffer, version: number) => Maybe<Outcome>;

// Module-level, so a cached GET allocates no closure.
const dekReply: DekUse = (dek) => success(dek.toString('base64'));

/**
 * Executes authorized commands against the key and DEK services and returns
 * typed outcomes. It never throws: every failure becomes an `ok: false` outcome.
 */
export class Executor {
  private readonly nonces = new NoncePool();

  constructor(
    private readonly keys: KeyService,
    private readonly deks: DekService,
    private readonly access: AccessControl | undefined,
    private readonly log: Logger,
  ) {}

  execute(command: Command, client: string | undefined, trace: RequestTrace | undefined): Reply {
    try {
      const reply = this.dispatch(command, client, trace);
      return reply instanceof Promise ? reply.catch((err: unknown) => this.fail(command, err)) : reply;
    } catch (err) {
      return this.fail(command, err);
    }
  }

  private dispatch(command: Command, client: string | undefined, trace: RequestTrace | undefined): Reply {
    switch (command.verb) {
      case 'PING':
        return success('PONG');
      case 'AUTH':
        return failure('BAD_REQUEST', 'AUTH is handled per connection');
      case 'GET':
        return this.withDek(command.key, 'use', trace, dekReply);
      case 'ENC':
        return this.enc(command.key, command.data, command.aad, trace);
      case 'DEC':
        return this.dec(command.key, command.data, command.aad, trace);
      case 'CREATE':
        return this.keys.create(command.key.id, command.keks).then((made) => madeVersion(made, trace));
      case 'ROTATE':
        return this.keys.rotate(command.key.id, command.keks).then((made) => madeVersion(made, trace));
      case 'REWRAP':
        return this.keys.rewrap(command.key.id, command.keks, command.key.version).then((n) => success(String(n)));
      case 'ADDKEK':
      case 'REMOVEKEK': {
        const target = command.key.version === undefined ? { all: command.all } : { version: command.key.version };
        const change =
          command.verb === 'ADDKEK'
            ? this.keys.addKek(command.key.id, command.keks, target)
            : this.keys.removeKek(command.key.id, command.keks, target);
        return change.then((n) => success(String(n)));
      }
      case 'ADDRECOVERY':
        return this.keys.addRecovery(command.key.id).then((n) => success(String(n)));
      case 'DESTROY':
        return this.keys.destroy(command.key.id, command.key.version as number).then((v) => success(String(v)));
      case 'INFO':
        return this.keys.info(command.key.id).then((info) => success(JSON.stringify(info)));
      case 'LIST': {
        const access = this.access;
        // Under a policy a client sees only the ids it may LIST.
        return this.keys
          .list(command.prefix)
          .then((ids) => success(JSON.stringify(access ? ids.filter((id) => access.authorize(client, 'LIST', id)) : ids)));
      }
    }
  }

  /** Resolves the version `ref` names and runs `use` on its DEK; synchronous on a cache hit. */
  private withDek(ref: KeyRef, purpose: Purpose, trace: RequestTrace | undefined, use: DekUse): Reply {
    const version = this.keys.resolve(ref, purpose);
    if (version instanceof Promise) return version.then((v) => this.useVersion(ref.id, v, trace, use));
    return this.useVersion(ref.id, version, trace, use);
  }

  private useVersion(keyId: string, version: number, trace: RequestTrace | undefined, use: DekUse): Reply {
    if (trace) trace.version = version;
    return this.deks.withDek(keyId, version, use);
  }

  private enc(ref: KeyRef, data: string, aadText: string | undefined, trace: RequestTrace | undefined): Reply {
    return withSecrets((scope) => {
      // Decoded before the key is looked up: bad base64 is the caller's fault and must not create a key.
      const plaintext = scope.track(decodeBase64(data, 'plaintext'));
      const aad = aadText === undefined ? undefined : decodeBase64(aadText, 'aad');
      const sealWith = (dek: Buffer, version: number): Outcome =>
        success(seal({ dek, keyId: ref.id, version, ...(aad ? { aad } : {}) }, plaintext, this.nonces).toString('base64'));
      return this.withDek(ref, 'use', trace, (dek, version) => {
        const counted = this.keys.countEncryption(ref.id, version);
        if (counted === undefined) return sealWith(dek, version);
        // Rare: the stored reservation is being raised. The DEK is not held across the
        // wait (it may be evicted and zeroized); it is borrowed again afterwards.
        return counted.then(() => this.deks.withDek(ref.id, version, sealWith));
      });
    });
  }

  private dec(ref: KeyRef, data: string, aadText: string | undefined, trace: RequestTrace | undefined): Reply {
    const envelope = decodeBase64(data, 'envelope');
    const aad = aadText === undefined ? undefined : decodeBase64(aadText, 'aad');
    const version = envelopeVersion(envelope);
    if (ref.version !== undefined && ref.version !== version) {
      throw new GatewayError('DECRYPT_FAILED', 'envelope was made with another key version');
    }
    return this.withDek({ id: ref.id, version }, 'decrypt', trace, (dek) =>
      withSecrets((scope) =>
        success(scope.track(open({ dek, keyId: ref.id, version, ...(aad ? { aad } : {}) }, envelope)).toString('base64')),
      ),
    );
  }

  private fail(command: Command, err: unknown): Outcome {
    const outcome = failureFrom(err);
    if (outcome.code === 'INTERNAL' || outcome.code === 'KMS_UNAVAILABLE' || outcome.code === 'KMS_DENIED') {
      // The cause may hold an SDK message; it goes to the log, never to the client.
      const cause =
        err instanceof GatewayError && err.cause instanceof Error ? { name: err.cause.name, message: err.cause.message } : undefined;
      this.log.warn({ verb: command.verb, code: outcome.code, err: outcome.text, cause }, 'request failed');
    }
    return outcome;
  }
}

/** `OK <version>` for CREATE/ROTATE, with the version and KEK into the request's audit record. */
function madeVersion(made: MadeVersion, trace: RequestTrace | undefined): Outcome {
  if (trace) {
    trace.version = made.version;
    trace.kek = made.keks.join(',');
  }
  return success(String(made.version));
}
