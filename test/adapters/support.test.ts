import { describe, expect, it } from 'vitest';
import { SharedClients, soleLease } from '../../adapters/support.js';

/** A narrow fake client: counts how often it was closed. */
function fakeClient(name: string) {
  return {
    name,
    closed: 0,
    close() {
      this.closed++;
    },
  };
}

describe('SharedClients', () => {
  it('makes one client per key, shares it, and closes it when the last lease is released', async () => {
    const clients = new SharedClients<string, ReturnType<typeof fakeClient>>();
    let made = 0;
    const make = () => fakeClient(`c${++made}`);
    const a = clients.acquire('eu', make);
    const b = clients.acquire('eu', make);
    const other = clients.acquire('us', make);
    expect(made).toBe(2);
    expect(a.client).toBe(b.client);
    expect(other.client).not.toBe(a.client);
    expect(clients.users('eu')).toBe(2);

    const shared = a.client;
    await a.release();
    await a.release(); // idempotent: does not take b's share
    expect(clients.users('eu')).toBe(1);
    expect(shared.closed).toBe(0);
    expect(b.client).toBe(shared);
    expect(() => a.client).toThrow('KEK adapter is closed');

    await b.release();
    expect(shared.closed).toBe(1);
    expect(clients.users('eu')).toBe(0);
    expect(other.client.closed).toBe(0);

    // The next user gets a fresh client, not the closed one.
    const c = clients.acquire('eu', make);
    expect(c.client.name).toBe('c3');
    await Promise.all([c.release(), other.release()]);
  });

  it('a sole lease closes its client on release, once', async () => {
    const client = fakeClient('solo');
    const lease = soleLease(client);
    await lease.release();
    await lease.release();
    expect(client.closed).toBe(1);
    expect(() => lease.client).toThrow('KEK adapter is closed');
  });
});
