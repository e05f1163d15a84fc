import type { RedisStoreSettings, RoutingDocument } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import { silentLogger, type Logger } from '../../observe/log.js';
import type { ReadOptions, Store, StoredVersion, StoreHealth, WriteRequest } from '../store.js';
import { ChangeWatch } from './change-watch.js';
import { RedisConnections, type Client } from './connections.js';
import { RedisDocuments, type RoutingValidator } from './document.js';
import { lookupConnection, RedisKeyReader } from './key-reader.js';
import { RedisLeases } from './leases.js';
import { RedisLoadReports } from './load-reports.js';
import { redisStoreKeys, type RedisStoreKeys } from './names.js';
import type { RedisTarget } from './url.js';

export { redisStoreKeys, type RedisStoreKeys } from './names.js';
export type { RoutingValidator } from './document.js';
export { createRedisKeyReader } from './key-reader.js';

export interface RedisStoreOptions {
  /** Schema and semantic checks (config/load.ts `parseRoutingDocument`). */
  readonly validate: RoutingValidator;
  readonly logger?: Logger;
}

/** How often a store never reached since start is warned about again. */
const NEVER_REACHED_EVERY_MS = 10_000;

/** Creates a Redis store (connections open at once, in the background); throws ConfigError on a bad URL. */
export function createRedisStore(settings: RedisStoreSettings, options: RedisStoreOptions): RedisStore {
  return new RedisStore(settings, options);
}

/**
 * The routing document in Redis (standalone, Sentinel or Cluster), for fleets, put together from
 * its parts: connections (connections.ts), the document with compare-and-set writes
 * (document.ts, with the Sentinel master check in sentinel.ts), change watching
 * (change-watch.ts), plain keys and keyspace events (key-reader.ts) and the fleet's load reports
 * (load-reports.ts). Connections: `control` for document reads and writes (no offline queue: a
 * command either goes out now or fails at once; each has a deadline), `lookup` for identity
 * lookups (a per-call deadline), a subscriber for change notifications, and one for load reports.
 */
export class RedisStore implements Store {
  readonly kind = 'redis';
  readonly keys: RedisStoreKeys;
  readonly target: RedisTarget;
  readonly keyReader: RedisKeyReader;
  readonly fleet: RedisLoadReports;
  readonly leases: RedisLeases;
  private readonly connections: RedisConnections;
  private readonly control: Client;
  private readonly documents: RedisDocuments;
  private readonly changes: ChangeWatch;
  /** Whether the control connection has ever been ready (a store never reached is not "up"). */
  private everReady = false;
  private readonly startedAt = Date.now();
  private warnedNeverReached = false;
  /** Repeats the warning while the store has never been reached (a mistyped address must not go unnoticed). */
  private neverReachedTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly settings: RedisStoreSettings,
    options: RedisStoreOptions,
  ) {
    this.connections = new RedisConnections(settings, options.logger ?? silentLogger());
    this.target = this.connections.target;
    this.keys = redisStoreKeys(settings.namespace);
    this.control = this.connections.connect('control', { commandTimeout: settings.commandTimeoutMs });
    this.documents = new RedisDocuments(this.connections, this.control, this.keys, options.validate);
    this.changes = new ChangeWatch(this.connections, this.control, this.keys);
    this.keyReader = new RedisKeyReader(this.connections, this.control, lookupConnection(this.connections));
    this.fleet = new RedisLoadReports(this.connections, this.control, this.keys.load);
    this.leases = new RedisLeases(this.connections, this.control, this.keys);
    this.scheduleNeverReachedWarning(Math.max(settings.commandTimeoutMs, 1_000));
    this.control.on('ready', () => {
      if (!this.everReady && this.warnedNeverReached) {
        this.connections.logger.warn({ event: 'store-reached', store: this.target.display }, `redis store ${this.target.display} reached`);
      }
      this.everReady = true;
      clearTimeout(this.neverReachedTimer);
      void this.documents.measureClock();
      // A reconnect of the control connection may follow an outage in which changes were missed.
      this.changes.notify();
    });
  }

  /**
   * Warns (as an error, with the address) after `delayMs` and then every NEVER_REACHED_EVERY_MS
   * for as long as the store has never answered since start: the gateway routes meanwhile on
   * what it had (its last good copy, the config file, or stable only), and /readyz says not ready.
   */
  private scheduleNeverReachedWarning(delayMs: number): void {
    this.neverReachedTimer = setTimeout(() => {
      if (this.everReady || this.connections.closed) return;
      const seconds = Math.round((Date.now() - this.startedAt) / 1000);
      this.connections.logger.error(
        { event: 'store-never-reached', store: this.connections.target.display, status: this.control.status, seconds },
        `redis store ${this.connections.target.display} has not been reached in the ${seconds} s since start (is the address right? is it up?); ` +
          'routing stays on what this gateway had at start (its last good copy, the config file, or stable only) and /readyz says not ready until it answers',
      );
      this.warnedNeverReached = true;
      this.scheduleNeverReachedWarning(NEVER_REACHED_EVERY_MS);
    }, delayMs);
    this.neverReachedTimer.unref();
  }

  /** How long one admin operation (a read and a write) may take against this store: `commandTimeoutMs`. */
  get deadlineMs(): number {
    return this.settings.commandTimeoutMs;
  }

  /** Up: connected, and the last poll got an answer. `everUp`: connected at least once since start. */
  health(): StoreHealth {
    return { up: this.everReady && this.changes.reachable && this.control.status === 'ready', everUp: this.everReady };
  }

  /** True while the last poll (or command) reached Redis. */
  get reachable(): boolean {
    return this.changes.reachable;
  }

  /** The current version. ConfigError when it does not validate; GG_STORE_EMPTY when none is stored; GG_STORE_UNAVAILABLE when unreachable. */
  async current(options: ReadOptions = {}): Promise<StoredVersion> {
    const stored = await this.documents.current(options);
    this.changes.seen(stored.version);
    return stored;
  }

  /** Compare-and-set write as version expectedVersion + 1, with history, a notification and a fence; GG_VERSION_CONFLICT when stale. */
  async write(document: RoutingDocument, request: WriteRequest): Promise<StoredVersion> {
    const written = await this.documents.write(document, request);
    this.changes.seen(written.version);
    return written;
  }

  history(options: { limit?: number } = {}): Promise<StoredVersion[]> {
    return this.documents.history(options);
  }

  version(version: number): Promise<StoredVersion> {
    return this.documents.version(version);
  }

  /** Calls `onChange` on a notification, when the poll sees a new version, and after every (re)connect. */
  watch(onChange: () => void): () => void {
    if (this.connections.closed) throw new GraygateError('GG_STORE_UNAVAILABLE', 'the redis store is closed');
    return this.changes.watch(onChange);
  }

  /** Stops watching and closes every connection at once (never waits on an unreachable server). */
  async close(): Promise<void> {
    if (this.connections.closed) return;
    clearTimeout(this.neverReachedTimer);
    this.changes.close();
    this.keyReader.close();
    this.connections.close();
  }
}
