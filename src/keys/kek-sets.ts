import type { AdapterRegistry } from '../../adapters/registry.js';
import { verifyCommitTag } from '../crypto/commit.js';
import { withSecrets } from '../crypto/secret.js';
import type { KeyedChains } from '../keystore/chains.js';
import type { KeyStore } from '../keystore/key-store.js';
import type { VersionRecord } from '../keystore/types.js';
import type { Logger } from '../log/logger.js';
import { GatewayError } from '../protocol/errors.js';
import { sealForRecovery } from '../recovery/age.js';
import type { DekService } from './dek-service.js';
import { wrapUnder } from './rewrap.js';
import { targetVersions } from './versions.js';

/** Which versions a KEK change applies to: `version`, every enabled one (`all`), else the newest enabled one. */
export interface VersionTarget {
  readonly version?: number;
  readonly all?: boolean;
}

/**
 * Changes to the KEK set and recovery copies of existing versions, made inside the gateway
 * without touching data: REWRAP, ADDKEK, REMOVEKEK, ADDRECOVERY, and the background completion
 * of pending wraps (`keys.minWraps`). Each runs on the key id's chain (shared with
 * KeyService) as one compare-and-swap; every new wrap is checked against the commitment tag
 * before it is stored, so a failure leaves the key as it was. Callers check the KEK allow-list.
 */
export class KekSets {
  /** Ids known to have versions with pending wraps. */
  private readonly pendingIds = new Set<string>();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: KeyStore,
    private readonly adapters: AdapterRegistry,
    private readonly deks: DekService,
    private readonly chains: KeyedChains,
    private readonly log: Logger,
    /** Period of the background retry of pending wraps, in ms (0: none). */
    pendingRetryMs: number,
  ) {
    // Pending wraps left by other gateways sharing the store are completed here too.
    store.watch((keyId, _before, after) => {
      if (after?.versions.some((v) => v.pending !== undefined) === true) this.pendingIds.add(keyId);
    });
    if (pendingRetryMs > 0) {
      this.timer = setInterval(() => void this.completePending().catch(() => undefined), pendingRetryMs);
      this.timer.unref();
    }
  }

  /** Tells that `keyId` has a version with pending wraps. */
  notePending(keyId: string): void {
    this.pendingIds.add(keyId);
  }

  /** Stops the background retries. */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  /**
   * Wraps enabled versions (all, or the one given) under exactly `keks`: wraps under KEKs not
   * listed are dropped, missing ones made (see `wrapUnder`). Resolves with the versions changed.
   */
  rewrap(keyId: string, keks: readonly string[], version?: number): Promise<number> {
    return this.change(keyId, 'key rewrapped', { keks }, version === undefined ? { all: true } : { version }, async (v) => {
      if (
        sameSet(
          v.wraps.map((w) => w.kek),
          keks,
        ) &&
        v.pending === undefined
      )
        return undefined;
      const wraps = [];
      for (const kek of keks) wraps.push(v.wraps.find((w) => w.kek === kek) ?? (await this.wrapUnder(keyId, v, kek)));
      return dropPending({ ...v, wraps }, v.pending ?? []);
    });
  }

  /**
   * Adds KEKs to versions: the DEK is unwrapped once (or taken from the cache), wrapped under
   * each new KEK, and checked. Existing envelopes keep decrypting. Resolves with the versions changed.
   */
  addKek(keyId: string, keks: readonly string[], target: VersionTarget): Promise<number> {
    return this.change(keyId, 'KEK added', { keks }, target, async (v) => {
      const missing = keks.filter((kek) => !v.wraps.some((w) => w.kek === kek));
      if (missing.length === 0) return v.pending?.some((k) => keks.includes(k)) === true ? dropPending(v, keks) : undefined;
      const added = [];
      for (const kek of missing) added.push(await this.wrapUnder(keyId, v, kek));
      return dropPending({ ...v, wraps: [...v.wraps, ...added] }, keks);
    });
  }

  /** Removes KEKs from versions; a version keeps at least one. No KMS is called. */
  removeKek(keyId: string, keks: readonly string[], target: VersionTarget): Promise<number> {
    return this.change(keyId, 'KEK removed', { keks }, target, (v) => {
      const wraps = v.wraps.filter((w) => !keks.includes(w.kek));
      if (wraps.length === v.wraps.length && v.pending?.some((k) => keks.includes(k)) !== true) return undefined;
      if (wraps.length === 0) {
        throw new GatewayError('BAD_REQUEST', `version ${v.version} would be left without a KEK; ADDKEK another first`);
      }
      return dropPending({ ...v, wraps }, keks);
    });
  }

  /** Seals every enabled version to `recipients` that is not sealed to exactly them yet. Resolves with the versions sealed. */
  addRecovery(keyId: string, recipients: readonly string[]): Promise<number> {
    if (recipients.length === 0)
      return Promise.reject(new GatewayError('BAD_REQUEST', 'keys.recovery names no age recipient on this gateway'));
    return this.change(keyId, 'recovery copies sealed', { recipients: recipients.length }, { all: true }, async (v) => {
      if (v.recovery !== undefined && sameSet(v.recovery.recipients, recipients)) return undefined;
      const recovery = await withSecrets(async (scope) => {
        const dek = await this.deks.copyInto(scope, keyId, v.version);
        // The copy is checked: a buffer zeroized by an eviction must never be sealed.
        if (!verifyCommitTag(dek, keyId, v.version, Buffer.from(v.commit ?? '', 'base64'))) {
          throw new GatewayError('INTERNAL', 'DEK failed its commitment check; nothing was sealed');
        }
        return sealForRecovery(dek, recipients);
      });
      return { ...v, recovery };
    });
  }

  /** Makes the pending wraps of the versions known to have some; a KEK that still fails stays pending. Resolves with the wraps made. */
  async completePending(): Promise<number> {
    let made = 0;
    for (const keyId of [...this.pendingIds]) {
      try {
        await this.change(keyId, 'pending KEK wraps made', {}, { all: true }, async (v) => {
          if (v.pending === undefined) return undefined;
          const wraps = [...v.wraps];
          for (const kek of v.pending) {
            try {
              wraps.push(await this.wrapUnder(keyId, v, kek));
            } catch (err) {
              this.log.warn(
                { keyId, version: v.version, kek, code: (err as GatewayError).code },
                'pending KEK wrap failed again; will retry',
              );
            }
          }
          if (wraps.length === v.wraps.length) return undefined;
          made += wraps.length - v.wraps.length;
          return dropPending(
            { ...v, wraps },
            wraps.map((w) => w.kek),
          );
        });
        const record = await this.store.get(keyId);
        if (record?.versions.some((v) => v.pending !== undefined) !== true) this.pendingIds.delete(keyId);
      } catch (err) {
        this.log.warn({ keyId, err: (err as Error).message }, 'pending KEK wraps could not be completed; will retry');
      }
    }
    return made;
  }

  /**
   * Changes the versions `target` selects with `change` (the new version, or undefined for "as
   * it is"), in one compare-and-swap. Resolves with the number of versions changed.
   */
  private change(
    keyId: string,
    what: string,
    logged: Record<string, unknown>,
    target: VersionTarget,
    change: (v: VersionRecord) => VersionRecord | undefined | Promise<VersionRecord | undefined>,
  ): Promise<number> {
    return this.chains.run(keyId, async () => {
      let changed = new Map<number, VersionRecord>();
      await this.store.update(keyId, async (record) => {
        changed = new Map();
        if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
        for (const v of targetVersions(record, target.version, target.all === true)) {
          const next = await change(v);
          if (next !== undefined) changed.set(v.version, next);
        }
        return changed.size === 0 ? undefined : { ...record, versions: record.versions.map((v) => changed.get(v.version) ?? v) };
      });
      if (changed.size > 0) {
        if ([...changed.values()].some((v) => v.pending !== undefined)) this.pendingIds.add(keyId);
        this.log.info({ keyId, versions: [...changed.keys()], ...logged }, what);
      }
      return changed.size;
    });
  }

  private wrapUnder(keyId: string, v: VersionRecord, kek: string): ReturnType<typeof wrapUnder> {
    return wrapUnder(this.adapters, this.deks, keyId, v, kek);
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}

/** `v` without `keks` among its pending wraps. */
function dropPending(v: VersionRecord, keks: readonly string[]): VersionRecord {
  const still = v.pending?.filter((k) => !keks.includes(k)) ?? [];
  const { pending: _pending, ...rest } = v;
  return still.length > 0 ? { ...rest, pending: still } : rest;
}
