/**
 * One promise chain per key: work for one key runs one at a time, in the order it was
 * queued, whatever became of the work before it; different keys never wait for each other.
 */
export class KeyedChains {
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Number of keys with work queued or running. */
  get size(): number {
    return this.tails.size;
  }

  /** Runs `fn` once every earlier `run` for `key` has settled. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.tails.set(key, next);
    void next
      .catch(() => undefined)
      .finally(() => {
        if (this.tails.get(key) === next) this.tails.delete(key);
      });
    return next;
  }

  /** Resolves once everything queued, including what is queued meanwhile, has settled. */
  async drain(): Promise<void> {
    while (this.tails.size > 0) await Promise.allSettled([...this.tails.values()]);
  }
}
