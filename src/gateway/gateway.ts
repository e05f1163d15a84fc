import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { parseRoutingDocument } from '../config/load.js';
import type { RoutingDocument, Settings } from '../config/schema.js';
import type { CreateDataPlane, DataPlane } from '../dataplane/runtime.js';
import { GraygateError, isGraygateError } from '../errors.js';
import type { IdentityContext } from '../identity/source.js';
import { createAccessLog } from '../observe/access-log.js';
import type { Logger } from '../observe/log.js';
import { metricsSource, Registry, registerGatewayMetrics, registerIdentityMetrics, RequestMetrics, type MetricsSource } from '../observe/metrics.js';
import { combineObservers } from '../observe/request-observer.js';
import { compileRouting, storeKeysOf } from '../rules/compile.js';
import type { RoutingSnapshot } from '../rules/snapshot.js';
import type { Store, StoredVersion } from '../store/store.js';
import { ConfigSync } from './config-sync.js';
import { LoadReporter, loadReportOf, newInstanceId } from './load-reporter.js';
import { StoreKeyFeed } from './store-keys.js';

export interface GatewayOptions {
  readonly settings: Settings;
  /** The config file the settings came from (absent in the drop-in mode); the file store reads routing from it. */
  readonly configPath?: string;
  readonly logger: Logger;
  /** The data plane for the runtime that runs graygate (node:http + undici on Node). */
  readonly createDataPlane: CreateDataPlane;
  /** A store to use instead of the one `settings.store` describes (tests, the drop-in mode). */
  readonly store?: Store;
  /**
   * The config file's routing document, for a store kept apart from the file (Redis): written
   * as version 1 when the store holds none yet, ignored (with a warning) when it holds one.
   */
  readonly seedDocument?: RoutingDocument;
  /** Where seedDocument came from, for log lines and the history (default: the config file). */
  readonly seedSource?: string;
}

/** A running gateway: store → validated, compiled snapshot → data plane, kept in sync live. */
export interface Gateway {
  readonly address: { host: string; port: number };
  readonly store: Store;
  readonly sync: ConfigSync;
  readonly dataPlane: DataPlane;
  /** The snapshot being served (it changes with the document and with store keys it reads). */
  readonly snapshot: RoutingSnapshot | undefined;
  /** Where the admin API listens, when `settings.admin` configures it. */
  readonly adminAddress: { host: string; port: number } | undefined;
  /** This process's name in the fleet's load reports (host:pid:random). */
  readonly instanceId: string;
  /** The whole gateway's metrics (with `--workers`, every worker's summed with this process's), as the admin API serves them. */
  readonly metrics: MetricsSource;
  /** Graceful stop: drain the data plane within `graceMs`, then close the store. */
  close(graceMs?: number): Promise<void>;
}

/** Builds the store the settings describe; Redis (and ioredis) is loaded only when asked for. */
export async function createStore(settings: Settings, configPath: string | undefined, logger: Logger): Promise<Store> {
  const store = settings.store;
  switch (store.kind) {
    case 'file': {
      if (!configPath) throw new GraygateError('GG_CONFIG_INVALID', 'store.kind: the file store needs a config file (--config FILE)');
      const { createFileStore } = await import('../store/file/file-store.js');
      // The store resolves a relative store.path against the config file's directory itself.
      return createFileStore(store, { configPath, validate: parseRoutingDocument, logger });
    }
    case 'redis': {
      const { createRedisStore } = await import('../store/redis/redis-store.js');
      return createRedisStore(store, { validate: parseRoutingDocument, logger });
    }
    default:
      throw new GraygateError('GG_CONFIG_INVALID', `store.kind: unknown store ${JSON.stringify((store as { kind: string }).kind)}`);
  }
}

/** Where a store kept apart from the config file saves its last good document. */
function lastGoodPathOf(settings: Settings, configPath: string | undefined): string | undefined {
  if (settings.store.kind !== 'redis') return undefined;
  if (settings.store.lastGoodPath) return path.resolve(configPath ? path.dirname(configPath) : '.', settings.store.lastGoodPath);
  return configPath ? `${configPath}.last-good.json` : path.resolve('graygate.last-good.json');
}

/** Writes the config file's routing as version 1 when the store is empty; warns when it is ignored. */
async function seedStore(store: Store, document: RoutingDocument, source: string, logger: Logger): Promise<void> {
  try {
    const current = await store.current();
    logger.warn(
      { event: 'seed-ignored', version: current.version },
      `the store already holds routing version ${current.version}; the routing in ${source} is ignored (change the store's document instead)`,
    );
  } catch (error) {
    if (!isGraygateError(error) || error.code !== 'GG_STORE_EMPTY') return; // outages and refusals: ConfigSync reports them
    try {
      const written = await store.write(document, { expectedVersion: 0, actor: 'graygate start', reason: `seeded from ${source}` });
      logger.info({ event: 'seeded', version: written.version }, `the store was empty: seeded it with the routing in ${source} as version ${written.version}`);
    } catch (seedError) {
      // Another gateway seeded it first: fine, its version is read next.
      if (!isGraygateError(seedError) || seedError.code !== 'GG_VERSION_CONFLICT') throw seedError;
    }
  }
}

/** Seeds an emptied shared store with the version this gateway serves; another gateway may win. */
async function reseedStore(store: Store, served: StoredVersion, logger: Logger): Promise<void> {
  try {
    const written = await store.write(served.document, {
      expectedVersion: 0,
      actor: `graygate@${hostname()}`,
      reason: `seeded again after the store lost its routing document (this gateway served version ${served.version})`,
    });
    logger.warn(
      { event: 'reseeded', version: written.version, served: served.version },
      `the store had lost its routing document: seeded it again with the routing this gateway serves (version ${served.version}), now version ${written.version}`,
    );
  } catch (error) {
    // Another gateway seeded it first: its document is read next, and every gateway follows it.
    if (!isGraygateError(error) || error.code !== 'GG_VERSION_CONFLICT') throw error;
  }
}

/** The last good copy on disk, if there is a valid one (it is only a preference for seeding). */
async function readLastGood(file: string): Promise<{ version: number; document: RoutingDocument } | undefined> {
  try {
    const saved = JSON.parse(await readFile(file, 'utf8')) as { version?: unknown; document?: unknown };
    if (typeof saved.version !== 'number') return undefined;
    return { version: saved.version, document: parseRoutingDocument(saved.document, file) };
  } catch {
    return undefined;
  }
}

/**
 * Starts a gateway: reads the routing document (refusing to start on an invalid one, with the
 * issues), compiles it, starts listening, and from then on applies every newer valid version
 * live while keeping the last good one when a change is refused.
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { settings, logger } = options;
  const store = options.store ?? (await createStore(settings, options.configPath, logger));
  // One registry per gateway (not prom-client's global one), so several gateways in one process
  // (tests, embedders) never mix their counts.
  const registry = new Registry();
  const requestMetrics = new RequestMetrics(registry);
  const dataPlane = options.createDataPlane({ settings, logger, observer: combineObservers(requestMetrics, createAccessLog(logger, settings.log.access)) });
  // Long-lived: identity caches (token lookups) are kept per context, across snapshots.
  const identityContext: IdentityContext = {
    ...(store.readKey ? { readKey: (key: string, deadlineMs: number) => store.readKey!(key, deadlineMs) } : {}),
    logger,
  };
  registerIdentityMetrics(registry, identityContext);
  let served: RoutingSnapshot | undefined;
  // When the served version last changed (a store key recompile keeps the version): the drain
  // report waits until a version has been served a moment before trusting a count of 0.
  let servedSince = Date.now();
  const install = (snapshot: RoutingSnapshot, storeValue: (key: string) => string | undefined) => {
    if (snapshot.version !== served?.version) servedSince = Date.now();
    served = snapshot;
    dataPlane.setSnapshot(snapshot, storeValue);
  };
  const keyFeed: StoreKeyFeed = new StoreKeyFeed({
    store,
    logger,
    // Same document and version, new key values: compile and swap in one synchronous step, so
    // a newer document applied meanwhile can never be replaced by an older one.
    recompile: (values) => {
      const current = sync.snapshot;
      if (!current) return;
      const storeValue = (key: string) => values.get(key);
      install(compileRouting(current.document, current.version, { storeValue, identityContext }), storeValue);
    },
  });
  // A store handed in (tests, the drop-in mode's fixed document) keeps no copy on disk.
  const lastGoodPath = options.store ? undefined : lastGoodPathOf(settings, options.configPath);
  const metrics = metricsSource(registry, dataPlane.collectMetrics ? () => dataPlane.collectMetrics!() : undefined);
  const sync: ConfigSync = new ConfigSync({
    store,
    compile: (document, version) => compileRouting(document, version, { storeValue: keyFeed.value, identityContext }),
    apply: (snapshot) => {
      install(snapshot, keyFeed.value);
      void keyFeed.follow(storeKeysOf(snapshot.document));
    },
    logger,
    // A gateway restarted while its config file is broken serves the last recorded good version
    // (and says so) rather than not starting: fail static across restarts too.
    bootFromHistory: settings.store.kind === 'file',
    ...(lastGoodPath ? { lastGood: { path: lastGoodPath, validate: parseRoutingDocument } } : {}),
    // A shared store that lost its data is seeded again with what the fleet serves.
    ...(settings.store.kind === 'redis' && !options.store ? { reseed: (served: StoredVersion) => reseedStore(store, served, logger) } : {}),
    // First boot with the store down and no copy on disk: the config file's routing beats not starting.
    ...(options.seedDocument ? { fallback: { document: options.seedDocument, source: options.seedSource ?? options.configPath ?? 'the config file' } } : {}),
  });
  registerGatewayMetrics(registry, { syncStats: () => sync.stats(), dataPlaneStats: () => dataPlane.stats() });
  try {
    // After a data loss, the last routing this gateway served is closer to the fleet's than the
    // config file's (which may be weeks older than the live rules).
    const lastGood = lastGoodPath && options.seedDocument ? await readLastGood(lastGoodPath) : undefined;
    if (lastGood) await seedStore(store, lastGood.document, `the last good copy ${lastGoodPath} (version ${lastGood.version} as served before)`, logger);
    else if (options.seedDocument) await seedStore(store, options.seedDocument, options.seedSource ?? options.configPath ?? 'the config file', logger);
    const first = await sync.start();
    // Before listening: the first requests must already see the store keys' values.
    await keyFeed.follow(storeKeysOf(first.document));
  } catch (error) {
    keyFeed.close();
    await store.close();
    throw error;
  }
  let address: { host: string; port: number };
  try {
    address = await dataPlane.listen();
  } catch (error) {
    sync.stop();
    keyFeed.close();
    await store.close();
    throw error;
  }
  const instanceId = newInstanceId();
  const localLoad = () => loadReportOf(dataPlane.stats(), served?.version ?? null, servedSince);
  const reporter = new LoadReporter({ store, instanceId, measure: localLoad, logger });
  reporter.start();
  // The admin API (src/control/api) on its own listener, loaded only when configured.
  let admin: { address: { host: string; port: number }; close(): Promise<void> } | undefined;
  if (settings.admin) {
    try {
      const { startAdminServer } = await import('../control/api/server.js');
      admin = await startAdminServer({
        settings: settings.admin,
        context: {
          store,
          snapshot: () => served,
          dataPlaneStats: () => dataPlane.stats(),
          instanceId,
          localLoad,
          syncStats: () => sync.stats(),
          metrics,
          afterWrite: () => void sync.refresh(),
          logger,
        },
      });
    } catch (error) {
      sync.stop();
      keyFeed.close();
      await dataPlane.drain(0);
      await reporter.close();
      await store.close();
      throw error;
    }
  }
  let closing: Promise<void> | undefined;
  return {
    address,
    store,
    sync,
    dataPlane,
    get snapshot() {
      return served;
    },
    adminAddress: admin?.address,
    instanceId,
    metrics,
    close(graceMs = settings.proxy.shutdownGraceMs) {
      closing ??= (async () => {
        await admin?.close();
        sync.stop();
        keyFeed.close();
        // Still reported while draining: the fleet sees these requests until they finish.
        await dataPlane.drain(graceMs);
        await reporter.close();
        await store.close();
      })();
      return closing;
    },
  };
}
