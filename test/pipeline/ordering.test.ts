import { describe, expect, it } from 'vitest';
import { RequestOrder, type Access } from '../../src/pipeline/ordering.js';
import { success, type Outcome, type Reply } from '../../src/protocol/reply.js';

/** A request whose completion the test controls; `log` records when each one starts. */
function harness() {
  const order = new RequestOrder();
  const started: string[] = [];
  const finish = new Map<string, () => void>();
  const replies = new Map<string, Reply>();
  const send = (name: string, access: Access, slow = true): void => {
    const reply = order.run(access, () => {
      started.push(name);
      if (!slow) return success(name);
      return new Promise<Outcome>((resolve) => finish.set(name, () => resolve(success(name))));
    });
    replies.set(name, reply);
  };
  const done = async (name: string) => {
    finish.get(name)?.();
    // Let the continuations that were waiting for it run.
    for (let i = 0; i < 10; i++) await Promise.resolve();
  };
  return { send, done, started, replies };
}

const read = (key: string): Access => ({ kind: 'read', key });
const write = (key: string): Access => ({ kind: 'write', key });

describe('RequestOrder', () => {
  it('runs a request with nothing before it at once, synchronously', () => {
    const h = harness();
    h.send('get', read('k'), false);
    expect(h.replies.get('get')).toEqual(success('get'));
    expect(h.started).toEqual(['get']);
  });

  it('a read waits for an earlier change to its key, not for changes to other keys', async () => {
    const h = harness();
    h.send('rotate k', write('k'));
    h.send('rotate j', write('j'));
    h.send('enc k', read('k'), false);
    h.send('get j2', read('j2'), false);
    expect(h.started).toEqual(['rotate k', 'rotate j', 'get j2']);
    await h.done('rotate k');
    expect(h.started).toContain('enc k');
    await expect(h.replies.get('enc k')).resolves.toEqual(success('enc k'));
  });

  it('reads of one key run together; a change waits for all of them', async () => {
    const h = harness();
    h.send('get 1', read('k'));
    h.send('get 2', read('k'));
    h.send('destroy', write('k'));
    h.send('get 3', read('k'), false);
    expect(h.started).toEqual(['get 1', 'get 2']);
    await h.done('get 1');
    expect(h.started).toEqual(['get 1', 'get 2']);
    await h.done('get 2');
    expect(h.started).toEqual(['get 1', 'get 2', 'destroy']);
    await h.done('destroy');
    expect(h.started).toEqual(['get 1', 'get 2', 'destroy', 'get 3']);
  });

  it('LIST waits for everything before it, and a later change waits for LIST', async () => {
    const h = harness();
    h.send('create a', write('a'));
    h.send('list', { kind: 'read-all' });
    h.send('create b', write('b'));
    h.send('ping', { kind: 'none' }, false);
    expect(h.started).toEqual(['create a', 'ping']);
    await h.done('create a');
    expect(h.started).toEqual(['create a', 'ping', 'list']);
    await h.done('list');
    expect(h.started).toEqual(['create a', 'ping', 'list', 'create b']);
  });

  it('forgets finished requests: later ones run at once again', async () => {
    const h = harness();
    h.send('create', write('k'));
    await h.done('create');
    h.send('get', read('k'), false);
    expect(h.replies.get('get')).toEqual(success('get'));
  });
});
