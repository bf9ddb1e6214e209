import { DisableKeyCommand, EnableKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { afterAll, inject } from 'vitest';
import aws from '../../adapters/aws/index.js';
import { awsThrottling, startHttpFaultProxy } from '../helpers/http-fault-proxy.js';
import { createKek } from '../helpers/localstack.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import { describeOutage, type OutageKms } from './outage.js';

// LocalStack accepts any credentials; the gateway reads them through the SDK's default chain.
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';

const ls = inject('localstack');
const sdk = new KMSClient({ endpoint: ls.endpoint, region: ls.region, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
afterAll(() => sdk.destroy());

/**
 * The shared LocalStack behind a private path: the gateway → a TCP relay (down: refuses connections)
 * → an HTTP fault proxy (AWS's ThrottlingException with Retry-After; slow) → LocalStack. Each test's
 * KEKs are its own, disabled and enabled with DisableKey/EnableKey.
 */
async function open(): Promise<OutageKms> {
  const http = await startHttpFaultProxy(Number(new URL(ls.endpoint).port));
  const relay = await startTcpProxy(http.port);
  return {
    adapters: { 'aws-kms': { endpoint: `http://127.0.0.1:${relay.port}`, region: ls.region } },
    newKek: async () => {
      const arn = await createKek(ls.endpoint);
      return { uri: `aws-kms://${arn}`, kekVersion: arn };
    },
    down: () => relay.refuse(),
    up: async () => {
      http.clear();
      await relay.accept();
    },
    throttle: async (ms, times) => http.fail(awsThrottling(Math.ceil(ms / 1000), times)),
    slow: async (ms) => http.delay(ms),
    disable: async (kek) => void (await sdk.send(new DisableKeyCommand({ KeyId: kek.kekVersion }))),
    enable: async (kek) => void (await sdk.send(new EnableKeyCommand({ KeyId: kek.kekVersion }))),
    dispose: async () => {
      await relay.close();
      await http.close();
    },
  };
}

describeOutage('AWS KMS (LocalStack)', {
  scheme: 'aws-kms',
  module: aws,
  open,
  deniedReply: 'ERR KMS_DENIED AWS KMS: the KEK is disabled',
});
