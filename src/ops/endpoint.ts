import { startOps, type OpsOptions, type OpsServer } from './server.js';

/** The `ops` settings the listener follows. */
export interface OpsSettings {
  readonly listen?: string | undefined;
  readonly allowRemote: boolean;
  readonly metrics: boolean;
}

/**
 * The ops listener as the config says now: off, or serving on `ops.listen`. A reload moves it;
 * if the new address cannot be served, the old one is started again and the error reported.
 */
export class OpsEndpoint {
  private server: OpsServer | undefined;

  private constructor(
    private settings: OpsSettings,
    private readonly serve: Omit<OpsOptions, 'listen' | 'allowRemote'>,
  ) {}

  static async start(settings: OpsSettings, serve: Omit<OpsOptions, 'listen' | 'allowRemote'>): Promise<OpsEndpoint> {
    const endpoint = new OpsEndpoint(settings, serve);
    endpoint.server = await endpoint.open(settings);
    return endpoint;
  }

  /** The listener running now, if any. */
  get current(): OpsServer | undefined {
    return this.server;
  }

  async reload(next: OpsSettings): Promise<void> {
    const before = this.settings;
    if (next.metrics !== before.metrics) this.serve.log.warn({ metrics: next.metrics }, 'ops.metrics takes effect at the next restart');
    if (next.listen === before.listen && next.allowRemote === before.allowRemote) return;
    await this.server?.close();
    this.server = undefined;
    try {
      this.server = await this.open(next);
      this.settings = next;
    } catch (err) {
      this.server = await this.open(before).catch(() => undefined);
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
  }

  private open(s: OpsSettings): Promise<OpsServer | undefined> {
    if (s.listen === undefined) return Promise.resolve(undefined);
    return startOps({ ...this.serve, listen: s.listen, allowRemote: s.allowRemote });
  }
}
