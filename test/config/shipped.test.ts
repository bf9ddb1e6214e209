import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';

const ROOT = resolve(import.meta.dirname, '../..');

describe('configs shipped in the repository', () => {
  it('deploy/kmsgw.yaml (docs/postgresql.md) loads: no auto-creation, no local KEK, a policy, an audit log, a 0660 socket', async () => {
    const { config } = await loadConfig(resolve(ROOT, 'deploy/kmsgw.yaml'), {});
    expect(config.keys.autoCreate).toBe(false);
    expect(config.keys.defaultKek).toMatch(/^aws-kms:\/\//);
    expect(config.kms.adapters.local.enabled).toBe(false);
    expect(config.listen.socket).toEqual({ path: '/run/kmsgw/kmsgw.sock', mode: 0o660 });
    expect(config.policy?.clients.map((c) => c.name)).toEqual(['postgres', 'admin']);
    expect(config.audit.file).toBe('/var/lib/kmsgw/audit.log');
    expect(config.ops).toEqual({ listen: '127.0.0.1:9464', allowRemote: false, metrics: true });
  });

  it('localstack/kmsgw.localstack.yaml (README) loads with the LocalStack endpoint', async () => {
    const { config } = await loadConfig(resolve(ROOT, 'localstack/kmsgw.localstack.yaml'), {});
    expect(config.kms.adapters['aws-kms'].endpoint).toBe('http://127.0.0.1:4566');
    expect(config.keys.defaultKek).toBe('aws-kms://alias/kmsgw-demo');
  });

  it('localstack/kmsgw.localstack-s3.yaml (README) loads with its key store in LocalStack S3', async () => {
    const { config } = await loadConfig(resolve(ROOT, 'localstack/kmsgw.localstack-s3.yaml'), {});
    expect(config.keystore).toMatchObject({ url: 's3://kmsgw-dev/dev/', endpoint: 'http://127.0.0.1:4566', forcePathStyle: true });
  });
});
