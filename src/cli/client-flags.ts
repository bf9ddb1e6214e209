import type { Command } from 'commander';
import { createClient, defaultSocketPath, type KmsgwClient } from '../client/index.js';
import { DEFAULT_SOCKET_PATH } from '../config/defaults.js';
import { UsageError } from './errors.js';

export interface ClientFlags {
  socket?: string;
  timeout: string;
}

export async function withClient<T>(flags: ClientFlags, fn: (c: KmsgwClient) => Promise<T>): Promise<T> {
  const timeoutMs = Number(flags.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0) throw new UsageError('--timeout must be a whole number of ms');
  const client = await createClient({ socketPath: flags.socket ?? defaultSocketPath(), timeoutMs });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

export function clientOptions(cmd: Command): Command {
  return cmd
    .option('--socket <path>', `gateway socket (default: $KMSGW_SOCKET, else ${DEFAULT_SOCKET_PATH})`)
    .option('--timeout <ms>', 'give up after this many ms without a reply', '10000');
}
