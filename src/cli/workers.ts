import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { RoutingDocument, Settings } from '../config/schema.js';
import type { CreateDataPlane, DataPlane, DataPlaneStats } from '../dataplane/runtime.js';
import { runtimeName } from '../dataplane/select.js';
import type { IdentityContext } from '../identity/source.js';
import { createAccessLog } from '../observe/access-log.js';
import { createLogger, type Logger } from '../observe/log.js';
import { Registry, registerIdentityMetrics, RequestMetrics, type MetricsJson } from '../observe/metrics.js';
import { combineObservers } from '../observe/request-observer.js';
import { compileRouting, storeKeysOf } from '../rules/compile.js';
import type { RoutingSnapshot } from '../rules/snapshot.js';
import type { Store } from '../store/store.js';

/**
 * `--workers N`: one primary process and N workers (node:cluster; the primary accepts and hands
 * connections round-robin). The primary holds the one store subscription (ConfigSync and the store
 * keys, as a single process does) and sends every document it applied, with the key values it was
 * compiled with, to every worker, which compiles it and swaps its snapshot. Token lookups on a
 * cache miss are asked of the primary's store; each worker keeps its own identity cache.
 * Each worker records its requests in a registry of its own; the primary's admin API asks every
 * worker for it (`gg:metrics`) and sums them with prom-client's AggregatorRegistry.
 */

/** What `--workers` (or GRAYGATE_WORKERS) asks for: a count, or one per core when absent. */
export function workerCount(option: string | undefined): number | string {
  const text = option ?? process.env.GRAYGATE_WORKERS;
  if (text === undefined || text === '' || text === 'auto') return availableParallelism();
  const count = Number(text);
  if (!Number.isInteger(count) || count < 1 || count > 256) return `--workers: expected a whole number from 1 to 256 or "auto", got ${JSON.stringify(text)}`;
  return count;
}

export function isWorkerProcess(): boolean {
  return cluster.isWorker;
}

// ---- messages ------------------------------------------------------------------------------

interface RoutingMessage {
  readonly type: 'gg:routing';
  readonly version: number;
  readonly document: RoutingDocument;
  readonly values: [string, string | undefined][];
}
interface StartMessage {
  readonly type: 'gg:start';
  readonly settings: Settings;
  readonly routing: RoutingMessage;
}
type ToWorker =
  | StartMessage
  | RoutingMessage
  | { readonly type: 'gg:drain'; readonly graceMs: number }
  | { readonly type: 'gg:metrics'; readonly id: number }
  | { readonly type: 'gg:key'; readonly id: number; readonly value?: string; readonly error?: string };
type ToPrimary =
  | { readonly type: 'gg:ready' }
  | { readonly type: 'gg:listening'; readonly host: string; readonly port: number }
  | { readonly type: 'gg:stats'; readonly stats: DataPlaneStats; readonly draining?: boolean }
  | { readonly type: 'gg:readKey'; readonly id: number; readonly key: string; readonly deadlineMs: number }
  | { readonly type: 'gg:start-failed'; readonly message: string }
  | { readonly type: 'gg:metrics'; readonly id: number; readonly metrics: MetricsJson };

function isMessage(value: unknown): value is { type: string } {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' && (value as { type: string }).type.startsWith('gg:');
}

// ---- primary -------------------------------------------------------------------------------

const STATS_EVERY_MS = 100;
/** How long a scrape waits for a worker's metrics; one that does not answer (busy dying) is left out. */
const METRICS_WAIT_MS = 2_000;
/** A worker that dies sooner than this after it started counts as a crash loop: back off. */
const QUICK_CRASH_MS = 2_000;
const MAX_RESTART_DELAY_MS = 5_000;

interface Slot {
  worker: Worker;
  stats: DataPlaneStats;
  startedAt: number;
  listening: boolean;
  onDrainStats?: ((stats: DataPlaneStats) => void) | undefined;
}

/**
 * The primary's side of the DataPlane seam: `listen` forks the workers and resolves once every one
 * listens; `setSnapshot` broadcasts; `stats` sums what the workers last reported; `drain` drains
 * them all. startGateway drives it exactly like a single process's data plane.
 */
export class ClusterDataPlane implements DataPlane {
  private readonly slots = new Map<number, Slot>();
  private routing: RoutingMessage | undefined;
  private store: Store | undefined;
  private readonly pendingKeys: { worker: Worker; id: number; key: string; deadlineMs: number }[] = [];
  private draining = false;
  private drainPromise: Promise<void> | undefined;
  private quickCrashes = 0;
  private nextMetricsId = 0;
  private readonly metricsWaiters = new Map<number, (metrics: MetricsJson) => void>();

  constructor(
    private readonly count: number,
    private settings: Settings,
    private readonly logger: Logger,
  ) {
    // Structured clone keeps what JSON would lose in a compiled document's input (undefined, Maps).
    cluster.setupPrimary({ serialization: 'advanced' });
  }

  /** The store the gateway opened: token lookups of the workers go through it. */
  attachStore(store: Store): void {
    this.store = store;
    for (const request of this.pendingKeys.splice(0)) this.readKey(request.worker, request.id, request.key, request.deadlineMs);
  }

  listen(): Promise<{ host: string; port: number }> {
    return new Promise((resolve, reject) => {
      let listening = 0;
      let address: { host: string; port: number } | undefined;
      const onReady = (slot: Slot, message: { host: string; port: number }) => {
        if (slot.listening) return;
        slot.listening = true;
        if (address === undefined) {
          address = { host: message.host, port: message.port };
          // Under Bun each worker binds its own socket (reusePort): with port 0 every later worker
          // (and every restarted one) must take the port the first one got, or it gets one of its
          // own. node:cluster shares one socket held by the primary, keyed by the address asked
          // for, so there the setting must stay as it was.
          if (runtimeName() === 'bun') this.settings = { ...this.settings, listen: { ...this.settings.listen, port: message.port } };
          for (let i = 1; i < this.count; i++) this.fork(onReady, onFailed);
        }
        if (++listening === this.count) resolve(address);
      };
      const onFailed = (message: string) => {
        // Nothing may outlive a failed start: the workers keep the primary's event loop alive.
        this.draining = true;
        for (const slot of this.slots.values()) if (!slot.worker.isDead()) slot.worker.process.kill('SIGKILL');
        reject(new Error(`a worker could not start: ${message}`));
      };
      this.fork(onReady, onFailed);
    });
  }

  setSnapshot(snapshot: RoutingSnapshot, storeValue?: (key: string) => string | undefined): void {
    const values: [string, string | undefined][] = storeKeysOf(snapshot.document).map((key) => [key, storeValue?.(key)]);
    this.routing = { type: 'gg:routing', version: snapshot.version, document: snapshot.document, values };
    for (const slot of this.slots.values()) this.send(slot.worker, this.routing);
  }

  stats(): DataPlaneStats {
    let openConnections = 0;
    let inFlightRequests = 0;
    const upstreams: Record<string, { inFlightRequests: number; openConnections: number }> = {};
    for (const slot of this.slots.values()) {
      openConnections += slot.stats.openConnections;
      inFlightRequests += slot.stats.inFlightRequests;
      for (const [name, load] of Object.entries(slot.stats.upstreams ?? {})) {
        const sum = (upstreams[name] ??= { inFlightRequests: 0, openConnections: 0 });
        sum.inFlightRequests += load.inFlightRequests;
        sum.openConnections += load.openConnections;
      }
    }
    return { openConnections, inFlightRequests, upstreams };
  }

  /**
   * Every listening worker's registry as prom-client JSON, for the admin API to sum. Our own IPC
   * rather than AggregatorRegistry.clusterMetrics(): that one returns only text, leaves the
   * primary's metrics out, and fails the whole scrape when one worker (say, one just restarted)
   * does not answer within its fixed 5 s. A worker that exited took its counts with it: the
   * totals drop, which Prometheus's rate() reads as a counter reset.
   */
  collectMetrics(): Promise<MetricsJson[]> {
    const asks = [...this.slots.values()]
      .filter((slot) => slot.listening && slot.worker.isConnected())
      .map(
        (slot) =>
          new Promise<MetricsJson | undefined>((resolve) => {
            const id = ++this.nextMetricsId;
            const timer = setTimeout(() => {
              this.metricsWaiters.delete(id);
              this.logger.debug({ worker: slot.worker.id }, 'a worker did not send its metrics in time; left out of this scrape');
              resolve(undefined);
            }, METRICS_WAIT_MS);
            this.metricsWaiters.set(id, (metrics) => {
              clearTimeout(timer);
              this.metricsWaiters.delete(id);
              resolve(metrics);
            });
            this.send(slot.worker, { type: 'gg:metrics', id });
          }),
      );
    return Promise.all(asks).then((all) => all.filter((metrics): metrics is MetricsJson => metrics !== undefined));
  }

  drain(graceMs: number): Promise<void> {
    this.drainPromise ??= this.runDrain(graceMs);
    return this.drainPromise;
  }

  private async runDrain(graceMs: number): Promise<void> {
    this.draining = true;
    const slots = [...this.slots.values()];
    // Each worker answers the drain with its counts at that moment: the group's figures, exact.
    const counted = slots.map(
      (slot) =>
        new Promise<DataPlaneStats>((resolve) => {
          slot.onDrainStats = resolve;
          slot.worker.once('exit', () => resolve(slot.stats));
        }),
    );
    const exits = slots.map(
      (slot) =>
        new Promise<void>((resolve) => {
          if (slot.worker.isDead()) return resolve();
          slot.worker.once('exit', () => resolve());
          this.send(slot.worker, { type: 'gg:drain', graceMs });
        }),
    );
    void Promise.all(counted).then((all) => {
      const sum = all.reduce((a, b) => ({ openConnections: a.openConnections + b.openConnections, inFlightRequests: a.inFlightRequests + b.inFlightRequests }), { openConnections: 0, inFlightRequests: 0 });
      this.logger.info({ event: 'workers-draining', workers: slots.length, ...sum }, `${slots.length} workers draining: ${sum.inFlightRequests} request(s) in flight, ${sum.openConnections} connection(s) open`);
    });
    // Workers end their own in-flight requests at graceMs; this cap only guards a worker that hangs.
    let timer: NodeJS.Timeout | undefined;
    const cap = new Promise<'cap'>((resolve) => {
      timer = setTimeout(() => resolve('cap'), graceMs + 5_000);
    });
    const outcome = await Promise.race([Promise.all(exits).then(() => 'done' as const), cap]);
    clearTimeout(timer);
    if (outcome === 'cap') {
      for (const slot of this.slots.values()) if (!slot.worker.isDead()) slot.worker.process.kill('SIGKILL');
      this.logger.warn({ event: 'workers-killed' }, 'a worker did not finish draining in time; killed');
    }
  }

  private fork(onReady?: (slot: Slot, message: { host: string; port: number }) => void, onFailed?: (message: string) => void): void {
    const worker = cluster.fork();
    const slot: Slot = { worker, stats: { openConnections: 0, inFlightRequests: 0, upstreams: {} }, startedAt: Date.now(), listening: false };
    this.slots.set(worker.id, slot);

    worker.on('message', (message: unknown) => {
      if (!isMessage(message)) return;
      const m = message as ToPrimary;
      switch (m.type) {
        case 'gg:ready':
          // startGateway installs the first snapshot before it calls listen(), so routing is set.
          if (this.routing !== undefined) this.send(worker, { type: 'gg:start', settings: this.settings, routing: this.routing });
          break;
        case 'gg:listening':
          this.logger.debug({ event: 'worker-listening', worker: worker.id, pid: worker.process.pid }, `worker ${worker.id} listening`);
          onReady?.(slot, m);
          slot.listening = true;
          break;
        case 'gg:stats':
          slot.stats = m.stats;
          if (m.draining && slot.onDrainStats) {
            slot.onDrainStats(m.stats);
            slot.onDrainStats = undefined;
          }
          break;
        case 'gg:readKey':
          this.readKey(worker, m.id, m.key, m.deadlineMs);
          break;
        case 'gg:start-failed':
          onFailed?.(m.message);
          break;
        case 'gg:metrics':
          this.metricsWaiters.get(m.id)?.(m.metrics);
          break;
      }
    });
    worker.on('error', (error) => this.logger.debug({ err: error, worker: worker.id }, 'worker IPC error'));
    worker.on('exit', (code, signal) => {
      this.slots.delete(worker.id);
      if (this.draining) return;
      const quick = Date.now() - slot.startedAt < QUICK_CRASH_MS;
      this.quickCrashes = quick ? this.quickCrashes + 1 : 0;
      const delayMs = Math.min(MAX_RESTART_DELAY_MS, this.quickCrashes === 0 ? 0 : 100 * 2 ** (this.quickCrashes - 1));
      this.logger.warn(
        { event: 'worker-exited', worker: worker.id, pid: worker.process.pid, code, signal, restartInMs: delayMs },
        `worker ${worker.process.pid} exited (${signal ?? code}); starting a new one${delayMs > 0 ? ` in ${delayMs} ms` : ''}`,
      );
      if (!slot.listening && onFailed) {
        onFailed(`worker ${worker.process.pid} exited (${signal ?? code}) before it listened`);
        return;
      }
      const timer = setTimeout(() => {
        if (!this.draining) this.fork();
      }, delayMs);
      timer.unref();
    });
  }

  private readKey(worker: Worker, id: number, key: string, deadlineMs: number): void {
    const store = this.store;
    if (store === undefined) {
      this.pendingKeys.push({ worker, id, key, deadlineMs });
      return;
    }
    if (!store.keyReader) {
      this.send(worker, { type: 'gg:key', id, error: `the ${store.kind} store cannot look keys up` });
      return;
    }
    store.keyReader.readKey(key, deadlineMs).then(
      (value) => this.send(worker, value === undefined ? { type: 'gg:key', id } : { type: 'gg:key', id, value }),
      (error: unknown) => this.send(worker, { type: 'gg:key', id, error: (error as Error)?.message ?? String(error) }),
    );
  }

  private send(worker: Worker, message: ToWorker): void {
    if (worker.isConnected()) worker.send(message, (error: Error | null) => error && this.logger.debug({ err: error }, 'could not message a worker'));
  }
}

// ---- worker --------------------------------------------------------------------------------

/**
 * A worker's life: wait for the primary's settings and routing, compile, listen on the shared
 * address, swap snapshots as the primary sends them, drain when told. Signals are the primary's
 * business (Ctrl-C reaches the whole process group); a worker whose primary is gone exits.
 */
export function runWorker(createDataPlane: CreateDataPlane): Promise<number> {
  const ignore = () => undefined;
  process.on('SIGINT', ignore);
  process.on('SIGTERM', ignore);
  return new Promise((resolve) => {
    let dataPlane: DataPlane | undefined;
    let logger: Logger | undefined;
    let identityContext: IdentityContext | undefined;
    let registry: Registry | undefined;
    let statsTimer: NodeJS.Timeout | undefined;
    let lastStats = '';
    let nextKeyId = 0;
    const keyWaiters = new Map<number, { resolve: (value: string | undefined) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }>();
    const send = (message: ToPrimary) => {
      if (process.connected) process.send!(message);
    };
    const install = (routing: RoutingMessage) => {
      const values = new Map(routing.values);
      try {
        dataPlane!.setSnapshot(compileRouting(routing.document, routing.version, { storeValue: (key) => values.get(key), identityContext: identityContext! }));
      } catch (error) {
        // The primary compiled this document already; failing here would be a bug: keep serving the last one.
        logger!.error({ err: error, version: routing.version }, `worker ${process.pid}: could not compile routing version ${routing.version}; the last one stays`);
      }
    };
    const readKey = (key: string, deadlineMs: number) =>
      new Promise<string | undefined>((resolveKey, rejectKey) => {
        const id = ++nextKeyId;
        const timer = setTimeout(() => {
          keyWaiters.delete(id);
          rejectKey(new Error(`token lookup of ${key} timed out after ${deadlineMs} ms`));
        }, deadlineMs);
        keyWaiters.set(id, { resolve: resolveKey, reject: rejectKey, timer });
        send({ type: 'gg:readKey', id, key, deadlineMs });
      });
    const stop = (code: number) => {
      clearInterval(statsTimer);
      logger?.flush();
      resolve(code);
      // The IPC channel keeps the event loop alive; the primary waits for this exit.
      setImmediate(() => process.exit(code));
    };
    process.on('disconnect', () => {
      // The primary is gone (killed): finish what is in flight quickly and leave.
      if (dataPlane) void dataPlane.drain(1_000).then(() => stop(0), () => stop(1));
      else stop(0);
    });
    process.on('message', (message: unknown) => {
      if (!isMessage(message)) return;
      const m = message as ToWorker;
      switch (m.type) {
        case 'gg:start': {
          if (dataPlane) return;
          // Every line says which worker wrote it: with N workers one stdout carries N streams.
          logger = createLogger({ level: m.settings.log.level, format: m.settings.log.format }).child({ worker: process.pid });
          // The primary compiled this document against its store already, so a tokenLookup source
          // here means the store can look keys up; a worker asks the primary on a cache miss.
          identityContext = { readKey, logger };
          registry = new Registry();
          registerIdentityMetrics(registry, identityContext);
          const observer = combineObservers(new RequestMetrics(registry), createAccessLog(logger, m.settings.log.access));
          dataPlane = createDataPlane({ settings: m.settings, logger, observer });
          install(m.routing);
          dataPlane.listen().then(
            (address) => {
              send({ type: 'gg:listening', ...address });
              statsTimer = setInterval(() => {
                const stats = dataPlane!.stats();
                // Sent on change only; the per-upstream figures are part of what changes.
                const text = `${stats.openConnections}/${stats.inFlightRequests}/${JSON.stringify(stats.upstreams)}`;
                if (text === lastStats) return;
                lastStats = text;
                send({ type: 'gg:stats', stats });
              }, STATS_EVERY_MS);
              statsTimer.unref();
            },
            (error: unknown) => {
              send({ type: 'gg:start-failed', message: (error as Error)?.message ?? String(error) });
              stop(1);
            },
          );
          break;
        }
        case 'gg:routing':
          if (dataPlane) install(m);
          break;
        case 'gg:metrics': {
          const id = m.id;
          if (registry === undefined) {
            send({ type: 'gg:metrics', id, metrics: [] });
            break;
          }
          registry.getMetricsAsJSON().then(
            (metrics) => send({ type: 'gg:metrics', id, metrics }),
            (error: unknown) => {
              logger?.warn({ err: error }, 'could not collect this worker\'s metrics');
              send({ type: 'gg:metrics', id, metrics: [] });
            },
          );
          break;
        }
        case 'gg:key': {
          const waiter = keyWaiters.get(m.id);
          if (!waiter) return;
          keyWaiters.delete(m.id);
          clearTimeout(waiter.timer);
          if (m.error !== undefined) waiter.reject(new Error(m.error));
          else waiter.resolve(m.value);
          break;
        }
        case 'gg:drain':
          if (!dataPlane) return stop(0);
          send({ type: 'gg:stats', stats: dataPlane.stats(), draining: true });
          void dataPlane.drain(m.graceMs).then(
            () => {
              send({ type: 'gg:stats', stats: dataPlane!.stats() });
              stop(0);
            },
            (error: unknown) => {
              logger?.error({ err: error }, 'worker drain failed');
              stop(1);
            },
          );
          break;
      }
    });
    // Only now: a message sent before this process listened for messages would be lost.
    send({ type: 'gg:ready' });
  });
}
