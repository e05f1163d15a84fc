import type { RoutingDocument } from '../config/schema.js';
import { GraygateError } from '../errors.js';
import type { ChangeMeta, Store, StoredVersion } from './store.js';

/**
 * A routing document fixed at start (the drop-in mode builds it from command-line flags), with
 * plain keys (tokens, `Grayscale_Range`) read from a backing store such as Redis. It has one
 * version and refuses writes: what changes live in this mode is the backing store's keys.
 */
export class FixedDocumentStore implements Store {
  readonly kind: string;
  private readonly stored: StoredVersion;

  constructor(
    document: RoutingDocument,
    meta: Omit<ChangeMeta, 'time'>,
    private readonly keys: Store,
  ) {
    this.kind = `${keys.kind} (keys only)`;
    this.stored = Object.freeze({ version: 1, document, meta: Object.freeze({ ...meta, time: new Date().toISOString() }) });
    if (keys.readKey) this.readKey = (key, deadlineMs) => keys.readKey!(key, deadlineMs);
    if (keys.readKeys) this.readKeys = (names) => keys.readKeys!(names);
    if (keys.watchKeys) this.watchKeys = (names, onChange) => keys.watchKeys!(names, onChange);
  }

  readKey?: Store['readKey'];
  readKeys?: Store['readKeys'];
  watchKeys?: Store['watchKeys'];

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

  close(): Promise<void> {
    return this.keys.close();
  }
}
