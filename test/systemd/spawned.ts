import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { onTestFinished } from 'vitest';
import { Lines } from '../helpers/serve-process.js';

const LISTENER = resolve(import.meta.dirname, 'notify-listener.py');

/** A NOTIFY_SOCKET opened by the test (a Python datagram socket); `messages` are the datagrams received. */
export async function notifySocket(dir: string): Promise<{ path: string; messages: Lines }> {
  const path = join(dir, 'notify.sock');
  const child = spawn('python3', ['-u', LISTENER, path], { stdio: ['pipe', 'pipe', 'inherit'] });
  onTestFinished(() => void child.stdin?.end());
  const messages = new Lines();
  const out = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  let listening: () => void;
  const ready = new Promise<void>((r) => (listening = r));
  out.on('line', (line) => (line === 'LISTENING' ? listening() : messages.push(JSON.parse(line) as string)));
  await Promise.race([ready, once(child, 'exit').then(() => Promise.reject(new Error('notify listener exited')))]);
  return { path, messages };
}
