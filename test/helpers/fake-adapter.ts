import { KmsError } from '../../src/protocol/errors.js';
import type { AdapterLoader } from '../../adapters/registry.js';
import type { AdapterModule, KeyWrapper, WrapContext, WrappedKey } from '../../adapters/types.js';

/**
 * A narrow fake KEK (`fake://<name>`) for testing the logic *around* adapters:
 * outages, denials, throttling, hangs and misbehaving adapters. It proves
 * nothing about any cloud; real adapters are tested against emulators.
 * Its "wrap" is a reversible XOR that ignores the context on purpose, so the
 * gateway's commitment tag is what catches a swapped blob.
 */
export type FakeMode = 'ok' | 'deny' | 'down' | 'throttle' | 'hang' | 'short-dek' | 'raw-error';

export const fakeKms = {
  mode: 'ok' as FakeMode,
  /** A mode for one KEK URI, over `mode` (one region or cloud down while another answers). */
  byKek: new Map<string, FakeMode>(),
  calls: [] as Array<{ op: string; kek: string; keyId: string; version: number }>,
  /** The last buffer the fake handed out from unwrap (to check the guard zeroized it). */
  lastUnwrapped: undefined as Buffer | undefined,
  reset() {
    this.mode = 'ok';
    this.byKek.clear();
    this.calls.length = 0;
    this.lastUnwrapped = undefined;
  },
};

function failFor(mode: FakeMode, signal: AbortSignal): Promise<never> | undefined {
  switch (mode) {
    case 'deny':
      return Promise.reject(new KmsError('KMS_DENIED', 'KEK is disabled'));
    case 'down':
      return Promise.reject(new KmsError('KMS_UNAVAILABLE', 'KMS unreachable'));
    case 'throttle':
      return Promise.reject(new KmsError('THROTTLED', 'KMS rate limit reached'));
    case 'raw-error':
      return Promise.reject(new Error('SDK exploded with secret-looking detail AKIA1234'));
    case 'hang':
      return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted'))));
    case 'ok':
    case 'short-dek':
      return undefined;
  }
}

const PAD = 0x5a;

class FakeWrapper implements KeyWrapper {
  constructor(readonly kek: string) {}

  async wrap(dek: Buffer, ctx: WrapContext): Promise<WrappedKey> {
    fakeKms.calls.push({ op: 'wrap', kek: this.kek, keyId: ctx.keyId, version: ctx.version });
    await (failFor(this.mode, ctx.signal) ?? Promise.resolve());
    return { blob: Buffer.from(dek.map((b) => b ^ PAD)), kekVersion: `${this.kek}/v1` };
  }

  async unwrap(wrapped: WrappedKey, ctx: WrapContext): Promise<Buffer> {
    fakeKms.calls.push({ op: 'unwrap', kek: this.kek, keyId: ctx.keyId, version: ctx.version });
    await (failFor(this.mode, ctx.signal) ?? Promise.resolve());
    const out = Buffer.from(wrapped.blob.map((b) => b ^ PAD));
    fakeKms.lastUnwrapped = out;
    return this.mode === 'short-dek' ? out.subarray(0, 16) : out;
  }

  private get mode(): FakeMode {
    return fakeKms.byKek.get(this.kek) ?? fakeKms.mode;
  }

  async close(): Promise<void> {}
}

export const fakeModule: AdapterModule = {
  createWrapper: (kek) => new FakeWrapper(kek) satisfies KeyWrapper,
};

export const fakeLoader: AdapterLoader = async () => fakeModule;

/** Each failing mode and the protocol code the gateway must answer with. */
export const FAKE_FAILURES = [
  ['deny', 'KMS_DENIED'],
  ['down', 'KMS_UNAVAILABLE'],
  ['throttle', 'THROTTLED'],
  ['raw-error', 'INTERNAL'],
] as const satisfies ReadonlyArray<readonly [FakeMode, string]>;
