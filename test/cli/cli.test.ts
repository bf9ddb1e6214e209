import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { b64, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');
const tmp = useTmpDirs();
const running = useRunningGateways();

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function kmsgw(args: string[], opts: { input?: Buffer | string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? process.cwd(),
      env: { ...process.env, KMSGW_SOCKET: '', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout: Buffer.concat(out), stderr: err }));
    // A command that fails early stops reading: our write then gets EPIPE, as any writer would.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

beforeAll(() => {
  if (!existsSync(resolve(import.meta.dirname, '../../dist/src/cli/main.js'))) {
    throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
  }
});

async function gateway() {
  const gw = await startTestGateway(await tmp());
  running.push(gw);
  return { gw, sock: ['--socket', gw.socketPath as string] };
}

describe('kmsgw CLI against a running gateway', () => {
  it('get --format hex prints 64 hex characters, the same on every call', async () => {
    const { sock } = await gateway();
    const a = await kmsgw(['get', 'demo/key', '--format', 'hex', ...sock]);
    expect(a.code).toBe(0);
    expect(a.stdout.toString()).toMatch(/^[0-9a-f]{64}\n$/);
    const b = await kmsgw(['get', 'demo/key', '--format', 'hex', ...sock]);
    expect(b.stdout.toString()).toBe(a.stdout.toString());
    const raw = await kmsgw(['get', 'demo/key', '--format', 'raw', ...sock]);
    expect(raw.stdout.toString('hex')).toBe(a.stdout.toString().trim());
    // As ssl_passphrase_command with --prompt '%p': the prompt is ignored; a stray argument is refused.
    const prompted = await kmsgw(['get', 'demo/key', '--format', 'hex', '--prompt', 'Enter PEM pass phrase:', ...sock]);
    expect(prompted.stdout.toString()).toBe(a.stdout.toString());
    expect((await kmsgw(['get', 'demo/key', 'Enter', ...sock])).code).toBe(2);
    const b64 = await kmsgw(['get', 'demo/key', ...sock]);
    expect(Buffer.from(b64.stdout.toString().trim(), 'base64').toString('hex')).toBe(a.stdout.toString().trim());
  });

  it('finds the socket through KMSGW_SOCKET', async () => {
    const { gw } = await gateway();
    const r = await kmsgw(['ping'], { env: { KMSGW_SOCKET: gw.socketPath as string } });
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout.toString()).toBe('PONG\n');
  });

  it('enc and dec filter stdin to stdout, with --aad', async () => {
    const { sock } = await gateway();
    const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => i & 0xff));
    const enc = await kmsgw(['enc', 'col/key', '--aad', 'users.email', ...sock], { input: data });
    expect(enc.code).toBe(0);
    // A kmsgw stream: header, one chunk record, the trailer record.
    expect(enc.stdout.subarray(0, 4).toString()).toBe('KGWS');
    expect(enc.stdout.length).toBe(26 + (4 + data.length + 33) + (4 + 8 + 33));
    const dec = await kmsgw(['dec', 'col/key', '--aad', 'users.email', ...sock], { input: enc.stdout });
    expect(dec.code).toBe(0);
    expect(dec.stdout.equals(data)).toBe(true);
    const wrongAad = await kmsgw(['dec', 'col/key', '--aad', 'users.name', ...sock], { input: enc.stdout });
    expect(wrongAad.code).toBe(1);
    expect(wrongAad.stderr).toBe('kmsgw: DECRYPT_FAILED envelope failed authentication\n');
    expect(wrongAad.stdout.length).toBe(0);
  });

  it('-i/-o read and write files, and a failed dec leaves nothing at -o', async () => {
    const { gw, sock } = await gateway();
    const input = join(gw.dir, 'plain.bin');
    const sealed = join(gw.dir, 'sealed.bin');
    const opened = join(gw.dir, 'opened.bin');
    await writeFile(input, 'wal segment bytes');
    expect((await kmsgw(['enc', 'pg/wal', '-i', input, '-o', sealed, ...sock])).code).toBe(0);
    expect((await stat(sealed)).mode & 0o777).toBe(0o600);
    expect((await kmsgw(['dec', 'pg/wal', '-i', sealed, '-o', opened, ...sock])).code).toBe(0);
    expect(await readFile(opened, 'utf8')).toBe('wal segment bytes');

    const tampered = await readFile(sealed);
    tampered[tampered.length - 3] = (tampered[tampered.length - 3] as number) ^ 0x40;
    await writeFile(sealed, tampered);
    const bad = join(gw.dir, 'never.bin');
    const r = await kmsgw(['dec', 'pg/wal', '-i', sealed, '-o', bad, ...sock]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^kmsgw: DECRYPT_FAILED /);
    expect(existsSync(bad)).toBe(false);
  });

  it('streams inputs larger than a protocol line (a 16 MiB WAL segment), and an empty one', async () => {
    const { gw, sock } = await gateway();
    const segment = Buffer.alloc(16 * 1024 * 1024);
    for (let i = 0; i < segment.length; i += 4096) segment.writeUInt32BE(i, i); // not constant, not random
    const plainPath = join(gw.dir, '000000010000000000000003');
    const sealedPath = join(gw.dir, 'sealed');
    const openedPath = join(gw.dir, 'opened');
    await writeFile(plainPath, segment);
    const enc = await kmsgw(['enc', 'pg/wal', '--aad', '000000010000000000000003', '-i', plainPath, '-o', sealedPath, ...sock]);
    expect(enc).toMatchObject({ code: 0, stderr: '' });
    const sealed = await readFile(sealedPath);
    expect(sealed.length).toBe(26 + 256 * (4 + 65536 + 33) + (4 + 8 + 33));
    expect(sealed.includes(segment.subarray(4096, 4096 + 64))).toBe(false);
    const dec = await kmsgw(['dec', 'pg/wal', '--aad', '000000010000000000000003', '-i', sealedPath, '-o', openedPath, ...sock]);
    expect(dec).toMatchObject({ code: 0, stderr: '' });
    expect((await readFile(openedPath)).equals(segment)).toBe(true);
    // The AAD (here the segment's file name) is bound: another name refuses it.
    const renamed = await kmsgw(['dec', 'pg/wal', '--aad', '000000010000000000000004', '-i', sealedPath, ...sock]);
    expect(renamed.code).toBe(1);
    expect(renamed.stderr).toMatch(/^kmsgw: DECRYPT_FAILED /);

    const empty = await kmsgw(['enc', 'pg/wal', ...sock], { input: Buffer.alloc(0) });
    expect(empty.stdout.length).toBe(26 + 4 + 8 + 33);
    const back = await kmsgw(['dec', 'pg/wal', ...sock], { input: empty.stdout });
    expect(back).toMatchObject({ code: 0, stderr: '' });
    expect(back.stdout.length).toBe(0);
  });

  it('dec refuses a truncated, reordered, spliced or tampered stream, with nothing left at -o', async () => {
    const { gw, sock } = await gateway();
    const data = Buffer.alloc(256 * 1024, 0x5a); // four full chunks, then the trailer
    const a = (await kmsgw(['enc', 'k', ...sock], { input: data })).stdout;
    const b = (await kmsgw(['enc', 'k', ...sock], { input: data })).stdout;
    const rec = 4 + 65536 + 33;
    expect(a.length).toBe(26 + 4 * rec + (4 + 8 + 33));
    const head = (s: Buffer) => s.subarray(0, 26);
    const record = (s: Buffer, i: number) => s.subarray(26 + i * rec, 26 + (i + 1) * rec);
    const rest = (s: Buffer, from: number) => s.subarray(26 + from * rec);
    const tampered = Buffer.from(a);
    tampered[26 + rec + 100] = (tampered[26 + rec + 100] as number) ^ 1;
    const cases: Array<[string, Buffer]> = [
      ['truncated', a.subarray(0, a.length - 10)],
      ['trailer dropped', a.subarray(0, 26 + 4 * rec)],
      ['reordered', Buffer.concat([head(a), record(a, 1), record(a, 0), rest(a, 2)])],
      ['spliced from another stream', Buffer.concat([head(a), record(a, 0), record(b, 1), rest(a, 2)])],
      ['tampered', tampered],
      ['not a stream', data],
    ];
    for (const [label, input] of cases) {
      const out = join(gw.dir, `out-${label.replace(/ /g, '-')}`);
      const r = await kmsgw(['dec', 'k', '-o', out, ...sock], { input });
      expect(r.code, label).toBe(1);
      expect(r.stderr, label).toMatch(/^kmsgw: DECRYPT_FAILED [^\n]+\n$/);
      expect(existsSync(out), label).toBe(false);
    }
    expect((await kmsgw(['dec', 'k', ...sock], { input: a })).stdout.equals(data)).toBe(true);
  });

  it('dec --restore (PostgreSQL restore_command): 1 only for a missing file, 255 for anything else', async () => {
    const { gw, sock } = await gateway();
    const sealed = join(gw.dir, 'seg');
    await writeFile(sealed, (await kmsgw(['enc', 'pg/wal', '--aad', 'seg', ...sock], { input: 'wal bytes' })).stdout);
    const ok = await kmsgw(['dec', 'pg/wal', '--restore', '--aad', 'seg', '-i', sealed, ...sock]);
    expect(ok).toMatchObject({ code: 0, stderr: '' });
    const missing = await kmsgw(['dec', 'pg/wal', '--restore', '--aad', 'x', '-i', join(gw.dir, 'absent'), ...sock]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`kmsgw: NOT_FOUND no such file ${join(gw.dir, 'absent')}\n`);
    const wrong = await kmsgw(['dec', 'pg/wal', '--restore', '--aad', 'other', '-i', sealed, ...sock]);
    expect(wrong.code).toBe(255);
    expect(wrong.stderr).toMatch(/^kmsgw: DECRYPT_FAILED .* \(recovery must stop\)\n$/);
    const down = await kmsgw(['dec', 'pg/wal', '--restore', '--aad', 'seg', '-i', sealed, '--socket', join(gw.dir, 'nope.sock')]);
    expect(down.code).toBe(255);
    expect(down.stderr).toMatch(/^kmsgw: UNAVAILABLE cannot reach the gateway/);
  });

  it('administers keys: create, rotate, info, list, destroy', async () => {
    const { sock } = await gateway();
    expect((await kmsgw(['key', 'create', 'admin/k', ...sock])).stdout.toString()).toBe('1\n');
    const dup = await kmsgw(['key', 'create', 'admin/k', ...sock]);
    expect(dup).toMatchObject({ code: 1, stderr: 'kmsgw: EXISTS key already exists\n' });
    expect((await kmsgw(['key', 'rotate', 'admin/k', ...sock])).stdout.toString()).toBe('2\n');
    const info = JSON.parse((await kmsgw(['key', 'info', 'admin/k', ...sock])).stdout.toString());
    expect(info.versions.map((v: { version: number }) => v.version)).toEqual([1, 2]);
    await kmsgw(['key', 'create', 'admin/j', ...sock]);
    expect((await kmsgw(['key', 'list', 'admin/', ...sock])).stdout.toString()).toBe('admin/j\nadmin/k\n');
    expect((await kmsgw(['key', 'destroy', 'admin/k@1', ...sock])).stdout.toString()).toBe('1\n');
    const gone = await kmsgw(['get', 'admin/k@1', ...sock]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/^kmsgw: NOT_FOUND /);
  });

  it('exits 2 on usage errors and 1 when the gateway is down, quickly and with one line', async () => {
    const dir = await tmp();
    expect((await kmsgw(['get'])).code).toBe(2);
    expect((await kmsgw(['get', 'k', '--format', 'octal'])).code).toBe(2);
    expect((await kmsgw(['frobnicate'])).code).toBe(2);
    expect((await kmsgw(['key', 'destroy', 'no-version', '--socket', join(dir, 's')])).code).toBe(2);
    const started = performance.now();
    const down = await kmsgw(['get', 'k', '--format', 'hex', '--socket', join(dir, 'nothing.sock')]);
    expect(down.code).toBe(1);
    expect(down.stdout.length).toBe(0);
    expect(down.stderr).toBe('kmsgw: UNAVAILABLE cannot reach the gateway: ENOENT\n');
    expect(performance.now() - started).toBeLessThan(5000);
  });
});

describe('kmsgw serve and init', () => {
  async function serve(cwd: string, args: string[] = []) {
    const child = spawn(process.execPath, [BIN, 'serve', ...args], {
      cwd,
      env: { ...process.env, KMSGW_SOCKET: '' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    child.stderr.on('data', (c: Buffer) => (log += c.toString()));
    await new Promise<void>((ok, fail) => {
      // The last line of a start: 'kmsgw ready' comes just before it, sometimes in an earlier chunk.
      const check = setInterval(() => {
        if (log.includes('configuration loaded')) {
          clearInterval(check);
          ok();
        }
      }, 20);
      child.once('exit', (code) => {
        clearInterval(check);
        fail(new Error(`serve exited ${code}: ${log}`));
      });
    });
    return {
      log: () => log,
      stop: () =>
        new Promise<number | null>((done) => {
          child.once('exit', (code) => done(code));
          child.kill('SIGTERM');
        }),
    };
  }

  it('the embedded default: local KEK 0600, same DEK after a restart, clean shutdown', async () => {
    const cwd = await tmp();
    const first = await serve(cwd);
    expect(first.log()).toContain('created a new local KEK');
    const a = await kmsgw(['get', 'demo/key', '--format', 'hex'], { cwd });
    expect(a.stdout.toString()).toMatch(/^[0-9a-f]{64}\n$/);
    expect(await first.stop()).toBe(0);
    expect(existsSync(join(cwd, '.kmsgw', 'kmsgw.sock'))).toBe(false);
    expect((await stat(join(cwd, '.kmsgw', 'local-kek'))).mode & 0o777).toBe(0o600);

    const second = await serve(cwd);
    expect(second.log()).not.toContain('created a new local KEK');
    const b = await kmsgw(['get', 'demo/key', '--format', 'hex'], { cwd });
    expect(b.stdout.toString()).toBe(a.stdout.toString());
    expect(second.log()).not.toContain(a.stdout.toString().trim());
    await second.stop();
  });

  it('SIGTERM answers every request already read (ROTATEs included), then exits 0; nothing executed goes unanswered', async () => {
    const cwd = await tmp();
    const server = await serve(cwd);
    const c = await rawConnect(join(cwd, '.kmsgw', 'kmsgw.sock'));
    await c.ask('CREATE term/k');
    const lines = Array.from({ length: 1000 }, (_, i) => (i % 16 === 0 ? 'ROTATE term/k' : `ENC term/k ${b64(`row ${i}`)}`));
    c.write(`${lines.join('\n')}\n`);
    await c.lines(1);
    const exited = server.stop();
    const replies: string[] = [];
    for (;;) {
      const next = await c.lines(1, 20_000).catch(() => undefined);
      if (next === undefined) break;
      replies.push(...next);
    }
    expect(await exited).toBe(0);
    expect(replies).toHaveLength(lines.length - 1);
    for (const reply of replies) expect(reply).toMatch(/^OK /);
    const stored = JSON.parse(await readFile(join(cwd, '.kmsgw', 'keys', fileNameFor('term/k')), 'utf8')) as { versions: unknown[] };
    expect(stored.versions).toHaveLength(1 + lines.filter((l) => l.startsWith('ROTATE')).length);
  });

  it('init writes a commented config that serve then uses; a bad config names the field', async () => {
    const cwd = await tmp();
    const init = await kmsgw(['init'], { cwd });
    expect(init.code).toBe(0);
    const text = await readFile(join(cwd, 'kmsgw.yaml'), 'utf8');
    expect(text).toContain('# ');
    expect(existsSync(join(cwd, '.kmsgw', 'local-kek'))).toBe(true);
    const again = await kmsgw(['init'], { cwd });
    expect(again.stdout.toString()).toContain('left as it is');

    const s = await serve(cwd);
    expect(s.log()).toContain(join(cwd, 'kmsgw.yaml'));
    expect((await kmsgw(['ping'], { cwd })).code).toBe(0);
    await s.stop();

    await writeFile(join(cwd, 'bad.yaml'), 'cache:\n  ttlMs: soon\n');
    const bad = await kmsgw(['serve', '--config', 'bad.yaml'], { cwd });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('cache.ttlMs');
  });
});
