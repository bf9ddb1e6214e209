import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ListedObject } from './backend.js';
import { KeyedChains } from './chains.js';
import { FileBackend } from './file/index.js';

const REVISIONS_FILE = 'revisions.json';

/**
 * A local copy of the wrapped records a gateway has read or written, in `dataDir`, so reads
 * keep working, and the gateway can start, while a shared object store is unreachable. It is
 * a folder store of its own (the same files as `file://`), plus the store revision each copy
 * was taken at, so a refresh can bring stale copies (a version destroyed elsewhere) up to date
 * without reading every record. Its folder lock also keeps two gateways off one `dataDir`.
 */
export class Snapshot {
  /** Id → store revision of the copy held; completed from disk on the first `stale`, not at start. */
  private readonly known = new Map<string, string>();
  private loaded = false;
  private dirty = false;
  private readonly chains = new KeyedChains();

  private constructor(private readonly files: FileBackend) {}

  static async open(dir: string): Promise<Snapshot> {
    return new Snapshot(await FileBackend.open(dir));
  }

  get lockMechanism(): string | undefined {
    return this.files.lockMechanism;
  }

  get dir(): string {
    return this.files.dir;
  }

  /** The copy of `id`, if any (outage path). */
  async read(id: string): Promise<Buffer | undefined> {
    return (await this.files.read(id))?.body;
  }

  /** Every id held, starting with `prefix`. */
  async ids(prefix: string): Promise<string[]> {
    const out: string[] = [];
    for await (const item of this.files.list(prefix)) out.push(item.id);
    return out;
  }

  /** Stores `body` as the copy of `id`, taken at store revision `revision`; one write per id at a time. */
  save(id: string, body: Buffer, revision: string): Promise<void> {
    return this.chains.run(id, async () => {
      const current = await this.files.read(id);
      if (current === undefined || !current.body.equals(body)) {
        const written = await this.files.write(id, body, current?.revision ?? null);
        if (!written.ok) throw new Error(`snapshot copy of ${id} changed under its lock`);
      }
      if (this.known.get(id) !== revision) {
        this.known.set(id, revision);
        this.dirty = true;
      }
    });
  }

  /**
   * Given the store's full listing, the ids whose copy is stale (taken at another revision,
   * or of unknown revision); the caller re-reads them and `save`s. Saves the revisions file.
   */
  async stale(listing: ReadonlyMap<string, string>): Promise<string[]> {
    const known = await this.loadKnown();
    const out: string[] = [];
    for (const [id, revision] of known) {
      const now = listing.get(id);
      if (now !== undefined && now !== revision) out.push(id);
    }
    return out;
  }

  /** Writes the revisions file if anything changed since the last time. */
  async flush(): Promise<void> {
    if (!this.dirty || !this.loaded) return;
    this.dirty = false;
    const path = join(this.files.dir, REVISIONS_FILE);
    await writeFile(`${path}.tmp`, JSON.stringify(Object.fromEntries(this.known)), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  async close(): Promise<void> {
    await this.chains.drain();
    await this.flush().catch(() => undefined);
    await this.files.close();
  }

  /** The revisions file, completed with every copy it does not name (revision unknown: stale). */
  private async loadKnown(): Promise<Map<string, string>> {
    if (this.loaded) return this.known;
    let saved: Record<string, string> = {};
    try {
      saved = JSON.parse(await readFile(join(this.files.dir, REVISIONS_FILE), 'utf8')) as Record<string, string>;
    } catch {
      // none yet, or torn by a crash: every copy counts as stale once
    }
    const held: ListedObject[] = [];
    for await (const item of this.files.list('')) held.push(item);
    // Copies saved since start are known already, with their revision.
    for (const { id } of held) if (!this.known.has(id)) this.known.set(id, typeof saved[id] === 'string' ? saved[id] : '');
    this.loaded = true;
    this.dirty = true;
    return this.known;
  }
}
