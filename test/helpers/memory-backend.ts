// An in-memory StoreBackend for unit tests of KeyStore's logic (conflicts, outages, refresh).
// The real backends run the conformance suite against real stores; this one only has to be exact.
import { StoreError, type ListedObject, type StoreBackend, type StoredObject, type WriteResult } from '../../src/keystore/backend.js';

export class MemoryBackend implements StoreBackend {
  readonly location = 'memory://test/';
  readonly objects = new Map<string, { body: Buffer; revision: string }>();
  /** Every call made, in order (`read k`, `write k`, `list`). */
  readonly calls: string[] = [];
  /** `fail`: calls throw a StoreError; `hang`: calls never settle unless aborted. */
  mode: 'up' | 'fail' | 'hang' = 'up';
  /** Runs before a write is applied, e.g. to let "another host" write first. */
  beforeWrite: ((id: string) => void) | undefined;
  private seq = 0;

  /** What another gateway's write looks like: a new revision, no questions asked. */
  putAsOther(id: string, body: Buffer | string): string {
    const revision = `r${++this.seq}`;
    this.objects.set(id, { body: Buffer.from(body), revision });
    return revision;
  }

  async read(id: string, signal: AbortSignal): Promise<StoredObject | undefined> {
    this.calls.push(`read ${id}`);
    await this.gate(signal);
    const o = this.objects.get(id);
    return o && { body: Buffer.from(o.body), revision: o.revision };
  }

  async write(id: string, body: Buffer, expected: string | null, signal: AbortSignal): Promise<WriteResult> {
    this.calls.push(`write ${id}`);
    await this.gate(signal);
    this.beforeWrite?.(id);
    const current = this.objects.get(id)?.revision ?? null;
    if (current !== expected) return { ok: false, conflict: true };
    return { ok: true, revision: this.putAsOther(id, body) };
  }

  async *list(prefix: string, signal: AbortSignal): AsyncIterable<ListedObject> {
    this.calls.push('list');
    await this.gate(signal);
    for (const [id, o] of [...this.objects].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (id.startsWith(prefix)) yield { id, revision: o.revision };
    }
  }

  async close(): Promise<void> {}

  private gate(signal: AbortSignal): Promise<void> {
    if (this.mode === 'fail') return Promise.reject(new StoreError('memory store is down'));
    if (this.mode === 'hang') {
      return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new StoreError('aborted')), { once: true }));
    }
    return Promise.resolve();
  }
}
