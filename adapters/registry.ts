import { GatewayError } from '../src/protocol/errors.js';
import { GuardedWrapper, type GuardOptions } from './guard.js';
import type { AdapterModule, AdapterOptions } from './types.js';

/** Loads one adapter module on first use, so a user of one cloud never loads another's SDK. */
export type AdapterLoader = () => Promise<AdapterModule>;

/** KEK URI scheme → adapter. Cloud adapters join this table in their own issues. */
export const DEFAULT_LOADERS: Readonly<Record<string, AdapterLoader>> = {
  local: async () => (await import('./local/index.js')).default,
  'aws-kms': async () => (await import('./aws/index.js')).default,
  'gcp-kms': async () => (await import('./gcp/index.js')).default,
  'azure-kv': async () => (await import('./azure/index.js')).default,
};

const SCHEME_RE = /^([a-z][a-z0-9+.-]*):\/\//;

/** The scheme of a KEK URI (`aws-kms://…` → `aws-kms`), or undefined. */
export function kekScheme(kek: string): string | undefined {
  return SCHEME_RE.exec(kek)?.[1];
}

/** What a registry is built with: `settings` is `kms.adapters` as the config schema parsed it. */
export type RegistryOptions = AdapterOptions &
  GuardOptions & {
    /**
     * Most wrappers (one per KEK URI) kept at once. Past it the least recently used one is
     * dropped and closed once the calls using it have settled; a later use builds it again.
     * @default 1024
     */
    readonly maxWrappers?: number;
  };

/** One KEK URI's wrapper and the calls using it now. */
interface Entry {
  readonly wrapper: Promise<GuardedWrapper>;
  users: number;
  /** Set once the entry is dropped while in use: called when its last call settles. */
  idle?: () => void;
}

/**
 * Hands out one guarded wrapper per KEK URI, loading adapters lazily, and keeps at most
 * `maxWrappers` of them: a gateway asked for ever new KEK URIs (ROTATE/REWRAP with a URI each
 * time) must not hold a client or a key for each forever.
 */
export class AdapterRegistry {
  // Map order is recency order: a use moves its entry to the end, the first is evicted first.
  private readonly entries = new Map<string, Entry>();
  // Closes of dropped wrappers, some waiting for their calls to settle; close() waits for them.
  private readonly retiring = new Set<Promise<void>>();
  private readonly maxWrappers: number;

  constructor(
    private readonly options: RegistryOptions,
    private readonly loaders: Readonly<Record<string, AdapterLoader>> = DEFAULT_LOADERS,
  ) {
    this.maxWrappers = options.maxWrappers ?? 1024;
    if (!Number.isInteger(this.maxWrappers) || this.maxWrappers < 1) throw new RangeError('maxWrappers must be a positive integer');
  }

  /** Throws `BAD_REQUEST` when no adapter serves the URI's scheme. */
  assertSupported(kek: string): void {
    const scheme = kekScheme(kek);
    if (scheme === undefined || !Object.hasOwn(this.loaders, scheme)) {
      throw new GatewayError('BAD_REQUEST', `no KEK adapter for ${scheme ? `scheme ${scheme}` : 'that URI'}`);
    }
  }

  /**
   * Runs `fn` with the wrapper of `kek`; the wrapper is not closed before `fn` settles,
   * even if it is evicted meanwhile. Do not keep the wrapper past `fn`.
   */
  async use<T>(kek: string, fn: (wrapper: GuardedWrapper) => Promise<T>): Promise<T> {
    const entry = this.entry(kek);
    entry.users++;
    try {
      return await fn(await entry.wrapper);
    } finally {
      if (--entry.users === 0) entry.idle?.();
    }
  }

  /** How many wrappers are kept (for tests and metrics). */
  get size(): number {
    return this.entries.size;
  }

  /** Closes every wrapper, each once the calls using it have settled. */
  async close(): Promise<void> {
    for (const entry of this.entries.values()) this.retire(entry);
    this.entries.clear();
    await Promise.allSettled([...this.retiring]);
  }

  private entry(kek: string): Entry {
    const entry = this.entries.get(kek);
    if (entry !== undefined) {
      this.entries.delete(kek);
      this.entries.set(kek, entry);
      return entry;
    }
    const made: Entry = { wrapper: this.build(kek), users: 0 };
    this.entries.set(kek, made);
    // A URI that failed to build is not remembered: the next call tries again.
    made.wrapper.catch(() => {
      if (this.entries.get(kek) === made) this.entries.delete(kek);
    });
    for (const [oldest, old] of this.entries) {
      if (this.entries.size <= this.maxWrappers) break;
      this.entries.delete(oldest);
      this.retire(old);
    }
    return made;
  }

  /** Closes a dropped entry's wrapper once nothing uses it. */
  private retire(entry: Entry): void {
    const idle = entry.users === 0 ? Promise.resolve() : new Promise<void>((done) => (entry.idle = done));
    const closing = idle
      .then(() => entry.wrapper)
      .then((w) => w.close())
      .catch(() => undefined); // one that never built has nothing to close; a failed close has nobody to tell
    this.retiring.add(closing);
    void closing.then(() => this.retiring.delete(closing));
  }

  private async build(kek: string): Promise<GuardedWrapper> {
    this.assertSupported(kek);
    const load = this.loaders[kekScheme(kek) as string] as AdapterLoader;
    const module = await load();
    return new GuardedWrapper(module.createWrapper(kek, this.options), this.options);
  }
}
