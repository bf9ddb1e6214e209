import type { AccessControl, Permission } from '../policy/types.js';
import { parseRequest, type Command, type Verb } from '../protocol/parser.js';
import type { ErrorCode } from '../protocol/errors.js';
import { failure, failureFrom, success, type Failure, type Outcome, type Reply, type Result } from '../protocol/reply.js';
import { describeClient, type ClientIdentity, type RequestContext, type RequestObserver, type RequestTrace } from '../request/context.js';
import type { Executor } from './execute.js';
import { RequestOrder, type Access } from './ordering.js';

/** Who may do what, and who is told. Both absent: development (everyone may do everything, nothing is recorded). */
export interface PipelineOptions {
  /** Authentication and per-key authorization; absent: everyone may do everything. */
  readonly access?: AccessControl;
  /** Sees one record per request (the audit log); while unavailable, requests are refused. */
  readonly observer?: RequestObserver;
  /** Told of every request once answered (metrics); absent: nothing is measured. */
  readonly meter?: RequestMeter;
}

/**
 * Told of every request once answered: its verb (`invalid` for a line that does not parse,
 * `unknown` for one refused unread because the audit log is unavailable), `OK` or the ERR code,
 * and the seconds from `handle` to the reply, standing for `weight` requests in a latency
 * histogram. Reading a clock costs more than a cached GET's bookkeeping (~0.1 µs on some VMs), so
 * without an audit log (which reads the clock anyway) a reply from memory is timed one time in
 * `SYNC_SAMPLE` with that weight, and the others come with weight 0 (counted, not timed); a reply
 * that waited (KMS, store) is always timed, weight 1.
 */
export type RequestMeter = (verb: string, code: string, seconds: number, weight: number) => void;

/** One reply from memory in this many is timed (a power of two). */
export const SYNC_SAMPLE = 16;

/** The one way into the gateway: `open` a session per connection, then `handle` its lines. */
export class Pipeline {
  constructor(
    private readonly executor: Executor,
    private readonly options: PipelineOptions = {},
  ) {}

  /** A session for one connection, identified from its transport alone until it sends AUTH. */
  open(identity: ClientIdentity): Session {
    return new Session({ identity, client: this.options.access?.identify(identity) }, this.executor, this.options);
  }
}

/** A request's audit fields while it runs. */
type Trace = RequestTrace & { verb: string };

/**
 * One connection's requests: parse → authenticate/authorize → execute in
 * order → audit. `handle` never throws and answers synchronously when the
 * request was served from memory.
 */
export class Session {
  private readonly order = new RequestOrder();
  /** The verb of the request `run` last parsed, read right after it returns (for the meter). */
  private verb = 'invalid';
  /** Requests metered so far, for sampling the latency of replies from memory. */
  private meterTicks = 0;

  constructor(
    readonly ctx: RequestContext,
    private readonly executor: Executor,
    private readonly options: PipelineOptions,
  ) {}

  /**
   * Runs one request line. `into`, when given, receives the request's trace (the key version it
   * used): the Vault front door reads `vault:v<N>:` from it instead of parsing the reply.
   */
  handle(line: string, into?: RequestTrace): Reply {
    const observer = this.options.observer;
    const meter = this.options.meter;
    if (observer === undefined) {
      const trace = into === undefined ? undefined : Object.assign(into, { verb: '-' });
      return meter === undefined ? this.run(line, trace) : this.metered(line, meter, trace);
    }
    const started = performance.now();
    if (!observer.available) return this.refusedUnread(started);
    const trace: Trace = into === undefined ? { verb: '-' } : Object.assign(into, { verb: '-' });
    const recorded = (outcome: Outcome): Outcome => {
      this.account(observer, trace.verb, trace.verb === '-' ? 'invalid' : trace.verb, trace, outcome.ok ? 'OK' : outcome.code, started);
      return outcome;
    };
    const reply = this.run(line, trace);
    return reply instanceof Promise ? reply.then(recorded) : recorded(reply);
  }

  /**
   * Runs a request that is no protocol line (the Vault front door) under the lines' rules: refused
   * while the audit log is unavailable, allowed only if a grant names `permission` on `keyId` (none:
   * open to every client, as PING), then audited and metered as `verb`. `run` fails by throwing a
   * `GatewayError`, and may note the version it used in the trace.
   */
  async perform<T>(
    verb: string,
    keyId: string | undefined,
    permission: Permission | undefined,
    run: (trace: RequestTrace) => T | Promise<T>,
  ): Promise<Result<T>> {
    const observer = this.options.observer;
    const started = performance.now();
    if (observer !== undefined && !observer.available) return this.refusedUnread(started);
    const trace: RequestTrace = keyId === undefined ? {} : { keyId };
    let result: Result<T>;
    if (permission !== undefined && !this.may(permission, keyId)) {
      result = failure('FORBIDDEN', `not allowed to ${permission}${keyId === undefined ? '' : ' this key'}`);
    } else {
      try {
        result = { ok: true, value: await run(trace) };
      } catch (err) {
        result = failureFrom(err);
      }
    }
    this.account(observer, verb, verb, trace, result.ok ? 'OK' : result.code, started);
    return result;
  }

  /** While the audit log cannot keep records, every request is refused unread (fail closed). */
  private refusedUnread(started: number): Failure {
    this.options.meter?.('unknown', 'INTERNAL', (performance.now() - started) / 1000, 1);
    return failure('INTERNAL', 'audit log unavailable; requests are refused');
  }

  /** One answered request's audit record (when there is an audit log) and its meter count, as `metered` (the verb, or `invalid`). */
  private account(
    observer: RequestObserver | undefined,
    verb: string,
    metered: string,
    trace: RequestTrace,
    code: 'OK' | ErrorCode,
    started: number,
  ): void {
    const latency = performance.now() - started;
    observer?.record({
      time: new Date().toISOString(),
      client: describeClient(this.ctx),
      verb,
      ...(trace.keyId !== undefined ? { keyId: trace.keyId } : {}),
      ...(trace.version !== undefined ? { version: trace.version } : {}),
      outcome: code,
      latencyMs: Math.round(latency * 1000) / 1000,
      ...(trace.kek !== undefined ? { kek: trace.kek } : {}),
    });
    this.options.meter?.(metered, code, latency / 1000, 1);
  }

  /**
   * `run` with the meter told of the reply. A reply from memory allocates nothing more and reads
   * the clock only when sampled; one that waits is timed from when `run` handed back its promise
   * (unless sampled: from the start), its synchronous part being microseconds against a KMS call.
   */
  private metered(line: string, meter: RequestMeter, trace: Trace | undefined): Reply {
    const sampled = (this.meterTicks++ & (SYNC_SAMPLE - 1)) === 0;
    const started = sampled ? performance.now() : 0;
    const reply = this.run(line, trace);
    const verb = this.verb;
    if (reply instanceof Promise) {
      const from = sampled ? started : performance.now();
      return reply.then((outcome) => {
        meter(verb, outcome.ok ? 'OK' : outcome.code, (performance.now() - from) / 1000, 1);
        return outcome;
      });
    }
    const code = reply.ok ? 'OK' : reply.code;
    if (sampled) meter(verb, code, (performance.now() - started) / 1000, SYNC_SAMPLE);
    else meter(verb, code, 0, 0);
    return reply;
  }

  private run(line: string, trace: Trace | undefined): Reply {
    const parsed = parseRequest(line);
    if (!parsed.ok) {
      this.verb = 'invalid';
      return failure(parsed.code, parsed.text);
    }
    const command = parsed.command;
    this.verb = command.verb;
    if (trace) fillTrace(trace, command);
    if (command.verb === 'AUTH') return this.authenticate(command.token);
    const access = this.options.access;
    const keyId = 'key' in command ? command.key.id : undefined;
    const keks = 'keks' in command ? command.keks : undefined;
    if (access && command.verb !== 'PING' && !authorized(access, this.ctx.client, command.verb, keyId, keks)) {
      // Asked again only on refusal, to say whether a KEK alone was the reason.
      if (keks !== undefined && access.authorize(this.ctx.client, command.verb, keyId)) return failure('FORBIDDEN', 'KEK not allowed');
      return failure('FORBIDDEN', `not allowed to ${command.verb}${keyId === undefined ? '' : ' this key'}`);
    }
    // The common case, nothing of this connection still running, takes no closure and no bookkeeping.
    if (!this.order.busy) {
      const reply = this.executor.execute(command, this.ctx.client, trace);
      if (reply instanceof Promise) this.order.track(accessOf(command), reply);
      return reply;
    }
    return this.order.run(accessOf(command), () => this.executor.execute(command, this.ctx.client, trace));
  }

  /** Whether this session's client may use `permission` on `keyId` (always, without a policy). */
  may(permission: Permission, keyId: string | undefined): boolean {
    return this.options.access?.authorize(this.ctx.client, permission, keyId) ?? true;
  }

  /** `AUTH <token>` for this session; the Vault front door calls it for `X-Vault-Token` without a record of its own. */
  authenticate(token: string): Outcome {
    const access = this.options.access;
    if (!access || this.ctx.identity.transport === 'internal') return failure('BAD_REQUEST', 'AUTH is not in use on this gateway');
    // The context is this connection's own object: its failures are counted against it.
    const result = access.authenticate(token, this.ctx.identity, this.ctx);
    if (!result.ok) {
      return failure('FORBIDDEN', result.reason === 'rate-limited' ? 'too many failed attempts; try again later' : 'authentication failed');
    }
    this.ctx.client = result.client;
    return success(result.client);
  }
}

function fillTrace(trace: Trace, command: Command): void {
  trace.verb = command.verb;
  if ('key' in command) {
    trace.keyId = command.key.id;
    if (command.key.version !== undefined) trace.version = command.key.version;
  }
  if ('keks' in command && command.keks !== undefined) trace.kek = command.keks.join(',');
}

/** A command naming KEKs is allowed only if every one of them is. */
function authorized(
  access: AccessControl,
  client: string | undefined,
  verb: Verb,
  keyId: string | undefined,
  keks: readonly string[] | undefined,
): boolean {
  if (keks === undefined) return access.authorize(client, verb, keyId);
  return keks.every((kek) => access.authorize(client, verb, keyId, kek));
}

/** What a verb does to keys, for ordering requests on one connection. */
function accessOf(command: Command): Access {
  switch (command.verb) {
    case 'GET':
    case 'ENC':
    case 'DEC':
    case 'INFO':
      return { kind: 'read', key: command.key.id };
    case 'CREATE':
    case 'ROTATE':
    case 'REWRAP':
    case 'ADDKEK':
    case 'REMOVEKEK':
    case 'ADDRECOVERY':
    case 'DESTROY':
      return { kind: 'write', key: command.key.id };
    case 'LIST':
      return { kind: 'read-all' };
    case 'PING':
    case 'AUTH':
      return { kind: 'none' };
  }
}
