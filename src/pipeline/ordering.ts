import type { Outcome, Reply } from '../protocol/reply.js';

/**
 * How a request touches keys, for ordering: it reads or changes one key id,
 * reads every key (LIST), or touches none (PING).
 */
export type Access = { readonly kind: 'read' | 'write'; readonly key: string } | { readonly kind: 'read-all' } | { readonly kind: 'none' };

const settle = (): void => undefined;

interface KeyTurn {
  /** Settles when the last change to this key has finished. */
  write: Promise<void> | undefined;
  /** Reads of this key issued since that change. */
  readonly reads: Set<Promise<void>>;
}

/**
 * Makes one connection's requests take effect in the order sent, as Redis and
 * PostgreSQL clients expect of a pipeline. A read of a key waits for earlier
 * changes to it (so `ROTATE k` then `ENC k` uses the new version, `DESTROY
 * k@1` then `GET k@1` refuses); a change waits for every earlier request on
 * its key and for an earlier LIST; LIST waits for everything earlier. Reads
 * of one key do not wait for each other, so a burst of GETs for a cold key
 * still shares one unwrap, and a request with nothing to wait for runs at
 * once: the cached fast path stays synchronous.
 */
export class RequestOrder {
  private readonly keys = new Map<string, KeyTurn>();
  private readonly running = new Set<Promise<void>>();
  private readonly lists = new Set<Promise<void>>();

  /** True while a request of this connection is still running; when false, nothing needs to wait. */
  get busy(): boolean {
    return this.running.size > 0;
  }

  /** Runs `execute` once every earlier request that `access` must follow has finished; at once when none is running. */
  run(access: Access, execute: () => Reply): Reply {
    const before = this.busy ? this.waitFor(access) : undefined;
    const reply = before === undefined ? execute() : before.then(execute);
    if (reply instanceof Promise) this.track(access, reply);
    return reply;
  }

  /** What a request with `access` must wait for, if anything. */
  waitFor(access: Access): Promise<unknown> | undefined {
    switch (access.kind) {
      case 'none':
        return undefined;
      case 'read-all':
        return Promise.all(this.running);
      case 'read':
        return this.keys.get(access.key)?.write;
      case 'write': {
        const turn = this.keys.get(access.key);
        const earlier = [...(turn?.reads ?? []), ...this.lists];
        if (turn?.write !== undefined) earlier.push(turn.write);
        return earlier.length === 0 ? undefined : Promise.all(earlier);
      }
    }
  }

  /** Records a request that did not finish at once, so later ones can wait for it. */
  track(access: Access, reply: Promise<Outcome>): void {
    if (access.kind === 'none') return;
    // The pipeline's replies never reject; settle() only keeps this chain from ever doing so.
    const done = reply.then(settle, settle);
    this.running.add(done);
    let forget: () => void;
    if (access.kind === 'read-all') {
      this.lists.add(done);
      forget = () => this.lists.delete(done);
    } else {
      const key = access.key;
      let turn = this.keys.get(key);
      if (turn === undefined) this.keys.set(key, (turn = { write: undefined, reads: new Set() }));
      const t = turn;
      if (access.kind === 'write') {
        t.write = done;
        t.reads.clear();
      } else {
        t.reads.add(done);
      }
      forget = () => {
        t.reads.delete(done);
        if (t.write === done) t.write = undefined;
        if (t.write === undefined && t.reads.size === 0 && this.keys.get(key) === t) this.keys.delete(key);
      };
    }
    void done.then(() => {
      this.running.delete(done);
      forget();
    });
  }
}
