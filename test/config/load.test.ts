import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { EXAMPLE_CONFIG } from '../../src/cli/example-config.js';
import { ConfigError, loadConfig, validateConfig } from '../../src/config/load.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
/** The one field a config using the default (local) KEK must add. */
const LOCAL_ON = { kms: { adapters: { local: { enabled: true } } } };
const LOCAL_ON_YAML = 'kms:\n  adapters:\n    local:\n      enabled: true\n';

describe('configuration', () => {
  it('the config kmsgw init writes shows the schema defaults, except autoCreate and local KEKs (on for development)', () => {
    const example = validateConfig(parseYaml(EXAMPLE_CONFIG), 'example');
    const defaults = validateConfig(LOCAL_ON, 'test');
    expect(example.keys.autoCreate).toBe(true);
    expect(example.kms.adapters.local.enabled).toBe(true);
    expect({ ...example, keys: { ...example.keys, autoCreate: false } }).toEqual(defaults);
  });

  it('fills documented defaults from an empty file (plus local KEKs on)', () => {
    const c = validateConfig(LOCAL_ON, 'test');
    expect(c).toMatchObject({
      dataDir: '.kmsgw',
      listen: { socket: { path: '.kmsgw/kmsgw.sock', mode: 0o600 } },
      limits: { maxLineBytes: 1024 * 1024, maxConnections: 1024, idleTimeoutMs: 300_000 },
      cache: { maxEntries: 10_000, ttlMs: 300_000 },
      keys: { autoCreate: false, defaultKek: 'local://local-kek' },
      kms: { timeoutMs: 2000 },
    });
  });

  it.each([
    [{ cache: { ttlMs: 'soon' } }, 'cache.ttlMs'],
    [{ limits: { maxLineBytes: 10 } }, 'limits.maxLineBytes'],
    [{ listen: { socket: { mode: '0999' } } }, 'listen.socket.mode'],
    [{ keys: { defaultKek: 'not a uri' } }, 'keys.defaultKek'],
    [{ cach: {} }, '(top level)'],
    [{ listen: { tcp: { host: '127.0.0.1' } } }, 'listen.tcp.port'],
  ])('names the bad field: %j', (raw, field) => {
    expect(() => validateConfig(raw, 'kmsgw.yaml')).toThrow(ConfigError);
    expect(() => validateConfig(raw, 'kmsgw.yaml')).toThrow(field);
  });

  it('applies environment overrides with types', () => {
    const c = validateConfig({ keys: { autoCreate: true }, ...LOCAL_ON }, 'test', {
      KMSGW_AUTO_CREATE: 'false',
      KMSGW_CACHE_TTL_MS: '1000',
      KMSGW_SOCKET: '/run/kmsgw/kmsgw.sock',
      KMSGW_DEFAULT_KEK: 'local:///etc/kek',
      KMSGW_TCP_PORT: '7878',
      KMSGW_KEYSTORE_URL: 's3://acme-kmsgw-keys/pg/cluster-1',
    });
    expect(c.keystore.url).toBe('s3://acme-kmsgw-keys/pg/cluster-1');
    expect(c.keys).toEqual({ autoCreate: false, maxEncryptionsPerVersion: 2 ** 32, defaultKek: 'local:///etc/kek', recovery: [] });
    expect(c.cache.ttlMs).toBe(1000);
    expect(c.listen.socket?.path).toBe('/run/kmsgw/kmsgw.sock');
    expect(c.listen.tcp).toEqual({ host: '127.0.0.1', port: 7878, insecure: false });
  });

  it('loads YAML and JSON, resolves relative to the file, and falls back to the dev default', async () => {
    const dir = await tmp();
    await writeFile(join(dir, 'k.yaml'), `# comment\nlisten:\n  socket:\n    path: s.sock\n    mode: "0660"\n${LOCAL_ON_YAML}`);
    const yaml = await loadConfig('k.yaml', {}, dir);
    expect(yaml.file).toBe(join(dir, 'k.yaml'));
    expect(yaml.baseDir).toBe(dir);
    expect(yaml.config.listen.socket).toEqual({ path: 's.sock', mode: 0o660 });
    await writeFile(join(dir, 'k.json'), JSON.stringify({ cache: { ttlMs: 5 }, ...LOCAL_ON }));
    expect((await loadConfig(join(dir, 'k.json'), {}, '/')).config.cache.ttlMs).toBe(5);
    const dev = await loadConfig(undefined, {}, dir);
    expect(dev.file).toBeUndefined();
    expect(dev.config.keys.autoCreate).toBe(true);
    await writeFile(join(dir, 'kmsgw.yaml'), `keys:\n  autoCreate: false\n${LOCAL_ON_YAML}`);
    expect((await loadConfig(undefined, {}, dir)).config.keys.autoCreate).toBe(false);
    await expect(loadConfig('missing.yaml', {}, dir)).rejects.toThrow(/cannot read config file/);
    await writeFile(join(dir, 'broken.yaml'), 'a: [1, 2');
    await expect(loadConfig('broken.yaml', {}, dir)).rejects.toThrow(/not valid YAML/);
  });

  it('refuses a keystore.url it cannot use, saying which forms it takes', () => {
    for (const [url, says] of [
      ['ftp://x/y', 'scheme "ftp" is not supported'],
      ['s3://Bad_Bucket/p', 'is not a valid S3 bucket name'],
      ['s3://bucket/../p', 'no empty or dot segments'],
      ['azblob://acct/c', 'is not a valid Azure blob container name'],
      ['file://', 'needs a folder'],
    ] as const) {
      expect(() => validateConfig({ keystore: { url }, kms: { adapters: { local: { enabled: true } } } }, 'test')).toThrow(says);
    }
  });
});
