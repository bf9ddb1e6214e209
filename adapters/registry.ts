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
export type RegistryOptions = AdapterOptions & GuardOptions;

/** Hands out one guarded wrapper per KEK URI, loading adapters lazily. */
export class AdapterRegistry {
  private readonly wrappers = new Map<string, Promise<GuardedWrapper>>();

  constructor(
    private readonly options: RegistryOptions,
    private readonly loaders: Readonly<Record<string, AdapterLoader>> = DEFAULT_LOADERS,
  ) {}

  /** Throws `BAD_REQUEST` when no adapter serves the URI's scheme. */
  assertSupported(kek: string): void {
    const scheme = kekScheme(kek);
    if (scheme === undefined || !Object.hasOwn(this.loaders, scheme)) {
      throw new GatewayError('BAD_REQUEST', `no KEK adapter for ${scheme ? `scheme ${scheme}` : 'that URI'}`);
    }
  }

  get(kek: string): Promise<GuardedWrapper> {
    let wrapper = this.wrappers.get(kek);
    if (wrapper === undefined) {
      wrapper = this.build(kek);
      this.wrappers.set(kek, wrapper);
      // A URI that failed to build is not remembered: the next call tries again.
      wrapper.catch(() => this.wrappers.delete(kek));
    }
    return wrapper;
  }

  async close(): Promise<void> {
    const all = [...this.wrappers.values()];
    this.wrappers.clear();
    await Promise.allSettled(all.map(async (w) => (await w).close()));
  }

  private async build(kek: string): Promise<GuardedWrapper> {
    this.assertSupported(kek);
    const load = this.loaders[kekScheme(kek) as string] as AdapterLoader;
    const module = await load();
    return new GuardedWrapper(module.createWrapper(kek, this.options), this.options);
  }
}
