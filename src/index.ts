/** Public API: the Node client, and the pieces to embed or test a gateway. */
export { createClient, defaultSocketPath, KmsgwError, type ClientOptions, type KmsgwClient } from './client/index.js';
export { ERROR_CODES, GatewayError, KmsError, type ErrorCode } from './protocol/errors.js';
export { startGateway, type RunningGateway, type StartOptions } from './serve.js';
export type { Pipeline, Session } from './pipeline/pipeline.js';
export { formatReply, type Outcome, type Reply } from './protocol/reply.js';
export { loadConfig, validateConfig, ConfigError } from './config/load.js';
export type { Config } from './config/schema.js';
export type { KeyWrapper, WrapContext, WrappedKey, GeneratedKey, AdapterModule } from '../adapters/types.js';
