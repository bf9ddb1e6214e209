import {
  DependencyTimeoutException,
  DisabledException,
  IncorrectKeyException,
  InvalidCiphertextException,
  KMSInternalException,
  KMSInvalidStateException,
  KMSServiceException,
  LimitExceededException,
  NotFoundException,
} from '@aws-sdk/client-kms';
import { describe, expect, it } from 'vitest';
import { classify, encryptionContext, parseAwsKek } from '../../../adapters/aws/index.js';

const meta = (httpStatusCode: number) => ({ $metadata: { httpStatusCode } });
const sdk = <T>(Ctor: new (o: { message: string; $metadata: object }) => T, status = 400) =>
  new Ctor({ message: 'arn:aws:kms:... raw SDK text', ...meta(status) });

function serviceError(name: string, status: number, fault: 'client' | 'server' = 'client', extra: object = {}) {
  return Object.assign(
    new KMSServiceException({ name, $fault: fault, message: 'raw SDK text', $metadata: { httpStatusCode: status } }),
    extra,
  );
}

function networkError(code: string) {
  return Object.assign(new Error(`connect ${code} 127.0.0.1:4566`), { code });
}

describe('aws classify()', () => {
  it.each([
    ['DisabledException', sdk(DisabledException), 'KMS_DENIED'],
    ['KMSInvalidStateException', sdk(KMSInvalidStateException), 'KMS_DENIED'],
    ['NotFoundException', sdk(NotFoundException), 'KMS_DENIED'],
    // Not modelled as a class by the SDK: arrives as a generic service exception.
    ['AccessDeniedException', serviceError('AccessDeniedException', 400), 'KMS_DENIED'],
    ['InvalidCiphertextException', sdk(InvalidCiphertextException), 'DECRYPT_FAILED'],
    ['IncorrectKeyException', sdk(IncorrectKeyException), 'DECRYPT_FAILED'],
    ['ThrottlingException', serviceError('ThrottlingException', 400), 'THROTTLED'],
    ['LimitExceededException', sdk(LimitExceededException), 'THROTTLED'],
    ['KMSInternalException', sdk(KMSInternalException, 500), 'KMS_UNAVAILABLE'],
    ['DependencyTimeoutException', sdk(DependencyTimeoutException, 503), 'KMS_UNAVAILABLE'],
    ['unknown 503', serviceError('ServiceUnavailable', 503, 'server'), 'KMS_UNAVAILABLE'],
    ['unknown 500 client-fault', serviceError('Weird', 500), 'KMS_UNAVAILABLE'],
    ['unknown 429', serviceError('TooMany', 429), 'THROTTLED'],
    ['retryable throttling', serviceError('SlowDown', 400, 'client', { $retryable: { throttling: true } }), 'THROTTLED'],
    ['unknown 403', serviceError('Forbidden', 403), 'KMS_DENIED'],
    ['UnrecognizedClientException', serviceError('UnrecognizedClientException', 400), 'KMS_DENIED'],
    ['no credentials', Object.assign(new Error('Could not load credentials'), { name: 'CredentialsProviderError' }), 'KMS_DENIED'],
    ['TimeoutError', Object.assign(new Error('socket timed out'), { name: 'TimeoutError' }), 'KMS_UNAVAILABLE'],
    ['AbortError', Object.assign(new Error('aborted'), { name: 'AbortError' }), 'KMS_UNAVAILABLE'],
    ['ECONNREFUSED', networkError('ECONNREFUSED'), 'KMS_UNAVAILABLE'],
    ['ECONNRESET', networkError('ECONNRESET'), 'KMS_UNAVAILABLE'],
    ['ENOTFOUND', networkError('ENOTFOUND'), 'KMS_UNAVAILABLE'],
    ['ValidationException', serviceError('ValidationException', 400), 'INTERNAL'],
    ['no region configured', new Error('Region is missing'), 'KMS_DENIED'],
    ['a string', 'boom', 'INTERNAL'],
    ['undefined', undefined, 'INTERNAL'],
  ] as const)('%s → %s', (_label, err, code) => {
    const mapped = classify(err);
    expect(mapped.code).toBe(code);
    expect(mapped.name).toBe('KmsError');
    expect(mapped.cause).toBe(err);
    // Never the SDK's own text.
    expect(mapped.message).not.toContain('raw SDK text');
    expect(mapped.message).not.toContain('127.0.0.1');
    expect(mapped.message).toMatch(/^AWS KMS: /);
  });
});

describe('aws classify() throttling hints', () => {
  /** The SDK attaches the HTTP response to an error as a hidden `$response`, as it does here. */
  const withResponse = <T extends object>(err: T, headers: Record<string, string>): T =>
    Object.defineProperty(err, '$response', { value: { statusCode: 400, headers }, enumerable: false });

  it('hands Retry-After (seconds or a date) or x-amz-retry-after (ms) of a throttled or failed call to the guard', () => {
    expect(classify(withResponse(serviceError('ThrottlingException', 400), { 'retry-after': '3' }))).toMatchObject({
      code: 'THROTTLED',
      retryAfterMs: 3000,
    });
    expect(classify(withResponse(serviceError('ThrottlingException', 400), { 'x-amz-retry-after': '250' })).retryAfterMs).toBe(250);
    expect(classify(withResponse(sdk(KMSInternalException, 500), { 'Retry-After': '1' })).retryAfterMs).toBe(1000);
    const date = classify(
      withResponse(serviceError('ThrottlingException', 400), { 'retry-after': new Date(Date.now() + 9000).toUTCString() }),
    );
    expect(date.retryAfterMs).toBeGreaterThan(7000);
    expect(date.retryAfterMs).toBeLessThanOrEqual(9000);
  });

  it('no hint without the header, with an unreadable one, or on a refusal that is not an outage', () => {
    expect(classify(serviceError('ThrottlingException', 400)).retryAfterMs).toBeUndefined();
    expect(classify(withResponse(serviceError('ThrottlingException', 400), { 'retry-after': 'later' })).retryAfterMs).toBeUndefined();
    expect(classify(withResponse(sdk(DisabledException), { 'retry-after': '3' }))).toMatchObject({
      code: 'KMS_DENIED',
      retryAfterMs: undefined,
    });
  });
});

describe('aws-kms KEK URIs', () => {
  it.each([
    ['aws-kms://arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab', 'eu-west-1'],
    ['aws-kms://arn:aws:kms:us-east-1:123456789012:alias/pg-kek', 'us-east-1'],
    ['aws-kms://arn:aws-us-gov:kms:us-gov-west-1:123456789012:alias/x', 'us-gov-west-1'],
    ['aws-kms://alias/pg/cluster-1', undefined],
  ])('%s', (uri, region) => {
    const parsed = parseAwsKek(uri);
    expect(parsed.keyId).toBe(uri.slice('aws-kms://'.length));
    expect(parsed.region).toBe(region);
  });

  it.each([
    'aws-kms://',
    'aws-kms://1234abcd-12ab-34cd-56ef-1234567890ab',
    'aws-kms://alias/aws/ebs',
    'aws-kms://arn:aws:s3:::bucket',
    'aws-kms://arn:aws:kms:us-east-1:12:key/x',
    'local://alias/x',
  ])('refuses %s', (uri) => {
    expect(() => parseAwsKek(uri)).toThrow(/aws-kms KEK URI must be/);
  });

  it('binds the blob to key id and version in the encryption context', () => {
    expect(encryptionContext({ keyId: 'pg/cluster-1', version: 3 })).toEqual({ 'kmsgw:key-id': 'pg/cluster-1', 'kmsgw:version': '3' });
  });
});
