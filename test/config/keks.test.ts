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

describe('configuration: local KEKs', () => {
  it('local:// KEKs are off by default, so a config left on the default local KEK stops start-up, naming keys.defaultKek', () => {
    expect(issueFor({}, 'keys.defaultKek')).toMatch(
      /local:\/\/local-kek is a local KEK file, and local:\/\/ KEKs are off: name a cloud KEK, or set kms\.adapters\.local\.enabled: true/,
    );
    expect(
      issueFor({ keys: { defaultKek: 'local:///etc/kek' }, kms: { adapters: { local: { enabled: false } } } }, 'keys.defaultKek'),
    ).toMatch(/local:\/\/\/etc\/kek is a local KEK file/);
  });

  it('a cloud default KEK needs nothing else; local:// stays off', () => {
    const c = validateConfig({ keys: { defaultKek: 'aws-kms://alias/pg' } }, 'test');
    expect(c.kms.adapters.local).toEqual({ enabled: false });
  });

  it('the embedded development default enables local:// KEKs', async () => {
    const dev = await loadConfig(undefined, {}, await tmp());
    expect(dev.file).toBeUndefined();
    expect(dev.config.kms.adapters.local).toEqual({ enabled: true });
    expect(dev.config.keys).toMatchObject({ defaultKek: 'local://local-kek' });
  });
});
