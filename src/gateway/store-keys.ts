import { isDeepStrictEqual } from 'node:util';
import { ConfigError } from '../errors.js';
import { rateLimited, type Logger } from '../observe/log.js';
import type { Store } from '../store/store.js';
import { CoalescedRead } from './coalesced-read.js';

export interface StoreKeyFeedOptions {
  readonly store: Store;
  readonly logger: Logger;
  /**
   * Compiles and applies the current document with these key values; throws ConfigError when a
   * value is refused (e.g. a malformed `Grayscale_Range`), and then nothing is applied.
   */
  readonly recompile: (values: ReadonlyMap<string, string | undefined>) => void;
}

/**
 * Keeps the values of the plain store keys the rules read (the seed's `Grayscale_Range`) and
 * recompiles the served snapshot when one changes. Only values that compiled are kept
 * ("committed"): a malformed value is refused with a log line and the last good one stays, for
 * this document and for the next ones. Reads are serialized; a burst of notices costs two reads.
 */
export class StoreKeyFeed {
  private committed = new Map<string, string | undefined>();
  private keys: readonly string[] = [];
  private unwatch: (() => void) | undefined;
  private readonly reads = new CoalescedRead(() => (this.closed ? Promise.resolve() : this.readOnce()));
  private closed = false;
  private lastRefusal: string | undefined;
  private warnedNoKeys = false;
  private refusals = 0;
  private readonly logOutage: ReturnType<typeof rateLimited>;

  constructor(private readonly options: StoreKeyFeedOptions) {
    this.logOutage = rateLimited(options.logger, 10_000, 1);
  }

  /**
   * Values refused so far, each distinct refusal once (a value read again by the next poll is
   * not counted again): a refused key value is a refused reload, like a refused document.
   */
  get refused(): number {
    return this.refusals;
  }

  /** The last good value of `key`, for compiling (undefined: absent, or never read). */
  readonly value = (key: string): string | undefined => this.committed.get(key);

  /** Follows the keys of a newly applied document; resolves once their values are read and applied. */
  follow(keys: readonly string[]): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (isDeepStrictEqual([...keys].sort(), [...this.keys].sort())) return this.reads.settled();
    this.keys = [...keys];
    this.unwatch?.();
    this.unwatch = undefined;
    if (keys.length === 0) return Promise.resolve();
    const { store } = this.options;
    const reader = store.keyReader;
    if (!reader) {
      if (!this.warnedNoKeys) {
        this.warnedNoKeys = true;
        this.options.logger.warn(
          { keys, store: store.kind },
          `rules read store keys (${keys.join(', ')}) but the ${store.kind} store holds none; they match nobody (use the redis store)`,
        );
      }
      return Promise.resolve();
    }
    this.unwatch = reader.watchKeys(keys, () => void this.refresh());
    return this.refresh();
  }

  /** Rereads the followed keys and recompiles when a value changed. Never rejects. */
  refresh(): Promise<void> {
    return this.reads.run();
  }

  close(): void {
    this.closed = true;
    this.unwatch?.();
    this.unwatch = undefined;
  }

  private async readOnce(): Promise<void> {
    const { store, logger } = this.options;
    const keys = this.keys;
    if (keys.length === 0 || !store.keyReader) return;
    let values: ReadonlyMap<string, string | undefined>;
    try {
      values = await store.keyReader.readKeys(keys);
    } catch (error) {
      // Fail static: the last good values stay; the watcher reports again after a reconnect.
      this.logOutage('store-keys', 'warn', { err: error, keys }, `cannot read store keys ${keys.join(', ')}; the last good values stay`);
      return;
    }
    if (this.closed) return;
    const next = new Map<string, string | undefined>();
    for (const key of keys) next.set(key, values.get(key));
    if (isDeepStrictEqual(next, this.committed)) return;
    try {
      this.options.recompile(next);
    } catch (error) {
      const message = error instanceof ConfigError ? error.issues.join('; ') : (error as Error).message;
      if (message !== this.lastRefusal) {
        this.lastRefusal = message;
        this.refusals++;
        logger.error({ event: 'store-key-refused', keys, issues: error instanceof ConfigError ? error.issues : [message] }, `store key value refused, the last good one stays: ${message}`);
      }
      return;
    }
    const changed = keys.filter((key) => next.get(key) !== this.committed.get(key));
    this.committed = next;
    this.lastRefusal = undefined;
    logger.info({ event: 'store-key-applied', keys: changed, values: Object.fromEntries(changed.map((key) => [key, next.get(key)])) }, `applied new value of ${changed.join(', ')}`);
  }
}
