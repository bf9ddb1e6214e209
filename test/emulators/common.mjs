// What the test emulators (gcp-kms/server.mjs, azure-kv/server.mjs) share: the common command line, the state
// file (load at start, atomic save), the faults file (re-read on every call/request; names, '*', `times`, DELAY_MS,
// DELAY_KEYS), the `listening <port>` line, and shutdown on SIGTERM/SIGINT or --exit-with-stdin.
// Protocol-specific parts (which fault keys exist, what a fault answers with) stay in each server.
// Plain JavaScript ESM (JSDoc types), no build step.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

/**
 * Writes "<name> emulator: <message>" to stderr.
 * @param {string} name e.g. 'gcp-kms'
 * @param {string} message
 */
export function warn(name, message) {
  process.stderr.write(`${name} emulator: ${message}\n`);
}

/**
 * Writes "<name> emulator: <message>" to stderr and exits 1.
 * @param {string} name
 * @param {string} message
 * @returns {never}
 */
export function fatal(name, message) {
  warn(name, message);
  process.exit(1);
}

// ---------------------------------------------------------------------------------------------------------------
// Arguments

/**
 * @typedef {import('node:util').ParseArgsConfig['options']} ArgOptions
 */

/**
 * Parses the command line (strict): --port (default 0), --state, --faults, --exit-with-stdin, plus `extra`.
 * Exits 1 on an invalid port. The faults file defaults to `<state>.faults.json` (none without --state).
 * @template {NonNullable<ArgOptions>} T
 * @param {string} name
 * @param {T} extra emulator-specific options
 */
export function parseEmulatorArgs(name, extra) {
  const { values: args } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      state: { type: 'string' },
      faults: { type: 'string' },
      'exit-with-stdin': { type: 'boolean', default: false },
      ...extra,
    },
    strict: true,
  });
  const port = Number(args.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fatal(name, `invalid --port ${args.port}`);
  const stateFile = /** @type {string | undefined} */ (args.state) ?? null;
  const faultsFile = /** @type {string | undefined} */ (args.faults) ?? (stateFile ? `${stateFile}.faults.json` : null);
  return { args, port, stateFile, faultsFile, exitWithStdin: args['exit-with-stdin'] === true };
}

// ---------------------------------------------------------------------------------------------------------------
// State file

/**
 * Loads the state from `file` if it exists (else `initial`); exits 1 if it cannot be read or `isValid` refuses it.
 * `save()` writes that state object back atomically (tmp + rename, mode 0600); a no-op without a file.
 * @template S
 * @param {{ name: string, file: string | null, initial: S, isValid: (loaded: any) => boolean, invalid: string }} opts
 *   invalid: the message when isValid refuses, e.g. 'not a gcp-kms emulator state file (format 1)'
 * @returns {{ state: S, save: () => void }}
 */
export function openStateFile({ name, file, initial, isValid, invalid }) {
  let state = initial;
  if (file && existsSync(file)) {
    try {
      const loaded = JSON.parse(readFileSync(file, 'utf8'));
      if (!isValid(loaded)) throw new Error(invalid);
      state = loaded;
    } catch (err) {
      fatal(name, `cannot load state file ${file}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  let saveSeq = 0;
  const save = () => {
    if (!file) return;
    const tmp = `${file}.${process.pid}.${++saveSeq}.tmp`;
    writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, file);
  };
  return { state, save };
}

// ---------------------------------------------------------------------------------------------------------------
// Faults file (test hooks), re-read on every call

/**
 * @typedef {{ name: string, times?: number }} FaultEntry
 */

/**
 * @template {FaultEntry} E
 * @typedef {{ key: string, entry: E, id: string }} FaultRule key: the faults-file key (status); id: `<key>#<index>`
 */

/**
 * @template {FaultEntry} E
 * @typedef {{ raw: string, rules: FaultRule<E>[], delayMs: number, delayKeys: string[] | null, used: Map<string, number> }} Faults
 */

/**
 * Whether a fault name covers a resource: '*' covers everything, a name itself and everything below it (`name/...`).
 * @param {string} pattern
 * @param {string} resource
 */
export function matchesResource(pattern, resource) {
  return pattern === '*' || resource === pattern || resource.startsWith(`${pattern}/`);
}

/**
 * The faults file of one emulator. It is re-read on every apply(); unchanged contents keep the `times` counters,
 * changed contents reset them. Keys starting with '_' are ignored; DELAY_MS / DELAY_KEYS delay calls; a key for
 * which `isFaultKey` holds maps to a list of entries (a name, or an object parsed by `parseEntry`); anything else,
 * and unparsable JSON, is reported on stderr and ignored.
 * @template {FaultEntry} E
 * @param {{ name: string, file: string | null, isFaultKey: (key: string) => boolean, parseEntry: (entry: any) => E }} opts
 */
export function faultsFile({ name, file, isFaultKey, parseEntry }) {
  /** @returns {Faults<E>} */
  const empty = (raw = '') => ({ raw, rules: [], delayMs: 0, delayKeys: null, used: new Map() });
  let faults = empty();

  /** @returns {Faults<E>} */
  function load() {
    if (!file) return faults;
    let raw;
    try {
      raw = readFileSync(file, 'utf8');
    } catch {
      raw = ''; // no faults file: no faults
    }
    if (raw === faults.raw) return faults; // unchanged: keep the "times" counters
    const next = empty(raw);
    if (raw.trim() !== '') {
      /** @type {Record<string, unknown>} */
      let obj;
      try {
        obj = JSON.parse(raw);
      } catch (err) {
        warn(name, `ignoring unparsable faults file ${file}: ${String(err)}`);
        faults = next;
        return next;
      }
      for (const [k, v] of Object.entries(obj)) {
        if (k.startsWith('_')) continue; // comments, and the helper's write counter
        if (k === 'DELAY_MS') next.delayMs = Number(v) || 0;
        else if (k === 'DELAY_KEYS') next.delayKeys = Array.isArray(v) ? v.map(String) : null;
        else if (isFaultKey(k) && Array.isArray(v)) {
          v.forEach((e, i) => {
            next.rules.push({ key: k, entry: typeof e === 'string' ? /** @type {E} */ ({ name: e }) : parseEntry(e), id: `${k}#${i}` });
          });
        } else {
          warn(name, `ignoring unknown faults entry ${JSON.stringify(k)}`);
        }
      }
    }
    faults = next;
    return next;
  }

  /**
   * Applies the faults file to one call on `resource`: waits DELAY_MS if it applies, then returns the first rule
   * that matches (and that `accept` accepts, and whose `times` are not used up), or null.
   * @param {string} resource
   * @param {(rule: FaultRule<E>) => boolean} [accept]
   * @returns {Promise<FaultRule<E> | null>}
   */
  async function apply(resource, accept) {
    const f = load();
    if (f.delayMs > 0 && (f.delayKeys === null || f.delayKeys.some((p) => matchesResource(p, resource)))) {
      await new Promise((r) => setTimeout(r, f.delayMs));
    }
    for (const rule of f.rules) {
      if (!matchesResource(rule.entry.name, resource)) continue;
      if (accept && !accept(rule)) continue;
      if (rule.entry.times !== undefined) {
        const used = f.used.get(rule.id) ?? 0;
        if (used >= rule.entry.times) continue;
        f.used.set(rule.id, used + 1);
      }
      return rule;
    }
    return null;
  }

  return { apply };
}

// ---------------------------------------------------------------------------------------------------------------
// Lifecycle

/**
 * Prints the one line the test helper waits for.
 * @param {number} port
 */
export function printListening(port) {
  process.stdout.write(`listening ${port}\n`);
}

/**
 * Shuts down on SIGTERM / SIGINT (and on stdin EOF or error with --exit-with-stdin), once: `close(done)` should
 * close the server and call done(); after 2 s `force()` runs (if given) and the process exits anyway. Exit code 0.
 * @param {{ exitWithStdin: boolean, close: (done: () => void) => void, force?: () => void }} opts
 */
export function handleShutdown({ exitWithStdin, close, force }) {
  let stopping = false;
  const shutdown = () => {
    if (stopping) return;
    stopping = true;
    const timer = setTimeout(() => {
      force?.();
      process.exit(0);
    }, 2000);
    timer.unref();
    close(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  if (exitWithStdin) {
    process.stdin.on('end', shutdown);
    process.stdin.on('error', shutdown);
    process.stdin.resume();
  }
}
