import { describe, expect, it } from 'vitest';
import { MAX_RETRY_AFTER_MS, SharedClients, retryAfterMs, soleLease } from '../../adapters/support.js';

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

describe('retryAfterMs', () => {
  it('reads delta-seconds, an HTTP date and a duration in ms; caps it; ignores what it cannot read', () => {
    expect(retryAfterMs('12')).toBe(12_000);
    expect(retryAfterMs(' 1.5 ')).toBe(1500);
    expect(retryAfterMs(new Date(10_000 + 5_000).toUTCString(), 10_000)).toBe(5000);
    expect(retryAfterMs(new Date(1_000).toUTCString(), 10_000)).toBe(0);
    expect(retryAfterMs(250)).toBe(250);
    expect(retryAfterMs('86400')).toBe(MAX_RETRY_AFTER_MS);
    for (const bad of ['soon', '', undefined, null, Number.NaN]) expect(retryAfterMs(bad)).toBeUndefined();
  });
});
