import type { Logger } from '../log/logger.js';
import { loadNative } from '../native/addon.js';

/** Sends one datagram to a Unix datagram socket (the native addon's `sdNotify`). */
export type DatagramSend = (path: string, message: string) => void;

export interface SystemdOptions {
  /** Where NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID are read (default: process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** This process's pid, checked against WATCHDOG_PID (default: process.pid). */
  readonly pid?: number;
  /** Default: the native addon's sdNotify; absent addon → a warning once, then nothing is sent. */
  readonly send?: DatagramSend;
  /** CLOCK_MONOTONIC in µs, for MONOTONIC_USEC (default: process.hrtime, which is CLOCK_MONOTONIC on Linux). */
  readonly monotonicUsec?: () => bigint;
}

/**
 * systemd's service notification protocol (sd_notify(3)) for `Type=notify` and
 * `Type=notify-reload` units: READY=1 once the gateway serves, RELOADING=1 … READY=1 around a
 * reload, STOPPING=1 when shutdown begins, WATCHDOG=1 while the event loop runs. Node has no
 * Unix datagram sockets, so the datagrams go through the native addon. Without NOTIFY_SOCKET
 * (not started by systemd) every method does nothing.
 */
export class SystemdNotifier {
  private readonly socket: string | undefined;
  private readonly env: NodeJS.ProcessEnv;
  private readonly pid: number;
  private readonly monotonicUsec: () => bigint;
  private send: DatagramSend | undefined;
  private failedOnce = false;

  constructor(
    private readonly log: Logger,
    options: SystemdOptions = {},
  ) {
    this.env = options.env ?? process.env;
    this.pid = options.pid ?? process.pid;
    this.monotonicUsec = options.monotonicUsec ?? (() => process.hrtime.bigint() / 1000n);
    const socket = this.env['NOTIFY_SOCKET'];
    if (socket === undefined || socket === '') return;
    if (!socket.startsWith('/') && !socket.startsWith('@')) {
      log.warn({ notifySocket: socket }, 'NOTIFY_SOCKET is neither a path nor an abstract socket name: systemd is not notified');
      return;
    }
    this.send = options.send ?? nativeSend(log);
    if (this.send) this.socket = socket;
  }

  /** True when notifications are sent (NOTIFY_SOCKET set and the addon loaded). */
  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** READY=1: start-up is done (also ends a reload). */
  ready(): void {
    this.notify('READY=1');
  }

  /** STOPPING=1: shutdown has begun. */
  stopping(): void {
    this.notify('STOPPING=1');
  }

  /** RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload requires; send `ready()` when the reload is done. */
  reloading(): void {
    this.notify(`RELOADING=1\nMONOTONIC_USEC=${this.monotonicUsec()}`);
  }

  /**
   * The watchdog period systemd asked for (WATCHDOG_USEC, for this pid when WATCHDOG_PID is set),
   * in ms, or undefined when there is none.
   */
  watchdogMs(): number | undefined {
    if (!this.enabled) return undefined;
    const usec = Number(this.env['WATCHDOG_USEC']);
    if (!Number.isSafeInteger(usec) || usec <= 0) return undefined;
    const pid = this.env['WATCHDOG_PID'];
    if (pid !== undefined && pid !== '' && Number(pid) !== this.pid) return undefined;
    return usec / 1000;
  }

  /**
   * Sends WATCHDOG=1 every half WATCHDOG_USEC from an unref'd timer: a blocked event loop
   * stops the pings and systemd restarts the gateway. Returns the function that stops it.
   */
  startWatchdog(): () => void {
    const ms = this.watchdogMs();
    if (ms === undefined) return () => undefined;
    const timer = setInterval(() => this.notify('WATCHDOG=1'), Math.max(1, Math.floor(ms / 2)));
    timer.unref();
    this.log.info({ watchdogMs: ms }, 'systemd watchdog: pinging every half period');
    return () => clearInterval(timer);
  }

  /** Sends one notification; failures are logged (the first at warn, the rest at debug), never thrown. */
  notify(message: string): void {
    if (this.socket === undefined || this.send === undefined) return;
    try {
      this.send(this.socket, message);
    } catch (err) {
      const fields = { notifySocket: this.socket, err: (err as Error).message, message: message.split('\n')[0] };
      if (this.failedOnce) this.log.debug(fields, 'systemd notification failed');
      else this.log.warn(fields, 'systemd notification failed (later failures are logged at debug)');
      this.failedOnce = true;
    }
  }
}

function nativeSend(log: Logger): DatagramSend | undefined {
  const addon = loadNative();
  if (addon === null) {
    log.warn('NOTIFY_SOCKET is set but the native addon is unavailable: systemd is not notified (use Type=simple)');
    return undefined;
  }
  return (path, message) => void addon.sdNotify(path, message);
}
