import type { RoutingDocument } from '../config/schema.js';
import { GraygateError } from '../errors.js';
import type { ChangeMeta, FleetReports, KeyReader, Store, StoredVersion, StoreHealth } from './store.js';

/**
 * A routing document fixed at start (the drop-in mode builds it from command-line flags), with
 * plain keys (tokens, `Grayscale_Range`) read from a backing store such as Redis. It has one
 * version and refuses writes: what changes live in this mode is the backing store's keys. Its
 * health is the backing store's: a gateway whose keys cannot be read is not healthy.
 */
export class FixedDocumentStore implements Store {
  readonly kind: string;
  readonly keyReader: KeyReader | undefined;
  readonly fleet: FleetReports | undefined;
  private readonly stored: StoredVersion;

  constructor(
    document: RoutingDocument,
    meta: Omit<ChangeMeta, 'time'>,
    private readonly keys: Store,
  ) {
    this.kind = `${keys.kind} (keys only)`;
    this.stored = Object.freeze({ version: 1, document, meta: Object.freeze({ ...meta, time: new Date().toISOString() }) });
    this.keyReader = keys.keyReader;
    this.fleet = keys.fleet;
  }

  get deadlineMs(): number {
    return this.keys.deadlineMs;
  }

  current(): Promise<StoredVersion> {
    return Promise.resolve(this.stored);
  }

  write(): Promise<StoredVersion> {
    return Promise.reject(
      new GraygateError('GG_VERSION_CONFLICT', `the routing document is fixed by the command line (${this.stored.meta.reason}); restart with other flags or use --config`),
    );
  }

  history(): Promise<StoredVersion[]> {
    return Promise.resolve([this.stored]);
  }

  version(version: number): Promise<StoredVersion> {
    if (version === 1) return Promise.resolve(this.stored);
    return Promise.reject(new GraygateError('GG_VERSION_UNKNOWN', `version ${version} is not kept: the routing document is fixed by the command line`));
  }

  watch(): () => void {
    return () => {};
  }

  health(): StoreHealth {
    return this.keys.health();
  }

  close(): Promise<void> {
    return this.keys.close();
  }
}
