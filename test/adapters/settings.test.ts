import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AdapterSettingsSchema, DEFAULT_ADAPTER_SETTINGS } from '../../adapters/settings.js';
import { ConfigError, validateConfig } from '../../src/config/load.js';

/** A default KEK that needs no local:// (which is off by default). */
const CLOUD_KEK = { defaultKek: 'aws-kms://alias/x' };

describe('adapter settings', () => {
  it('fills every default from the inner fields, for a missing or a partial section', () => {
    const defaults = {
      local: { enabled: false },
      'aws-kms': { maxAttempts: 1 },
      'gcp-kms': { tls: true, universeDomain: 'googleapis.com' },
      'azure-kv': { algorithm: 'RSA-OAEP-256' },
    };
    expect(AdapterSettingsSchema.parse({})).toEqual(defaults);
    expect(DEFAULT_ADAPTER_SETTINGS).toEqual(defaults);
    expect(AdapterSettingsSchema.parse({ 'gcp-kms': { endpoint: 'kms.internal:443' } })['gcp-kms']).toEqual({
      endpoint: 'kms.internal:443',
      tls: true,
      universeDomain: 'googleapis.com',
    });
    expect(validateConfig({ keys: CLOUD_KEK, kms: { adapters: { 'aws-kms': { region: 'eu-west-1' } } } }, 'test').kms.adapters).toEqual({
      ...defaults,
      'aws-kms': { region: 'eu-west-1', maxAttempts: 1 },
    });
  });

  it.each([
    [{ 'aws-kms': { maxAttempts: 0 } }, 'kms.adapters.aws-kms.maxAttempts: '],
    [{ 'aws-kms': { endpoint: 'not a url' } }, 'kms.adapters.aws-kms.endpoint: '],
    [{ 'gcp-kms': { endpoint: 'no-port' } }, 'kms.adapters.gcp-kms.endpoint: must be host:port'],
    [{ 'gcp-kms': { tls: 'yes' } }, 'kms.adapters.gcp-kms.tls: '],
    [{ 'azure-kv': { algorithm: 'RSA1_5' } }, 'kms.adapters.azure-kv.algorithm: '],
    [{ 'azure-kv': { caFlie: '/x' } }, 'kms.adapters.azure-kv: Unrecognized key: "caFlie"'],
    [{ 'aws-kmz': {} }, 'kms.adapters: Unrecognized key: "aws-kmz"'],
    [{ local: { enabled: 'yes' } }, 'kms.adapters.local.enabled: '],
    [{ local: { dir: 'relative/kek-dir' } }, 'kms.adapters.local.dir: must be an absolute path'],
  ])('the config refuses kms.adapters %j at start-up, naming %s', (adapters, field) => {
    expect(() => validateConfig({ kms: { adapters } }, 'test')).toThrow(ConfigError);
    expect(() => validateConfig({ kms: { adapters } }, 'test')).toThrow(field);
  });

  it('validating the config, adapter settings included, loads no cloud SDK', () => {
    const load = fileURLToPath(new URL('../../dist/src/config/load.js', import.meta.url));
    // Every module the import resolves, recorded by a resolve hook in a fresh process.
    const script = `
      import { registerHooks } from 'node:module';
      const seen = [];
      registerHooks({ resolve: (s, c, next) => (seen.push(s), next(s, c)) });
      const { validateConfig } = await import(${JSON.stringify(load)});
      validateConfig({ keys: { defaultKek: 'aws-kms://alias/x' }, kms: { adapters: { 'aws-kms': {}, 'gcp-kms': {}, 'azure-kv': {} } } }, 'test');
      console.log(JSON.stringify(seen));`;
    const seen = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })) as string[];
    expect(seen).toContain('zod');
    expect(seen.filter((s) => /@aws-sdk|@google-cloud|google-gax|@azure|grpc/.test(s))).toEqual([]);
  });
});
