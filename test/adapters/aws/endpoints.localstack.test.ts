import { afterAll, describe, expect, inject, it } from 'vitest';
import { AwsSettingsSchema } from '../../../adapters/aws/settings.js';
import { rawConnect, startTestGateway, useRunningGateways } from '../../helpers/gateway.js';
import { createKek, startLocalStack, type LocalStackInstance } from '../../helpers/localstack.js';
import { useTmpDirs } from '../../helpers/tmp.js';

// LocalStack accepts any credentials; the gateway reads them through the SDK's default chain.
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';

const shared = inject('localstack');
const tmp = useTmpDirs();
const running = useRunningGateways();
let europe: LocalStackInstance | undefined;
afterAll(async () => europe?.stop());

describe('kms.adapters.aws-kms.endpoints: one endpoint per region', () => {
  it('sends each KEK to the endpoint of the region in its ARN (two LocalStacks standing for two regions)', async () => {
    europe = await startLocalStack();
    const usKek = await createKek(shared.endpoint, { region: 'us-east-1' });
    const euKek = await createKek(europe.endpoint, { region: 'eu-west-1' });
    expect(usKek).toContain(':us-east-1:');
    expect(euKek).toContain(':eu-west-1:');
    const gw = await startTestGateway(await tmp(), {
      kms: {
        timeoutMs: 1000,
        adapters: { 'aws-kms': { endpoints: { 'us-east-1': shared.endpoint, 'eu-west-1': europe.endpoint } } },
      },
    });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`CREATE app/us aws-kms://${usKek}`)).toBe('OK 1');
    expect(await c.ask(`CREATE app/eu aws-kms://${euKek}`)).toBe('OK 1');
    gw.cache.clear();
    expect(await c.ask('GET app/us')).toMatch(/^OK /);
    expect(await c.ask('GET app/eu')).toMatch(/^OK /);
    // Each key was reached at its own region's endpoint: stopping Europe's leaves the US key served.
    await europe.stop();
    gw.cache.clear();
    expect(await c.ask('GET app/us')).toMatch(/^OK /);
    expect(await c.ask('GET app/eu')).toMatch(/^ERR KMS_UNAVAILABLE /);
    c.close();
  });

  it('a region that is not listed uses the single endpoint', async () => {
    const usKek = await createKek(shared.endpoint, { region: 'us-east-1' });
    const gw = await startTestGateway(await tmp(), {
      kms: { adapters: { 'aws-kms': { endpoint: shared.endpoint, endpoints: { 'eu-west-1': 'http://127.0.0.1:9' } } } },
    });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`CREATE app/k aws-kms://${usKek}`)).toBe('OK 1');
    gw.cache.clear();
    expect(await c.ask('GET app/k')).toMatch(/^OK /);
    c.close();
  });

  it('refuses a map key that is not a region, or a value that is not a URL, naming the field', () => {
    expect(AwsSettingsSchema.safeParse({ endpoints: { 'eu-west-1': 'https://kms-fips.eu-west-1.amazonaws.com' } }).success).toBe(true);
    const bad = AwsSettingsSchema.safeParse({ endpoints: { Europe: 'https://x', 'us-east-1': 'not a url' } });
    expect(bad.success).toBe(false);
    const paths = bad.error?.issues.map((i) => i.path.join('.'));
    expect(paths).toEqual(expect.arrayContaining(['endpoints.Europe', 'endpoints.us-east-1']));
  });
});
