import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { Policy, PolicySchema } from '../../src/policy/policy.js';

type Grants = z.input<typeof PolicySchema>['clients'][number]['grants'];

/** A policy with one client, `c` (uid 1), holding `grants`. */
const clientWith = (grants: Grants) => new Policy(PolicySchema.parse({ clients: [{ name: 'c', match: { uids: [1] }, grants }] }));

const policy = clientWith([
  { verbs: ['CREATE', 'ROTATE'], keys: ['pg/*'], keks: ['aws-kms://arn:aws:kms:eu-west-1:*', 'gcp-kms://projects/pg/*'] },
  { verbs: ['REWRAP'], keys: ['pg/legacy/*'] },
]);

describe('Policy: KEK URIs a grant may name (keks)', () => {
  it.each<[string, string, string | undefined, boolean, string]>([
    [
      'CREATE',
      'pg/a',
      undefined,
      true,
      'grant #1 of c (verbs CREATE,ROTATE on pg/* with KEKs aws-kms://arn:aws:kms:eu-west-1:*,gcp-kms://projects/pg/*)',
    ],
    [
      'CREATE',
      'pg/a',
      'aws-kms://arn:aws:kms:eu-west-1:1:key/k',
      true,
      'grant #1 of c (verbs CREATE,ROTATE on pg/* with KEKs aws-kms://arn:aws:kms:eu-west-1:*,gcp-kms://projects/pg/*)',
    ],
    [
      'ROTATE',
      'pg/a',
      'gcp-kms://projects/pg/locations/eu/keyRings/r/cryptoKeys/k',
      true,
      'grant #1 of c (verbs CREATE,ROTATE on pg/* with KEKs aws-kms://arn:aws:kms:eu-west-1:*,gcp-kms://projects/pg/*)',
    ],
    [
      'ROTATE',
      'pg/a',
      'aws-kms://arn:aws:kms:us-east-1:1:key/k',
      false,
      'no grant of c allows ROTATE on pg/a with KEK aws-kms://arn:aws:kms:us-east-1:1:key/k (default deny)',
    ],
    [
      'CREATE',
      'pg/a',
      'local:///home/me/own.kek',
      false,
      'no grant of c allows CREATE on pg/a with KEK local:///home/me/own.kek (default deny)',
    ],
    ['CREATE', 'app/a', 'aws-kms://arn:aws:kms:eu-west-1:1:key/k', false, 'no grant of c allows CREATE on app/a (default deny)'],
    // A grant without keks leaves the choice to keys.allowedKeks.
    ['REWRAP', 'pg/legacy/x', 'local://anything', true, 'grant #2 of c (verbs REWRAP on pg/legacy/*)'],
  ])('%s %s naming %s → %s', (verb, key, kek, allowed, reason) => {
    expect(policy.explain('c', verb as never, key, kek)).toEqual({ allowed, reason });
    expect(policy.authorize('c', verb as never, key, kek)).toBe(allowed);
  });

  it('a later grant without keks can allow what an earlier grant with keks refuses', () => {
    const p = clientWith([
      { verbs: ['ROTATE'], keys: ['*'], keks: ['fake://a'] },
      { verbs: ['ROTATE'], keys: ['pg/*'] },
    ]);
    expect(p.authorize('c', 'ROTATE', 'app/x', 'fake://b')).toBe(false);
    expect(p.authorize('c', 'ROTATE', 'pg/x', 'fake://b')).toBe(true);
  });
});
