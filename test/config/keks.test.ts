import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, validateConfig } from '../../src/config/load.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();

/** The ConfigError's line for `field`, or a failure naming the whole message. */
function issueFor(raw: unknown, field: string): string {
  let error: unknown;
  try {
    validateConfig(raw, 'kmsgw.yaml');
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(ConfigError);
  const line = (error as Error).message.split('\n').find((l) => l.trim().startsWith(`${field}:`));
  expect(line, (error as Error).message).toBeDefined();
  return line as string;
}

describe('configuration: which KEKs may be used', () => {
  it('local:// KEKs are off by default, so a config left on the default local KEK stops start-up, naming keys.defaultKek', () => {
    expect(issueFor({}, 'keys.defaultKek')).toMatch(
      /local:\/\/local-kek is a local KEK file, and local:\/\/ KEKs are off: name a cloud KEK, or set kms\.adapters\.local\.enabled: true/,
    );
    expect(
      issueFor({ keys: { defaultKek: 'local:///etc/kek' }, kms: { adapters: { local: { enabled: false } } } }, 'keys.defaultKek'),
    ).toMatch(/local:\/\/\/etc\/kek is a local KEK file/);
    expect(issueFor({}, 'keys.defaultKek')).not.toMatch(/allowedKeks/);
  });

  it('a cloud default KEK needs nothing else; local:// stays off', () => {
    const c = validateConfig({ keys: { defaultKek: 'aws-kms://alias/pg' } }, 'test');
    expect(c.kms.adapters.local).toEqual({ enabled: false });
    expect(c.keys.allowedKeks).toBeUndefined(); // the default: just keys.defaultKek
  });

  it('the embedded development default enables local:// KEKs and allows only its default KEK', async () => {
    const dev = await loadConfig(undefined, {}, await tmp());
    expect(dev.file).toBeUndefined();
    expect(dev.config.kms.adapters.local).toEqual({ enabled: true });
    expect(dev.config.keys).toMatchObject({ defaultKek: 'local://local-kek' });
    expect(dev.config.keys.allowedKeks).toBeUndefined();
  });

  it('keys.allowedKeks takes globs and must allow keys.defaultKek', () => {
    const keys = { defaultKek: 'aws-kms://arn:aws:kms:eu-west-1:1:key/a', allowedKeks: ['aws-kms://arn:aws:kms:eu-west-1:1:key/*'] };
    expect(validateConfig({ keys }, 'test').keys.allowedKeks).toEqual(keys.allowedKeks);
    expect(issueFor({ keys: { ...keys, allowedKeks: ['gcp-kms://*'] } }, 'keys.allowedKeks')).toMatch(
      /must allow keys\.defaultKek \(aws-kms:\/\/arn:aws:kms:eu-west-1:1:key\/a\)/,
    );
    expect(issueFor({ keys: { ...keys, allowedKeks: [] } }, 'keys.allowedKeks')).toBeDefined();
    expect(issueFor({ keys: { ...keys, allowedKeks: ['aws-kms://a b'] } }, 'keys.allowedKeks.0')).toMatch(/must be a KEK URI glob/);
  });

  it('a policy grant may name KEK globs (keks), checked like allowedKeks', () => {
    const client = (keks: unknown) => ({ name: 'ops', match: { uids: [0] }, grants: [{ verbs: ['admin'], keys: ['*'], keks }] });
    const keys = { defaultKek: 'aws-kms://alias/x' };
    const c = validateConfig({ keys, policy: { clients: [client(['aws-kms://*'])] } }, 'test');
    expect(c.policy?.clients[0]?.grants[0]?.keks).toEqual(['aws-kms://*']);
    expect(issueFor({ keys, policy: { clients: [client([])] } }, 'policy.clients.0.grants.0.keks')).toBeDefined();
    expect(issueFor({ keys, policy: { clients: [client(['x y'])] } }, 'policy.clients.0.grants.0.keks.0')).toMatch(
      /must be a KEK URI glob/,
    );
  });
});
