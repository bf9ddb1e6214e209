import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { SystemdNotifier } from '../../src/ops/systemd.js';

function notifier(env: NodeJS.ProcessEnv, options: { fail?: boolean } = {}) {
  const sent: Array<[string, string]> = [];
  const logs: string[] = [];
  const log = pino({ level: 'debug' }, { write: (l: string) => void logs.push(l) });
  const n = new SystemdNotifier(log, {
    env,
    pid: 42,
    monotonicUsec: () => 123_456_789n,
    send: (path, message) => {
      if (options.fail) throw new Error('ECONNREFUSED');
      sent.push([path, message]);
    },
  });
  return { n, sent, logs };
}

describe('SystemdNotifier', () => {
  it('does nothing without NOTIFY_SOCKET', () => {
    const { n, sent } = notifier({});
    n.ready();
    n.stopping();
    n.reloading();
    expect(n.enabled).toBe(false);
    expect(n.watchdogMs()).toBeUndefined();
    expect(sent).toEqual([]);
  });

  it('sends READY, RELOADING with MONOTONIC_USEC, STOPPING to the socket (abstract names too)', () => {
    const { n, sent } = notifier({ NOTIFY_SOCKET: '@sd-test' });
    n.ready();
    n.reloading();
    n.stopping();
    expect(sent).toEqual([
      ['@sd-test', 'READY=1'],
      ['@sd-test', 'RELOADING=1\nMONOTONIC_USEC=123456789'],
      ['@sd-test', 'STOPPING=1'],
    ]);
  });

  it('refuses a NOTIFY_SOCKET that is neither a path nor abstract (vsock:...), with a warning', () => {
    const { n, sent, logs } = notifier({ NOTIFY_SOCKET: 'vsock:2:1234' });
    n.ready();
    expect(sent).toEqual([]);
    expect(logs.join('')).toContain('neither a path nor an abstract socket');
  });

  it('watchdog: half of WATCHDOG_USEC, only for our pid', () => {
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000' }).n.watchdogMs()).toBe(30_000);
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }).n.watchdogMs()).toBe(30_000);
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: '30000000', WATCHDOG_PID: '7' }).n.watchdogMs()).toBeUndefined();
    expect(notifier({ NOTIFY_SOCKET: '/run/x', WATCHDOG_USEC: 'x' }).n.watchdogMs()).toBeUndefined();
  });

  it('a failing send is logged once at warn, then at debug; never thrown', () => {
    const { n, logs } = notifier({ NOTIFY_SOCKET: '/run/x' }, { fail: true });
    n.ready();
    n.notify('WATCHDOG=1');
    const levels = logs.map((l) => (JSON.parse(l) as { level: number }).level);
    expect(levels).toEqual([40, 20]);
  });
});
