import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import path from 'node:path';
import { parseRoutingDocument } from '../config/load.js';
import type { RoutingDocument, Settings } from '../config/schema.js';
import type { CreateDataPlane, DataPlane, ListenAddresses } from '../dataplane/runtime.js';
import type { ServedAck } from '../control/api/context.js';
import { GraygateError, isGraygateError } from '../errors.js';
import { createServing } from '../dataplane/serving.js';
import { impactInProcess } from '../observe/impact.js';
import type { GatewayFigures } from '../rollout/analysis/types.js';
import { registerWorkerMetrics } from '../dataplane/workers/metrics.js';
import type { Logger } from '../observe/log.js';
import { metricsSource, registerGatewayMetrics, registerRolloutMetrics, type MetricsSource } from '../observe/metrics.js';
import { RolloutDriver, type LiveRollout } from '../rollout/driver.js';
import { localFleetSample } from '../rollout/analysis/fleet.js';
import { isActive } from '../rollout/run.js';
import { compileRouting, storeKeysOf } from '../rules/compile.js';
import { readsRedis } from '../openresty/conf.js';
import { OpenRestyKeyWriter } from '../openresty/key-writer.js';
import type { RoutingSnapshot } from '../rules/snapshot.js';
import type { Store, StoredVersion } from '../store/store.js';
import { ConfigSync, type PublishReason } from './config-sync.js';
import { fleetViewOf, registerFleetMetrics } from './fleet-view.js';
import { LastGoodFile } from './last-good.js';
import { FLEET_LOAD_STALE_MS, LoadReporter, loadReportOf, newInstanceId } from './load-reporter.js';
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
  /** Where the proxy listens (the plain listener, or the TLS one alone; `tls` when configured). */
  readonly address: ListenAddresses;
  readonly store: Store;
  readonly sync: ConfigSync;
  readonly dataPlane: DataPlane;
  /** The snapshot being served (it changes with the document and with store keys it reads). */
  readonly snapshot: RoutingSnapshot | undefined;
  /** Where the admin API listens, when `settings.admin` configures it. */
  readonly adminAddress: { host: string; port: number } | undefined;
  /** This process's name in the fleet's load reports (host:pid:random). */
  readonly instanceId: string;
  /**
   * This gateway's per-service, per-version figures now (cumulative since it started; with
   * --workers, every worker's summed): what its load report carries for the rollout analysis, and
   * what a single gateway on the file store judges its own rollouts by (`localFleetSample`).
   * Undefined when its data plane's figures cannot be read now (nginx's dump, read too long ago).
   */
  figures(): GatewayFigures | undefined;
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

/**
 * Writes `document` to the store as the version after `expectedVersion` (compare-and-set). The
 * one way a gateway writes routing by itself: seeding an empty store from the config file or the
 * last good copy, and giving back what it serves to a store that lost it (emptied, or gone back
 * within its epoch). Returns the version written, or undefined when another writer got there
 * first (its version is read next, and every gateway follows it: no two gateways fight).
 */
async function publishDocument(store: Store, document: RoutingDocument, write: { expectedVersion: number; actor: string; reason: string }): Promise<StoredVersion | undefined> {
  try {
    return await store.write(document, write);
  } catch (error) {
    if (isGraygateError(error) && error.code === 'GG_VERSION_CONFLICT') return undefined;
    throw error;
  }
}

/** Seeds an empty store with `document` as version 1; warns when the store already holds one. */
async function seedStore(store: Store, document: RoutingDocument, source: string, logger: Logger): Promise<void> {
  try {
    const current = await store.current();
    logger.warn(
      { event: 'seed-ignored', version: current.version },
      `the store already holds routing version ${current.version}; the routing in ${source} is ignored (change the store's document instead)`,
    );
  } catch (error) {
    if (!isGraygateError(error) || error.code !== 'GG_STORE_EMPTY') return; // outages and refusals: ConfigSync reports them
    const written = await publishDocument(store, document, { expectedVersion: 0, actor: 'graygate start', reason: `seeded from ${source}` });
    if (written) logger.info({ event: 'seeded', version: written.version }, `the store was empty: seeded it with the routing in ${source} as version ${written.version}`);
  }
}

/** Gives the served version back to a shared store that lost it (see ConfigSync's `publish`). */
async function publishServed(store: Store, served: StoredVersion, reason: PublishReason, logger: Logger): Promise<void> {
  const lost = reason.kind === 'empty' ? 'the store had lost its routing document' : `the store went back from version ${served.version} to ${reason.storeVersion}`;
  const written = await publishDocument(store, served.document, {
    expectedVersion: reason.kind === 'empty' ? 0 : reason.storeVersion,
    actor: `graygate@${hostname()}`,
    reason:
      reason.kind === 'empty'
        ? `seeded again after the store lost its routing document (this gateway served version ${served.version})`
        : `written back after the store went back to version ${reason.storeVersion} (restored from an older snapshot, or a failover lost writes): this gateway served version ${served.version} (${served.meta.actor}: ${served.meta.reason})`,
  });
  if (written) {
    logger.warn(
      { event: reason.kind === 'empty' ? 'reseeded' : 'republished', version: written.version, served: served.version, epoch: written.epoch },
      `${lost}: wrote the routing this gateway serves (version ${served.version}) back to it, now version ${written.version}; every gateway follows it`,
    );
  }
}

/**
 * How long a write through the admin API waits for every worker to confirm the version it wrote
 * before it answers. Beyond it, the answer says which workers do not serve it yet (they are sent
 * it again; see ClusterDataPlane).
 */
const WRITE_CONFIRM_MS = 1_000;

/**
 * Serves a version this gateway just wrote, from the compare-and-set's answer (no second read of
 * the store, which may have stopped answering), and resolves once every process of this gateway
 * serves it, or after WRITE_CONFIRM_MS saying which do not yet.
 */
async function applyWritten(sync: ConfigSync, dataPlane: DataPlane, written: StoredVersion): Promise<ServedAck> {
  if (!sync.applyWritten(written)) {
    const refusal = sync.stats().lastError;
    return { everywhere: false, version: sync.version ?? null, behind: [], message: `version ${written.version} is stored but this gateway refused to serve it: ${refusal?.message ?? 'it did not compile'}` };
  }
  const report = dataPlane.settled ? await dataPlane.settled(WRITE_CONFIRM_MS) : { everywhere: true, behind: [] };
  const version = sync.version ?? null;
  if (report.everywhere) return { everywhere: true, version, behind: [] };
  const behind = report.behind.map((worker) => ({ pid: worker.pid, version: worker.version }));
  return {
    everywhere: false,
    version,
    behind,
    message: `version ${written.version} is stored and served by this gateway's primary, but ${behind.length} worker(s) did not confirm it within ${WRITE_CONFIRM_MS} ms (${behind.map((w) => `pid ${w.pid} serves ${w.version ?? 'nothing'}`).join(', ')}); it is being sent again`,
  };
}

/**
 * Starts a gateway: reads the routing document (refusing to start on an invalid one, with the
 * issues), compiles it, starts listening, and from then on applies every newer valid version
 * live while keeping the last good one when a change is refused.
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { settings, logger } = options;
  const store = options.store ?? (await createStore(settings, options.configPath, logger));
  // Wired as every process that serves requests is: a single process serves them itself; the
  // `--workers` primary's data plane hands its snapshots on, and each worker wires its own the same way.
  const { dataPlane, registry, identity, figures: ownFigures, identitySample } = createServing({
    settings,
    logger,
    createDataPlane: options.createDataPlane,
    readKey: store.keyReader ? (key: string, deadlineMs: number) => store.keyReader!.readKey(key, deadlineMs) : undefined,
  });
  if (dataPlane.workers) registerWorkerMetrics(registry, () => dataPlane.workers!());
  let served: RoutingSnapshot | undefined;
  // When the served version last changed (a store key recompile keeps the version): the drain
  // report waits until a version has been served a moment before trusting a count of 0.
  let servedSince = Date.now();
  // On a Redis an nginx can read (standalone), every gateway keeps the fleet's OpenResty routing
  // key current, so a user's nginx reading only Redis gets routing even with no OpenResty gateway
  // in the fleet (an OpenResty data plane writes it itself).
  const openRestyKey =
    settings.store.kind === 'redis' && !options.store && dataPlane.kind !== 'openresty' && readsRedis(settings) ? new OpenRestyKeyWriter(settings.store, logger) : undefined;
  const install = (snapshot: RoutingSnapshot) => {
    if (snapshot.version !== served?.version) servedSince = Date.now();
    served = snapshot;
    dataPlane.setSnapshot(snapshot);
    openRestyKey?.offer(snapshot);
  };
  const keyFeed: StoreKeyFeed = new StoreKeyFeed({
    store,
    logger,
    // Same document and version, new key values: compile and swap in one synchronous step, so
    // a newer document applied meanwhile can never be replaced by an older one.
    recompile: (values) => {
      const current = sync.snapshot;
      if (!current) return;
      install(compileRouting(current.document, current.version, { storeValue: (key) => values.get(key), identity }));
    },
  });
  // A store handed in (tests, the drop-in mode's fixed document) keeps no copy on disk.
  const lastGoodPath = options.store ? undefined : lastGoodPathOf(settings, options.configPath);
  const sharedStore = settings.store.kind === 'redis' && !options.store;
  const metrics = metricsSource(registry, dataPlane.collectMetrics ? () => dataPlane.collectMetrics!() : undefined);
  const sync: ConfigSync = new ConfigSync({
    store,
    compile: (document, version) => compileRouting(document, version, { storeValue: keyFeed.value, identity }),
    apply: (snapshot) => {
      install(snapshot);
      void keyFeed.follow(storeKeysOf(snapshot.document));
    },
    logger,
    // A gateway restarted while its config file is broken serves the last recorded good version
    // (and says so) rather than not starting: fail static across restarts too.
    bootFromHistory: settings.store.kind === 'file',
    ...(lastGoodPath ? { lastGood: { path: lastGoodPath, validate: parseRoutingDocument } } : {}),
    // A shared store that lost its data, or went back within its epoch, gets what this gateway
    // serves written back, so the fleet converges on the newest acknowledged routing.
    ...(sharedStore ? { publish: (served: StoredVersion, reason: PublishReason) => publishServed(store, served, reason, logger) } : {}),
    // First boot with the store down and no copy on disk: the config file's routing beats not starting.
    ...(options.seedDocument ? { fallback: { document: options.seedDocument, source: options.seedSource ?? options.configPath ?? 'the config file' } } : {}),
  });
  // A refused store key value (a malformed Grayscale_Range) is a refused reload too.
  const reloadStats = () => {
    const stats = sync.stats();
    return { ...stats, refused: stats.refused + keyFeed.refused };
  };
  registerGatewayMetrics(registry, { syncStats: reloadStats, dataPlaneStats: () => dataPlane.stats() });
  try {
    // After a data loss, the last routing this gateway served is closer to the fleet's than the
    // config file's (which may be weeks older than the live rules).
    const lastGood = lastGoodPath && options.seedDocument ? await new LastGoodFile(lastGoodPath, parseRoutingDocument, logger).readIfValid() : undefined;
    if (lastGood) await seedStore(store, lastGood.document, `the last good copy ${lastGoodPath} (version ${lastGood.version} as served before)`, logger);
    else if (options.seedDocument) await seedStore(store, options.seedDocument, options.seedSource ?? options.configPath ?? 'the config file', logger);
    const first = await sync.start();
    // Before listening: the first requests must already see the store keys' values.
    await keyFeed.follow(storeKeysOf(first.document));
  } catch (error) {
    keyFeed.close();
    await openRestyKey?.close();
    await store.close();
    throw error;
  }
  let address: ListenAddresses;
  try {
    address = await dataPlane.listen();
  } catch (error) {
    sync.stop();
    keyFeed.close();
    await openRestyKey?.close();
    await store.close();
    throw error;
  }
  const instanceId = newInstanceId();
  // A new id per start: a window whose two ends carry different ids spans a restart.
  const counters = { countersId: randomBytes(6).toString('hex'), startedAt: Date.now() };
  const figures = (): GatewayFigures | undefined => {
    const services = dataPlane.figures ? dataPlane.figures() : ownFigures.snapshot();
    return services === undefined ? undefined : { ...counters, services };
  };
  const localLoad = () =>
    loadReportOf(dataPlane.stats(), dataPlane.servedVersion ? dataPlane.servedVersion() : (served?.version ?? null), servedSince, Date.now(), sync.served?.epoch ?? null, figures(), dataPlane.kind);
  const reporter = new LoadReporter({ fleet: store.fleet, instanceId, measure: localLoad, logger });
  reporter.start();
  const fleetReports = store.fleet;
  registerFleetMetrics(registry, {
    storeHealth: () => store.health(),
    fleet: async () => {
      const others = fleetReports ? await fleetReports.readFleetLoad(FLEET_LOAD_STALE_MS).catch(() => undefined) : undefined;
      return fleetViewOf({ instanceId, report: localLoad() }, others, undefined);
    },
  });
  // Progressive rollouts: every gateway runs a driver; only the holder of the store's rollout
  // lease acts (on the file store, this one gateway).
  let driver: RolloutDriver | undefined;
  const rolloutMetrics = registerRolloutMetrics(registry, {
    runs: () =>
      (served?.document.services ?? []).flatMap((service) =>
        service.rolloutRun ? [{ service: service.name, status: service.rolloutRun.status, step: service.rolloutRun.step, steps: service.rolloutRun.plan.steps.length }] : [],
      ),
    live: () => driver?.live() ?? [],
    isDriver: () => driver?.isLeader ?? false,
  });
  driver = new RolloutDriver({
    store,
    instanceId,
    logger,
    // The fleet's figures from the load reports (a gateway that stopped reporting is left out,
    // and named); on a store that serves one gateway, this gateway's own.
    sample: fleetReports ? () => fleetReports.readFleetSample(FLEET_LOAD_STALE_MS) : async () => localFleetSample(instanceId, figures(), Date.now()),
    applyWritten: (written) => applyWritten(sync, dataPlane, written),
    events: rolloutMetrics,
    hasActiveRun: () => (served?.document.services ?? []).some((service) => isActive(service.rolloutRun)),
  });
  driver.start();
  const rolloutLive = async (service: string): Promise<LiveRollout | undefined> => {
    const own = driver?.live().find((live) => live.service === service);
    if (own || !store.leases) return own;
    const text = await store.leases.getLive(`rollout:${service}`).catch(() => undefined);
    return text ? (JSON.parse(text) as LiveRollout) : undefined;
  };
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
          applyWritten: (written) => applyWritten(sync, dataPlane, written),
          rolloutLive,
          // Counted where the sample is: in this process, or in every worker (summed by the primary).
          impact: async (request) => (dataPlane.impact ? dataPlane.impact(request) : impactInProcess(identitySample, served, request)),
          ...(dataPlane.workers ? { workers: () => dataPlane.workers!() } : {}),
          logger,
        },
      });
    } catch (error) {
      await driver.close();
      sync.stop();
      keyFeed.close();
      await dataPlane.drain(0);
      await reporter.close();
      await openRestyKey?.close();
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
    figures,
    metrics,
    close(graceMs = settings.proxy.shutdownGraceMs) {
      closing ??= (async () => {
        await admin?.close();
        // First: another gateway takes the rollouts over at once instead of after the lease runs out.
        await driver?.close();
        sync.stop();
        keyFeed.close();
        // Still reported while draining: the fleet sees these requests until they finish.
        await dataPlane.drain(graceMs);
        identitySample.close();
        await reporter.close();
        await openRestyKey?.close();
        await store.close();
      })();
      return closing;
    },
  };
}
