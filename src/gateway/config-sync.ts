import type { RoutingDocument } from '../config/schema.js';
import { ConfigError, GraygateError, type ErrorCode } from '../errors.js';
import { rateLimited, type Logger } from '../observe/log.js';
import type { RoutingSnapshot } from '../rules/snapshot.js';
import type { ChangeMeta, DocumentStore, StoredVersion } from '../store/store.js';
import { LastGoodFile } from './last-good.js';
import { CoalescedRead } from './coalesced-read.js';

/** Why the gateway offers the store what it serves: the store emptied, or went back within its epoch. */
export type PublishReason = { readonly kind: 'empty' } | { readonly kind: 'behind'; readonly storeVersion: number };

export interface ConfigSyncOptions {
  readonly store: DocumentStore;
  /** Validated document → frozen snapshot; throws ConfigError on a semantic problem. */
  readonly compile: (document: RoutingDocument, version: number) => RoutingSnapshot;
  /** Swaps the served snapshot (one reference); called only with a newer version. */
  readonly apply: (snapshot: RoutingSnapshot) => void;
  readonly logger: Logger;
  /** A snapshot to serve until the store answers (e.g. a last good one kept on disk); then start() does not throw. */
  readonly initial?: RoutingSnapshot;
  /**
   * When the first read fails and there is no `initial`, serve the newest version in the store's
   * history instead (it was validated when recorded): boot from the last good version rather than
   * not at all. The failure still shows in `stats().lastError`. Default false.
   */
  readonly bootFromHistory?: boolean;
  /**
   * Keep the last applied document on local disk (atomically, after each apply), and when the
   * first read fails with nothing else to serve, boot from it: a gateway restarted during a store
   * outage then serves its last good rules instead of not starting. `validate` checks the file
   * before it is trusted.
   */
  readonly lastGood?: { readonly path: string; readonly validate: (raw: unknown, source: string) => RoutingDocument };
  /** Store outages are logged at most once per this window (default 10 s); every one is counted. */
  readonly outageLogIntervalMs?: number;
  /**
   * For a store shared by a fleet: called when the store no longer holds what this gateway
   * serves. `empty`: the store answers GG_STORE_EMPTY (it lost its data). `behind`: it holds an
   * older version of the same epoch than the one served (restored from an older snapshot, or a
   * failover lost writes), which can only mean that acknowledged writes were lost. Either way the
   * caller writes the served document back as the next version (compare-and-set over what the
   * store holds), so the fleet converges on the newest acknowledged routing instead of splitting
   * between gateways that kept it and gateways started afterwards. A conflict (another gateway
   * published first) is the caller's to ignore: its version is read next and followed.
   */
  readonly publish?: (served: StoredVersion, reason: PublishReason) => Promise<void>;
  /**
   * The last resort at boot, after `bootFromHistory` and `lastGood`: a document to serve as
   * version 0 (the config file's routing, for a store kept apart from the file). Any version the
   * store answers later is newer; an empty store is seeded with it (see `reseed`).
   */
  readonly fallback?: { readonly document: RoutingDocument; readonly source: string };
}

/** Why the last read did not apply anything. Cleared by the next read that succeeds. */
export interface SyncFailure {
  /** `refused`: the document (or its compile) failed; `outage`: the store did not answer. */
  readonly kind: 'refused' | 'outage';
  readonly code: ErrorCode;
  readonly message: string;
  /** `path: message` lines, when the document was refused. */
  readonly issues: readonly string[];
  /** The version that was refused, when the store named one. */
  readonly version: number | undefined;
  /** ISO 8601. */
  readonly time: string;
}

export interface ConfigSyncStats {
  /** Version of the snapshot being served; undefined before the first one. */
  readonly version: number | undefined;
  /** Snapshots applied. */
  readonly applied: number;
  /** Distinct refusals: the same bad document read again is counted (and logged) once. */
  readonly refused: number;
  /** Reads that failed because the store did not answer (each one counted). */
  readonly storeErrors: number;
  readonly lastError: SyncFailure | undefined;
}

/**
 * Keeps the served snapshot in step with the store: reads `current()` on start and on every
 * watch notification, compiles and applies only a newer version. Reads are serialized and
 * coalesced (one in flight, at most one queued), so a burst of notifications costs at most two
 * reads. An invalid document is refused, logged once per distinct error with its issues and
 * counted; a store outage is logged at a bounded rate. Either way the last good snapshot stays
 * (fail static).
 *
 * Over 400 lines on purpose: boot (store, history, last-good copy, fallback), rereads and the
 * writer's own versions all decide one thing, which snapshot is served, so they stay together.
 */
export class ConfigSync {
  private current: RoutingSnapshot | undefined;
  /** The stored version behind `current` (absent when it came from `initial`). */
  private currentStored: StoredVersion | undefined;
  private publishing: Promise<void> | undefined;
  private readonly lastGoodFile: LastGoodFile | undefined;
  /** The copy on disk at start, offered to a store found behind it (see `publish`). */
  private diskCopy: StoredVersion | undefined;
  private readonly reads = new CoalescedRead(() => this.readOnce());
  private unwatch: (() => void) | undefined;
  private stopped = false;
  private applied = 0;
  private refused = 0;
  private storeErrors = 0;
  private lastError: SyncFailure | undefined;
  /** The last read's failure as thrown, so start() can rethrow it. */
  private lastCause: unknown;
  /** Message of the last refusal logged, so a document refused again is not logged again. */
  private lastRefusalKey: string | undefined;
  private readonly logOutage: ReturnType<typeof rateLimited>;
  /** Versions applied by `applyWritten`: a read that began before one of them answers nothing newer. */
  private localWrites = 0;

  constructor(private readonly options: ConfigSyncOptions) {
    this.current = options.initial;
    this.logOutage = rateLimited(options.logger, options.outageLogIntervalMs ?? 10_000, 1);
    this.lastGoodFile = options.lastGood ? new LastGoodFile(options.lastGood.path, options.lastGood.validate, options.logger) : undefined;
  }

  /**
   * Starts watching and reads the current version once. Resolves with the served snapshot;
   * throws the read's error when it failed and there is no snapshot to serve (the caller decides
   * whether to give up). Call once.
   */
  async start(): Promise<RoutingSnapshot> {
    if (this.unwatch || this.stopped) throw new GraygateError('GG_INTERNAL', 'ConfigSync.start() called twice or after stop()');
    // Watch first, so a change made while the first read runs is not missed (it queues a reread).
    this.unwatch = this.options.store.watch(() => void this.refresh());
    if (this.lastGoodFile && this.options.publish) this.diskCopy = await this.lastGoodFile.readIfValid();
    await this.refresh();
    if (!this.current && this.options.bootFromHistory) await this.bootFromHistory();
    if (!this.current && this.lastGoodFile) await this.bootFromLastGood(this.lastGoodFile);
    if (!this.current && this.options.fallback) this.bootFromFallback(this.options.fallback);
    if (!this.current) {
      this.stop();
      throw this.lastCause;
    }
    return this.current;
  }

  /**
   * Rereads the store and applies a newer version. Resolves once a read that began after this
   * call has finished; never rejects (failures land in `stats().lastError`).
   */
  refresh(): Promise<void> {
    return this.reads.run();
  }

  /** Stops watching; a read in flight finishes but applies nothing. */
  stop(): void {
    this.stopped = true;
    this.unwatch?.();
    this.unwatch = undefined;
  }

  /** The snapshot being served, if any. */
  get snapshot(): RoutingSnapshot | undefined {
    return this.current;
  }

  /** Version of the snapshot being served. */
  get version(): number | undefined {
    return this.current?.version;
  }

  /** The version and epoch of what is served (the epoch is unknown for a snapshot handed in as `initial`). */
  get served(): { readonly version: number; readonly epoch: string | undefined } | undefined {
    if (!this.current) return undefined;
    return { version: this.current.version, epoch: this.currentStored?.version === this.current.version ? this.currentStored.epoch : undefined };
  }

  stats(): ConfigSyncStats {
    return { version: this.current?.version, applied: this.applied, refused: this.refused, storeErrors: this.storeErrors, lastError: this.lastError };
  }

  /**
   * Applies a version this gateway has just written, as the store's compare-and-set returned it,
   * without reading the store again: the writer is acknowledged only once it is served, and a
   * store that stops answering right after the write must not hold that back. A read that began
   * before this call is not trusted to go back from it (see `readOnce`). Returns false when the
   * document could not be compiled (refused, like a read one; the last good snapshot stays).
   */
  applyWritten(stored: StoredVersion): boolean {
    if (this.stopped) return false;
    this.localWrites++;
    const known = this.currentStored;
    const sameLine = stored.epoch === undefined || known?.epoch === undefined || stored.epoch === known.epoch;
    // A newer version of the same line is served already (a notification's read got there first).
    if (sameLine && this.current !== undefined && stored.version <= this.current.version) return true;
    return this.install(stored);
  }

  /** Serves the copy `saveLastGood` keeps on disk when nothing else can be served at boot. */
  private async bootFromLastGood(lastGood: LastGoodFile): Promise<void> {
    let version: number;
    try {
      const saved = await lastGood.read();
      version = saved.version;
      const snapshot = this.options.compile(saved.document, version);
      if (this.stopped) return;
      this.options.apply(snapshot);
      this.current = snapshot;
      // Kept so that, once the store answers, a new epoch, a rewritten or a lost version is recognised.
      this.currentStored = saved;
      this.applied++;
    } catch (error) {
      this.options.logger.warn({ err: error, path: lastGood.path }, `cannot boot from the last good document on disk either: ${(error as Error).message}`);
      return;
    }
    this.options.logger.warn(
      { version, path: lastGood.path, code: this.lastError?.code },
      `the store could not be read; serving version ${version} from the last good copy on disk until it can: ${this.lastError?.message ?? ''}`,
    );
  }

  /** Serves the fallback document as version 0 when nothing better can be served at boot. */
  private bootFromFallback(fallback: NonNullable<ConfigSyncOptions['fallback']>): void {
    try {
      const snapshot = this.options.compile(fallback.document, 0);
      if (this.stopped) return;
      this.options.apply(snapshot);
      this.current = snapshot;
      this.currentStored = { version: 0, document: fallback.document, meta: { actor: 'graygate start', time: new Date().toISOString(), reason: `read from ${fallback.source}` } };
      this.applied++;
    } catch (error) {
      this.options.logger.warn({ err: error }, `cannot boot from ${fallback.source} either: ${(error as Error).message}`);
      return;
    }
    this.options.logger.warn(
      { event: 'boot-fallback', source: fallback.source, code: this.lastError?.code },
      `the store could not be read and no last good copy exists; serving the routing in ${fallback.source} until the store answers (it may be older than the fleet's): ${this.lastError?.message ?? ''}`,
    );
  }

  /** Resolves when every save of the last good document started so far has finished (tests, shutdown). */
  flushed(): Promise<void> {
    return this.lastGoodFile?.flushed() ?? Promise.resolve();
  }

  /** Serves the newest recorded version when the current one cannot be read at boot. */
  private async bootFromHistory(): Promise<void> {
    let newest: StoredVersion | undefined;
    try {
      [newest] = await this.options.store.history({ limit: 1 });
      if (!newest || this.stopped) return;
      const snapshot = this.options.compile(newest.document, newest.version);
      this.options.apply(snapshot);
      this.current = snapshot;
      this.currentStored = newest;
      this.applied++;
    } catch (error) {
      this.options.logger.warn({ err: error }, 'could not boot from the newest version in history either');
      return;
    }
    this.options.logger.warn(
      { version: newest.version, code: this.lastError?.code, issues: this.lastError?.issues },
      `the current routing document could not be read; serving version ${newest.version} from history until a good one is: ${this.lastError?.message ?? ''}`,
    );
  }

  private async readOnce(): Promise<void> {
    const writesBefore = this.localWrites;
    let stored: StoredVersion;
    try {
      stored = await this.options.store.current();
    } catch (error) {
      if (isRefusal(error)) this.refuse(error, undefined);
      else this.outage(error);
      if (error instanceof GraygateError && error.code === 'GG_STORE_EMPTY' && this.currentStored) this.publishServed(this.currentStored, { kind: 'empty' });
      return;
    }
    if (this.stopped) return;
    if (this.lastError?.kind === 'outage') this.options.logger.info({ storeErrors: this.storeErrors }, 'store answered again');
    const served = this.current?.version;
    const known = this.currentStored;
    if (this.localWrites !== writesBefore) {
      // This gateway applied its own write while the read was under way: the read may predate
      // that write, so it can only bring something newer of the same line, never take it back.
      const sameLine = stored.epoch === undefined || known?.epoch === undefined || stored.epoch === known.epoch;
      if (!sameLine || (served !== undefined && stored.version <= served)) {
        this.recovered();
        return;
      }
    }
    // A new epoch: the store lost its data and was seeded again. Its version numbers start over
    // and say nothing against ours, and every gateway must follow the store or the fleet splits.
    const newEpoch = stored.epoch !== undefined && known?.epoch !== undefined && stored.epoch !== known.epoch;
    // The same number but another write (a write lost in a failover, then made again): the store's
    // document is the one the rest of the fleet reads.
    const rewritten = known !== undefined && stored.version === known.version && !sameMeta(stored.meta, known.meta);
    if (newEpoch || rewritten) {
      this.options.logger.warn(
        { event: newEpoch ? 'store-epoch-changed' : 'store-version-rewritten', stored: stored.version, served, epoch: stored.epoch, previousEpoch: known?.epoch },
        newEpoch
          ? `the store was seeded again (new epoch; did it lose its data?): following its version ${stored.version} instead of version ${served}, like every gateway on it`
          : `the store holds another version ${stored.version} than the one served (a write was lost and made again): following the store`,
      );
    } else if (served !== undefined && stored.version <= served) {
      // Duplicate notifications and polls land here. An older version of the same epoch means the
      // store went back in time (restored from an older snapshot, a failover that lost writes):
      // serving it would silently undo acknowledged writes, so keep what is served and, where the
      // store is shared, write it back (see `publish`) so gateways started since follow it too.
      if (stored.version < served) {
        const behind = known !== undefined && known.version === served && known.version > 0 ? known : undefined;
        this.logOutage(
          'store-version-regressed',
          'warn',
          { event: 'store-version-regressed', stored: stored.version, served, epoch: stored.epoch },
          `the store says version ${stored.version}, older than the version ${served} being served (restored from an older snapshot, or a failover lost writes); keeping ${served}${behind && this.options.publish ? ' and writing it back to the store' : ''}`,
        );
        if (behind) this.publishServed(behind, { kind: 'behind', storeVersion: stored.version });
      }
      this.recovered();
      return;
    }
    this.install(stored);
  }

  /** Compiles and serves `stored`; false (and refused) when it does not compile. */
  private install(stored: StoredVersion): boolean {
    const served = this.current?.version;
    let snapshot: RoutingSnapshot;
    try {
      snapshot = this.options.compile(stored.document, stored.version);
      if (this.stopped) return false;
      this.options.apply(snapshot);
    } catch (error) {
      this.refuse(error, stored.version);
      return false;
    }
    this.current = snapshot;
    this.currentStored = stored;
    this.applied++;
    this.recovered();
    this.lastGoodFile?.save(stored);
    this.options.logger.info({ version: stored.version, previous: served, actor: stored.meta.actor, reason: stored.meta.reason }, `applied routing version ${stored.version}`);
    this.offerDiskCopy(stored);
    return true;
  }

  /**
   * Once, after the first version read from the store: a copy on disk of the same epoch and a
   * higher version is a write the store lost while this gateway was down (restarted on a store
   * restored from an older snapshot). It is offered back like a served version (see `publish`).
   */
  private offerDiskCopy(stored: StoredVersion): void {
    const copy = this.diskCopy;
    this.diskCopy = undefined;
    if (copy === undefined || copy.epoch === undefined || copy.epoch !== stored.epoch || copy.version <= stored.version) return;
    this.options.logger.warn(
      { event: 'store-version-regressed', stored: stored.version, saved: copy.version, epoch: stored.epoch },
      `the store says version ${stored.version}, but this gateway served version ${copy.version} of the same epoch before it restarted (the store was restored from an older snapshot, or a failover lost writes); writing it back to the store`,
    );
    this.publishServed(copy, { kind: 'behind', storeVersion: stored.version });
  }

  private refuse(error: unknown, version: number | undefined): void {
    this.lastCause = error;
    const code: ErrorCode = error instanceof GraygateError ? error.code : 'GG_INTERNAL';
    const message = error instanceof Error ? error.message : String(error);
    const issues = error instanceof ConfigError ? error.issues : [message];
    this.lastError = { kind: 'refused', code, message, issues, version, time: new Date().toISOString() };
    const key = `${version ?? ''}|${message}`;
    if (key === this.lastRefusalKey) return;
    this.lastRefusalKey = key;
    this.refused++;
    const served = this.current?.version;
    this.options.logger.warn(
      { code, issues, refusedVersion: version, servedVersion: served, ...(error instanceof GraygateError ? {} : { err: error }) },
      `routing document refused; ${served === undefined ? 'nothing is served yet' : `still serving version ${served}`}: ${message}`,
    );
  }

  private outage(error: unknown): void {
    this.lastCause = error;
    this.storeErrors++;
    const code: ErrorCode = error instanceof GraygateError ? error.code : 'GG_STORE_UNAVAILABLE';
    const message = error instanceof Error ? error.message : String(error);
    this.lastError = { kind: 'outage', code, message, issues: [], version: undefined, time: new Date().toISOString() };
    const served = this.current?.version;
    this.logOutage('store-outage', 'warn', { code, err: error, servedVersion: served }, `store read failed; routing unchanged${served === undefined ? '' : ` (serving version ${served})`}: ${message}`);
  }

  /** Writes `served` back to a store that lost it (one at a time), then rereads; see `publish` in the options. */
  private publishServed(served: StoredVersion, reason: PublishReason): void {
    if (!this.options.publish || this.publishing || this.stopped) return;
    this.publishing = this.options
      .publish(served, reason)
      .catch((error: unknown) => this.options.logger.warn({ err: error }, `could not write the served routing back to the store: ${(error as Error).message}`))
      .finally(() => {
        this.publishing = undefined;
        // What the store holds now (ours, or another gateway's that won) is followed at once.
        if (!this.stopped) void this.refresh();
      });
  }

  /** The store serves what is served: an outage or refusal is over (a later identical refusal is news again). */
  private recovered(): void {
    this.lastError = undefined;
    this.lastCause = undefined;
    this.lastRefusalKey = undefined;
  }
}

function sameMeta(a: ChangeMeta, b: ChangeMeta): boolean {
  return a.time === b.time && a.actor === b.actor && a.reason === b.reason;
}

/** A document that cannot be served (as opposed to a store that cannot be reached). */
function isRefusal(error: unknown): boolean {
  return error instanceof ConfigError || (error instanceof GraygateError && error.code === 'GG_STORE_CORRUPT');
}
