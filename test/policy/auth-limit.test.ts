import { describe, expect, it } from 'vitest';
import { hashToken, Policy, PolicySchema } from '../../src/policy/policy.js';
import type { ClientIdentity } from '../../src/request/context.js';

type PolicyInput = Parameters<typeof PolicySchema.parse>[0];

const clientsWithToken = [{ name: 'app', match: { tokens: [hashToken('right')] } }];
const OK = { ok: true, client: 'app' };
const DENIED = { ok: false, reason: 'denied' };
const LIMITED = { ok: false, reason: 'rate-limited' };

function setup(extra: Partial<PolicyInput> = {}) {
  const clock = { t: 1_000_000, now: () => clock.t };
  const p = new Policy(PolicySchema.parse({ clients: clientsWithToken, ...extra }), clock);
  /** One connection from `identity`: AUTH lines sent on it. */
  const connect = (identity: ClientIdentity) => {
    const connection = {};
    return (token: string) => p.authenticate(token, identity, connection);
  };
  return { clock, connect };
}

const tcp: ClientIdentity = { transport: 'tcp', address: '127.0.0.1' };
const uid = (n: number, pid = 1): ClientIdentity => ({ transport: 'unix', peer: { uid: n, gid: n, pid } });

describe('Policy: failed AUTH attempts, per connection', () => {
  it('5 failures on a connection refuse even the right token on it; after the window it works again', () => {
    const { clock, connect } = setup();
    const auth = connect(tcp);
    for (let i = 0; i < 5; i++) {
      expect(auth('wrong')).toEqual(DENIED);
      clock.t += 1000;
    }
    expect(auth('right')).toEqual(LIMITED);
    expect(auth('wrong')).toEqual(LIMITED);
    // The first failure was at t0; the window is 60 s: at t0 + 59 999 still limited.
    clock.t = 1_000_000 + 59_999;
    expect(auth('right')).toEqual(LIMITED);
    // Once every failure is older than the window, the right token works again.
    clock.t = 1_000_000 + 4000 + 60_000;
    expect(auth('right')).toEqual(OK);
  });

  it('the window slides: refused attempts while limited do not extend it', () => {
    const { clock, connect } = setup();
    const auth = connect(tcp);
    for (let i = 0; i < 5; i++) auth('wrong');
    for (let i = 0; i < 50; i++) {
      clock.t += 1000;
      expect(auth('right').ok).toBe(false);
    }
    clock.t = 1_000_000 + 60_000; // all 5 failures (at t0) have aged out
    expect(auth('right')).toEqual(OK);
  });

  it('4 failures are not enough; a success clears them', () => {
    const { connect } = setup();
    const auth = connect(tcp);
    for (let i = 0; i < 4; i++) auth('wrong');
    expect(auth('right')).toEqual(OK);
    for (let i = 0; i < 4; i++) auth('wrong');
    expect(auth('right')).toEqual(OK);
  });

  it('honours authFailures.max and windowMs', () => {
    const { clock, connect } = setup({ authFailures: { max: 2, windowMs: 1000 } });
    const auth = connect(tcp);
    auth('wrong');
    auth('wrong');
    expect(auth('right')).toEqual(LIMITED);
    clock.t += 1000;
    expect(auth('right')).toEqual(OK);
  });

  it.each<[string, ClientIdentity]>([
    ['the same TCP address', tcp],
    ['a Unix socket without peer credentials', { transport: 'unix' }],
    ['the same TLS address without a certificate', { transport: 'tls', address: '127.0.0.1' }],
  ])('an anonymous source is limited per connection only: another connection from %s keeps its right token', (_what, identity) => {
    const { connect } = setup();
    const attacker = connect(identity);
    for (let i = 0; i < 50; i++) attacker('wrong');
    expect(attacker('right')).toEqual(LIMITED);
    expect(connect(identity)('right')).toEqual(OK);
  });
});

describe('Policy: failed AUTH attempts, per peer identity', () => {
  it("a peer uid's failures add up across its connections (whatever the pid)", () => {
    const { connect } = setup();
    for (let pid = 1; pid <= 5; pid++) expect(connect(uid(7, pid))('wrong')).toEqual(DENIED);
    expect(connect(uid(7, 99))('right')).toEqual(LIMITED);
  });

  it("so do a certificate identity's", () => {
    const { connect } = setup();
    const cert: ClientIdentity = { transport: 'tls', address: '127.0.0.1', cert: 'pg-1' };
    for (let i = 0; i < 5; i++) connect(cert)('wrong');
    expect(connect(cert)('right')).toEqual(LIMITED);
  });

  it.each<[string, ClientIdentity, ClientIdentity]>([
    ['uids', uid(1000), uid(1001)],
    ['certificates', { transport: 'tls', address: '127.0.0.1', cert: 'a' }, { transport: 'tls', address: '127.0.0.1', cert: 'b' }],
    ['a uid and an anonymous peer', uid(1000), { transport: 'unix' }],
    ['a uid and a TCP client', uid(1000), tcp],
  ])("one peer's failures never refuse another's right token: different %s", (_what, first, second) => {
    const { connect } = setup();
    for (let i = 0; i < 5; i++) connect(first)('wrong');
    expect(connect(first)('right')).toEqual(LIMITED);
    expect(connect(second)('right')).toEqual(OK);
  });

  it("a success clears the peer's failures", () => {
    const { connect } = setup();
    for (let i = 0; i < 4; i++) connect(uid(7))('wrong');
    expect(connect(uid(7))('right')).toEqual(OK);
    for (let i = 0; i < 4; i++) connect(uid(7))('wrong');
    expect(connect(uid(7))('right')).toEqual(OK);
  });

  it('uses Date by default', () => {
    const p = new Policy(PolicySchema.parse({ clients: clientsWithToken }));
    const connection = {};
    for (let i = 0; i < 5; i++) p.authenticate('wrong', tcp, connection);
    expect(p.authenticate('right', tcp, connection)).toEqual(LIMITED);
  });
});
