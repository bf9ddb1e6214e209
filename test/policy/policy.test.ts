import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/config/load.js';
import { ADMIN_VERBS, type Verb } from '../../src/protocol/parser.js';
import { hashToken, Policy, PolicySchema } from '../../src/policy/policy.js';
import type { ClientIdentity } from '../../src/request/context.js';

type PolicyInput = Parameters<typeof PolicySchema.parse>[0];

const policy = (input: PolicyInput, clock?: { now(): number }) => new Policy(PolicySchema.parse(input), clock);

/** A policy with one client `c` holding one grant of `verbs` on `keys`. */
const single = (verbs: string[], keys: string[]) =>
  policy({ clients: [{ name: 'c', match: { uids: [1000] }, grants: [{ verbs: verbs as never, keys }] }] });

const DATA_VERBS = ['GET', 'ENC', 'DEC'] as const satisfies readonly Verb[];
const ALL_KEYED_VERBS = [...DATA_VERBS, ...ADMIN_VERBS] as const;

describe('Policy: key-id globs', () => {
  it.each([
    // glob, key id, matches
    ['pg/cluster-1/*', 'pg/cluster-1/tde', true],
    ['pg/cluster-1/*', 'pg/cluster-1/a/b', true], // `*` crosses slashes
    ['pg/cluster-1/*', 'pg/cluster-1/', true], // `*` may match nothing
    ['pg/cluster-1/*', 'pg/cluster-10', false],
    ['pg/cluster-1/*', 'pg/cluster-1', false],
    ['pg/cluster-1/*', 'xpg/cluster-1/tde', false], // anchored at the start
    ['pg/cluster-1*', 'pg/cluster-10', true],
    ['pg/*/tde', 'pg/a/b/tde', true],
    ['pg/*/tde', 'pg/a/tde2', false], // anchored at the end
    ['pg/cluster-?', 'pg/cluster-1', true],
    ['pg/cluster-?', 'pg/cluster-10', false], // `?` is exactly one character
    ['pg/cluster-?', 'pg/cluster-', false],
    ['a?c', 'a/c', true],
    ['a??', 'abc', true],
    ['app.v1', 'app.v1', true],
    ['app.v1', 'appXv1', false], // `.` is literal, not "any character"
    ['app.*', 'appXfoo', false],
    ['app.*', 'app.foo', true],
    ['a-b:c_d', 'a-b:c_d', true],
    ['*', 'anything/at:all', true],
    ['PG/*', 'pg/x', false], // case-sensitive
    ['cluster', 'pg/cluster', false],
    ['*/tde', 'pg/cluster-1/tde', true],
  ])('%s vs %s → %s', (glob, id, expected) => {
    const p = single(['GET'], [glob]);
    expect(p.authorize('c', 'GET', id)).toBe(expected);
  });

  const idChar = fc.constantFrom(...'ABCXYZabcxyz0189._-/:'.split(''));
  const keyId = fc.string({ unit: idChar, minLength: 1, maxLength: 40 });

  it('a glob without wildcards matches exactly its own text (metacharacters are literal)', () => {
    fc.assert(
      fc.property(keyId, keyId, (glob, id) => {
        expect(single(['GET'], [glob]).authorize('c', 'GET', id)).toBe(glob === id);
      }),
    );
  });

  it('`prefix*` matches exactly the ids starting with prefix; `?` exactly one more character', () => {
    fc.assert(
      fc.property(keyId, keyId, (prefix, id) => {
        expect(single(['GET'], [`${prefix}*`]).authorize('c', 'GET', id)).toBe(id.startsWith(prefix));
        expect(single(['GET'], [`${prefix}?`]).authorize('c', 'GET', id)).toBe(id.startsWith(prefix) && id.length === prefix.length + 1);
      }),
    );
  });

  it("any of a grant's globs suffices", () => {
    const p = single(['GET'], ['pg/*', 'app/users']);
    expect(p.authorize('c', 'GET', 'pg/x')).toBe(true);
    expect(p.authorize('c', 'GET', 'app/users')).toBe(true);
    expect(p.authorize('c', 'GET', 'app/orders')).toBe(false);
  });
});

describe('Policy: default deny', () => {
  const p = policy({
    clients: [
      { name: 'app', match: { uids: [1000] }, grants: [{ verbs: ['GET', 'ENC', 'DEC'], keys: ['pg/*'] }] },
      { name: 'nothing', match: { uids: [1001] } },
    ],
  });

  it.each([
    ['an unidentified connection', undefined, 'GET', 'pg/x'],
    ['an unknown client name', 'ghost', 'GET', 'pg/x'],
    ['a client without grants', 'nothing', 'GET', 'pg/x'],
    ['a verb no grant names', 'app', 'CREATE', 'pg/x'],
    ['a key no grant matches', 'app', 'GET', 'app/x'],
    ['LIST without any LIST grant', 'app', 'LIST', undefined],
  ] as const)('denies %s', (_what, client, verb, key) => {
    expect(p.authorize(client, verb, key)).toBe(false);
    expect(p.explain(client, verb, key).allowed).toBe(false);
  });

  it.each([undefined, 'ghost', 'nothing', 'app'])('always allows PING and AUTH (client %s)', (client) => {
    expect(p.authorize(client, 'PING', undefined)).toBe(true);
    expect(p.authorize(client, 'AUTH', undefined)).toBe(true);
  });
});

describe('Policy: verbs', () => {
  it('`admin` stands for exactly CREATE ROTATE REWRAP ADDKEK REMOVEKEK ADDRECOVERY DESTROY INFO LIST', () => {
    const p = single(['admin'], ['*']);
    expect([...ADMIN_VERBS].sort()).toEqual([
      'ADDKEK',
      'ADDRECOVERY',
      'CREATE',
      'DESTROY',
      'INFO',
      'LIST',
      'REMOVEKEK',
      'REWRAP',
      'ROTATE',
    ]);
    for (const verb of ADMIN_VERBS) expect(p.authorize('c', verb, 'pg/x'), verb).toBe(true);
    expect(p.authorize('c', 'LIST', undefined)).toBe(true);
    for (const verb of DATA_VERBS) expect(p.authorize('c', verb, 'pg/x'), verb).toBe(false);
  });

  it('admin verbs need an explicit grant: GET ENC DEC on * gives none of them', () => {
    const p = single(['GET', 'ENC', 'DEC'], ['*']);
    for (const verb of DATA_VERBS) expect(p.authorize('c', verb, 'pg/x')).toBe(true);
    for (const verb of ADMIN_VERBS) expect(p.authorize('c', verb, 'pg/x'), verb).toBe(false);
    expect(p.authorize('c', 'LIST', undefined)).toBe(false);
  });

  it('each verb grants only itself', () => {
    for (const granted of ALL_KEYED_VERBS) {
      const p = single([granted], ['k/*']);
      for (const verb of ALL_KEYED_VERBS) expect(p.authorize('c', verb, 'k/1'), `${granted} → ${verb}`).toBe(verb === granted);
    }
  });

  it('an ENC/DEC-only client can never GET (never receives a DEK)', () => {
    const p = single(['ENC', 'DEC'], ['*']);
    expect(p.authorize('c', 'ENC', 'pg/x')).toBe(true);
    expect(p.authorize('c', 'DEC', 'pg/x')).toBe(true);
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'abz09./-:'.split('')), minLength: 1, maxLength: 30 }), (id) => {
        expect(p.authorize('c', 'GET', id)).toBe(false);
      }),
    );
  });

  it('admin on a glob is limited to that glob', () => {
    const p = single(['admin'], ['pg/*']);
    expect(p.authorize('c', 'CREATE', 'pg/new')).toBe(true);
    expect(p.authorize('c', 'CREATE', 'app/new')).toBe(false);
    expect(p.authorize('c', 'DESTROY', 'app/x')).toBe(false);
  });

  it('LIST with no key asks "may list at all", per id it follows the globs', () => {
    const p = single(['LIST'], ['pg/*']);
    expect(p.authorize('c', 'LIST', undefined)).toBe(true);
    expect(p.authorize('c', 'LIST', 'pg/a')).toBe(true);
    expect(p.authorize('c', 'LIST', 'app/a')).toBe(false);
  });

  it("grants add up across a client's grants", () => {
    const p = policy({
      clients: [
        {
          name: 'c',
          match: { uids: [1] },
          grants: [
            { verbs: ['GET'], keys: ['a/*'] },
            { verbs: ['ENC'], keys: ['b/*'] },
          ],
        },
      ],
    });
    expect(p.authorize('c', 'GET', 'a/1')).toBe(true);
    expect(p.authorize('c', 'ENC', 'b/1')).toBe(true);
    expect(p.authorize('c', 'GET', 'b/1')).toBe(false);
    expect(p.authorize('c', 'ENC', 'a/1')).toBe(false);
  });
});

describe('Policy: identification by transport', () => {
  const p = policy({
    clients: [
      { name: 'by-uid', match: { uids: [0, 1000] } },
      { name: 'by-cert', match: { certs: ['pg-cluster-1'] } },
      { name: 'by-token', match: { tokens: [hashToken('t')] } },
    ],
  });
  const peer = (uid: number) => ({ uid, gid: uid, pid: 42 });

  it.each<[string, ClientIdentity, string | undefined]>([
    ['uid 1000', { transport: 'unix', peer: peer(1000) }, 'by-uid'],
    ['uid 0', { transport: 'unix', peer: peer(0) }, 'by-uid'],
    ['an unknown uid', { transport: 'unix', peer: peer(1001) }, undefined],
    ['a unix peer without credentials', { transport: 'unix' }, undefined],
    ['a matching certificate', { transport: 'tls', address: '127.0.0.1', cert: 'pg-cluster-1' }, 'by-cert'],
    ['another certificate', { transport: 'tls', address: '127.0.0.1', cert: 'pg-cluster-10' }, undefined],
    ['a certificate differing in case', { transport: 'tls', cert: 'PG-CLUSTER-1' }, undefined],
    ['plain TCP', { transport: 'tcp', address: '127.0.0.1' }, undefined],
  ])('%s', (_what, identity, expected) => {
    expect(p.identify(identity)).toBe(expected);
  });
});

describe('Policy: tokens', () => {
  it('hashToken is sha256:<64 lowercase hex> of the UTF-8 token', () => {
    // SHA-256("abc"), FIPS 180-2 test vector.
    expect(hashToken('abc')).toBe('sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    // UTF-8, not latin1: "é" is the two bytes c3 a9.
    expect(hashToken('é')).toBe(
      `sha256:${createHash('sha256')
        .update(Buffer.from([0xc3, 0xa9]))
        .digest('hex')}`,
    );
    fc.assert(
      fc.property(fc.string(), (t) => {
        expect(hashToken(t)).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect(PolicySchema.safeParse({ clients: [{ name: 'x', match: { tokens: [hashToken(t)] } }] }).success).toBe(true);
      }),
    );
  });

  const tcp: ClientIdentity = { transport: 'tcp', address: '127.0.0.1' };

  it.each([
    ['app-token', { ok: true, client: 'app' }],
    ['app-token-2', { ok: true, client: 'app' }],
    ['ops-token', { ok: true, client: 'ops' }],
    ['wrong', { ok: false, reason: 'denied' }],
    ['app-token ', { ok: false, reason: 'denied' }],
    ['APP-TOKEN', { ok: false, reason: 'denied' }],
    [hashToken('app-token'), { ok: false, reason: 'denied' }], // the hash is not the token
    [hashToken('app-token').slice('sha256:'.length), { ok: false, reason: 'denied' }],
  ])('AUTH %s', (token, expected) => {
    // A fresh policy per case, so earlier failures do not rate-limit this one.
    const fresh = policy({
      clients: [
        { name: 'app', match: { tokens: [hashToken('app-token'), hashToken('app-token-2')] } },
        { name: 'ops', match: { tokens: [hashToken('ops-token')] } },
      ],
    });
    expect(fresh.authenticate(token, tcp, {})).toEqual(expected);
  });

  it.each([
    ['a plaintext token', 'app-token'],
    ['a hash without its prefix', hashToken('x').slice('sha256:'.length)],
    ['another algorithm', `md5:${'0'.repeat(32)}`],
    ['a short hash', hashToken('x').slice(0, -1)],
    ['uppercase sha256 prefix', `SHA256:${'a'.repeat(64)}`],
  ])('the schema rejects %s, naming the field', (_what, token) => {
    const result = PolicySchema.safeParse({ clients: [{ name: 'x', match: { tokens: [token] } }] });
    expect(result.success).toBe(false);
    expect(result.error?.issues[0]?.path).toEqual(['clients', 0, 'match', 'tokens', 0]);
    expect(result.error?.issues[0]?.message).toMatch(/sha256:<64 hex digits>/);
    const raw = { policy: { clients: [{ name: 'x', match: { tokens: [token] } }] } };
    expect(() => validateConfig(raw, 'kmsgw.yaml')).toThrow(ConfigError);
    expect(() => validateConfig(raw, 'kmsgw.yaml')).toThrow('policy.clients.0.match.tokens.0: must be sha256:<64 hex digits>');
  });
});

describe('Policy: explain', () => {
  const p = policy({
    clients: [
      {
        name: 'app',
        match: { uids: [1000] },
        grants: [
          { verbs: ['LIST'], keys: ['app/*'] },
          { verbs: ['GET', 'ENC'], keys: ['pg/*', 'app/users'] },
          { verbs: ['admin'], keys: ['ops/*'] },
        ],
      },
    ],
  });

  it.each<[string | undefined, Verb, string | undefined, boolean, string]>([
    [undefined, 'PING', undefined, true, 'PING is always allowed'],
    [undefined, 'AUTH', undefined, true, 'AUTH is always allowed'],
    [undefined, 'GET', 'pg/x', false, 'the connection is not a known client (default deny)'],
    ['ghost', 'GET', 'pg/x', false, 'no client named ghost (default deny)'],
    ['app', 'GET', 'pg/x', true, 'grant #2 of app (verbs GET,ENC on pg/*,app/users)'],
    ['app', 'ENC', 'app/users', true, 'grant #2 of app (verbs GET,ENC on pg/*,app/users)'],
    ['app', 'DESTROY', 'ops/k', true, 'grant #3 of app (verbs admin on ops/*)'],
    ['app', 'LIST', undefined, true, 'grant #1 of app (verbs LIST on app/*)'],
    ['app', 'LIST', 'ops/k', true, 'grant #3 of app (verbs admin on ops/*)'],
    ['app', 'GET', 'other/k', false, 'no grant of app allows GET on other/k (default deny)'],
    ['app', 'DEC', 'pg/x', false, 'no grant of app allows DEC on pg/x (default deny)'],
    ['app', 'GET', 'ops/k', false, 'no grant of app allows GET on ops/k (default deny)'],
  ])('%s %s %s → %s: %s', (client, verb, key, allowed, reason) => {
    expect(p.explain(client, verb, key)).toEqual({ allowed, reason });
    expect(p.authorize(client, verb, key)).toBe(allowed);
  });

  it('a client without a LIST grant: "no grant ... allows LIST"', () => {
    expect(single(['GET'], ['*']).explain('c', 'LIST', undefined)).toEqual({
      allowed: false,
      reason: 'no grant of c allows LIST (default deny)',
    });
  });
});

describe('PolicySchema validation', () => {
  const valid = { name: 'app', match: { uids: [1000] }, grants: [{ verbs: ['GET'], keys: ['pg/*'] }] };

  it('fills defaults', () => {
    const parsed = PolicySchema.parse({ clients: [{ name: 'x', match: {} }] });
    expect(parsed).toEqual({
      clients: [{ name: 'x', match: { uids: [], certs: [], tokens: [] }, grants: [] }],
      authFailures: { max: 5, windowMs: 60_000 },
    });
  });

  it.each<[string, unknown, string, RegExp]>([
    ['no clients', { clients: [] }, 'policy.clients', /./],
    ['a bad client name', { clients: [{ ...valid, name: 'bad name!' }] }, 'policy.clients.0.name', /must be 1-64 characters/],
    ['a too long client name', { clients: [{ ...valid, name: 'x'.repeat(65) }] }, 'policy.clients.0.name', /must be 1-64 characters/],
    ['a negative uid', { clients: [{ ...valid, match: { uids: [-1] } }] }, 'policy.clients.0.match.uids.0', /./],
    ['a fractional uid', { clients: [{ ...valid, match: { uids: [1.5] } }] }, 'policy.clients.0.match.uids.0', /./],
    ['an empty cert name', { clients: [{ ...valid, match: { certs: [''] } }] }, 'policy.clients.0.match.certs.0', /./],
    ['an unknown match field', { clients: [{ ...valid, match: { user: 'postgres' } }] }, 'policy.clients.0.match', /user/],
    ['an unknown verb', { clients: [{ ...valid, grants: [{ verbs: ['FETCH'], keys: ['*'] }] }] }, 'policy.clients.0.grants.0.verbs.0', /./],
    ['a lowercase verb', { clients: [{ ...valid, grants: [{ verbs: ['get'], keys: ['*'] }] }] }, 'policy.clients.0.grants.0.verbs.0', /./],
    [
      'PING as a grant verb',
      { clients: [{ ...valid, grants: [{ verbs: ['PING'], keys: ['*'] }] }] },
      'policy.clients.0.grants.0.verbs.0',
      /./,
    ],
    ['no verbs', { clients: [{ ...valid, grants: [{ verbs: [], keys: ['*'] }] }] }, 'policy.clients.0.grants.0.verbs', /./],
    ['no keys', { clients: [{ ...valid, grants: [{ verbs: ['GET'], keys: [] }] }] }, 'policy.clients.0.grants.0.keys', /./],
    [
      'a glob with [',
      { clients: [{ ...valid, grants: [{ verbs: ['GET'], keys: ['pg/[ab]'] }] }] },
      'policy.clients.0.grants.0.keys.0',
      /must be a key-id glob/,
    ],
    [
      'a glob with a space',
      { clients: [{ ...valid, grants: [{ verbs: ['GET'], keys: ['pg x'] }] }] },
      'policy.clients.0.grants.0.keys.0',
      /must be a key-id glob/,
    ],
    [
      'an empty glob',
      { clients: [{ ...valid, grants: [{ verbs: ['GET'], keys: [''] }] }] },
      'policy.clients.0.grants.0.keys.0',
      /must be a key-id glob/,
    ],
    [
      'a glob over 256 characters',
      { clients: [{ ...valid, grants: [{ verbs: ['GET'], keys: ['a'.repeat(257)] }] }] },
      'policy.clients.0.grants.0.keys.0',
      /must be a key-id glob/,
    ],
    [
      'an unknown grant field',
      { clients: [{ ...valid, grants: [{ verbs: ['GET'], keys: ['*'], deny: true }] }] },
      'policy.clients.0.grants.0',
      /deny/,
    ],
    ['an unknown client field', { clients: [{ ...valid, role: 'admin' }] }, 'policy.clients.0', /role/],
    ['an unknown policy field', { clients: [valid], defaultAllow: true }, 'policy', /defaultAllow/],
    ['authFailures.max 0', { clients: [valid], authFailures: { max: 0 } }, 'policy.authFailures.max', /./],
    ['authFailures.windowMs under 1 s', { clients: [valid], authFailures: { windowMs: 10 } }, 'policy.authFailures.windowMs', /./],
  ])('rejects %s, naming %s', (_what, policyInput, field, message) => {
    let error: unknown;
    try {
      validateConfig({ policy: policyInput }, 'kmsgw.yaml');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const line = (error as Error).message.split('\n').find((l) => l.trim().startsWith(`${field}:`));
    expect(line, (error as Error).message).toBeDefined();
    expect(line).toMatch(message);
  });

  it('accepts a full example', () => {
    const c = validateConfig(
      {
        keys: { defaultKek: 'aws-kms://alias/pg' },
        policy: {
          clients: [
            {
              name: 'pg-cluster-1',
              match: { certs: ['pg-cluster-1'], uids: [26] },
              grants: [{ verbs: ['GET', 'ENC', 'DEC'], keys: ['pg/cluster-1/*'] }],
            },
            { name: 'ops', match: { tokens: [hashToken('s3cret')] }, grants: [{ verbs: ['admin'], keys: ['*'] }] },
          ],
        },
      },
      'kmsgw.yaml',
    );
    expect(c.policy?.clients.map((x) => x.name)).toEqual(['pg-cluster-1', 'ops']);
    expect(c.policy?.authFailures).toEqual({ max: 5, windowMs: 60_000 });
  });
});
