import cluster, { type Worker } from 'node:cluster';
import type { Settings } from '../../config/schema.js';
import type { Logger } from '../../observe/log.js';
import { sumImpacts, type ImpactCounts, type ProposedRouting } from '../../observe/impact.js';
import type { MetricsJson } from '../../observe/metrics.js';
import type { RoutingSnapshot } from '../../rules/snapshot.js';
import type { DataPlane, DataPlaneStats, ListenAddresses, ServedReport, WorkerServing } from '../runtime.js';
import { addServicesFigures, type ServicesFigures } from '../../observe/version-figures.js';
import { newTicketKeys } from '../node/ticket-keys.js';
import { runtimeName } from '../select.js';
import { isMessage, type RoutingMessage, type ToPrimary, type ToWorker } from './messages.js';

/** How long a scrape waits for a worker's metrics; one that does not answer (busy dying) is left out. */
const METRICS_WAIT_MS = 2_000;
/** A worker that dies sooner than this after it started counts as a crash loop: back off. */
const QUICK_CRASH_MS = 2_000;
const MAX_RESTART_DELAY_MS = 5_000;
/**
 * A worker that has not confirmed the last snapshot within this long is behind: it is sent the
 * snapshot again (once per this interval), logged, counted in metrics and /readyz. Installing a
 * snapshot is one compile of a few milliseconds; a second means a worker stopped or starved.
 */
export const WORKER_CONFIRM_MS = 1_000;
/** How often the primary looks for a worker that is behind. */
const LAG_CHECK_EVERY_MS = 250;

interface Slot {
  worker: Worker;
  stats: DataPlaneStats;
  startedAt: number;
  listening: boolean;
  /** Set once the worker got settings and routing (gg:start): only then does it serve anything. */
  started: boolean;
  /** The snapshot it confirmed serving (`seq` of a RoutingMessage), 0 before the first. */
  servedSeq: number;
  servedVersion: number | null;
  /** Since when it has not served the newest snapshot: when one was sent to it while it was current. */
  sentAt: number;
  /** When the newest snapshot was last sent to it (a broadcast, or a resend to a worker behind). */
  resentAt: number;
  /** Logged as behind, not yet caught up. */
  flaggedBehind: boolean;
  onDrainStats?: ((stats: DataPlaneStats) => void) | undefined;
  /** Its last per-version figures (cumulative since it started). */
  figures: ServicesFigures;
}

/**
 * The primary's side of the DataPlane seam under `--workers N` (node:cluster: the primary accepts
 * and hands connections round-robin; under Bun each worker binds with reusePort). `listen` forks
 * the workers and resolves once every one listens; `setSnapshot` hands the snapshot to every
 * worker, which compiles it again and confirms; `settled` waits for those confirmations; `stats`
 * sums what the workers last reported; `drain` drains them all. startGateway drives it exactly
 * like a single process's data plane. Each worker records its requests in a registry of its own;
 * `collectMetrics` asks every worker for it, for the admin API to sum.
 */
export class ClusterDataPlane implements DataPlane {
  private readonly slots = new Map<number, Slot>();
  private routing: RoutingMessage | undefined;
  private seq = 0;
  private draining = false;
  private retiredFigures: ServicesFigures = {};
  private drainPromise: Promise<void> | undefined;
  private quickCrashes = 0;
  private nextMetricsId = 0;
  private readonly metricsWaiters = new Map<number, (metrics: MetricsJson) => void>();
  private readonly impactWaiters = new Map<number, (answer: { impact?: ImpactCounts; error?: string }) => void>();
  /** Callers of `settled`, told again after every confirmation. */
  private readonly confirmWaiters = new Set<() => void>();
  private lagTimer: NodeJS.Timeout | undefined;
  /** One set of TLS session ticket keys for every worker, restarted ones included. */
  private readonly tlsTicketKeys = newTicketKeys();

  constructor(
    private readonly count: number,
    private settings: Settings,
    private readonly logger: Logger,
  ) {
    // Structured clone keeps what JSON would lose in a compiled document's input (undefined, Maps).
    cluster.setupPrimary({ serialization: 'advanced' });
  }

  listen(): Promise<ListenAddresses> {
    this.lagTimer ??= setInterval(() => this.checkLag(), LAG_CHECK_EVERY_MS);
    this.lagTimer.unref();
    return new Promise((resolve, reject) => {
      let listening = 0;
      let address: ListenAddresses | undefined;
      const onReady = (slot: Slot, message: ListenAddresses) => {
        if (slot.listening) return;
        slot.listening = true;
        if (address === undefined) {
          address = { host: message.host, port: message.port, ...(message.tls ? { tls: message.tls } : {}) };
          // Under Bun each worker binds its own socket (reusePort): with port 0 every later worker
          // (and every restarted one) must take the port the first one got, or it gets one of its
          // own. node:cluster shares one socket held by the primary, keyed by the address asked
          // for, so there the setting must stay as it was.
          if (runtimeName() === 'bun') this.settings = { ...this.settings, listen: { ...this.settings.listen!, port: message.port } };
          for (let i = 1; i < this.count; i++) this.fork(onReady, onFailed);
        }
        if (++listening === this.count) resolve(address);
      };
      const onFailed = (message: string) => {
        // Nothing may outlive a failed start: the workers keep the primary's event loop alive.
        this.draining = true;
        clearInterval(this.lagTimer);
        for (const slot of this.slots.values()) if (!slot.worker.isDead()) slot.worker.process.kill('SIGKILL');
        reject(new Error(`a worker could not start: ${message}`));
      };
      this.fork(onReady, onFailed);
    });
  }

  setSnapshot(snapshot: RoutingSnapshot): void {
    const values: [string, string | undefined][] = [...(snapshot.storeValues ?? new Map<string, string | undefined>())];
    const previous = this.seq;
    this.routing = { type: 'gg:routing', seq: ++this.seq, version: snapshot.version, document: snapshot.document, values };
    const now = Date.now();
    for (const slot of this.slots.values()) {
      if (!slot.started) continue; // it gets the newest routing with its start
      // A worker already behind stays behind since then; a current one starts its clock now.
      if (slot.servedSeq >= previous) slot.sentAt = now;
      slot.resentAt = now;
      this.send(slot.worker, this.routing);
    }
  }

  settled(withinMs: number): Promise<ServedReport> {
    const target = this.seq;
    const pending = () => [...this.slots.values()].filter((slot) => this.counts(slot) && slot.servedSeq < target);
    if (pending().length === 0) return Promise.resolve({ everywhere: true, behind: [] });
    return new Promise((resolve) => {
      const check = () => {
        if (pending().length > 0) return;
        finish();
      };
      const finish = () => {
        clearTimeout(timer);
        this.confirmWaiters.delete(check);
        const behind = pending().map((slot) => this.describe(slot));
        resolve({ everywhere: behind.length === 0, behind });
      };
      const timer = setTimeout(finish, withinMs);
      this.confirmWaiters.add(check);
    });
  }

  workers(): WorkerServing[] {
    // A worker still starting is not reported behind: it serves nothing until it listens, and
    // installs the newest routing before it does.
    return [...this.slots.values()].filter((slot) => this.counts(slot) && slot.listening).map((slot) => this.describe(slot));
  }

  /** Every worker's figures summed, plus those of workers that exited. */
  figures(): ServicesFigures {
    let sum = this.retiredFigures;
    for (const slot of this.slots.values()) sum = addServicesFigures(sum, slot.figures);
    return sum;
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

  /**
   * The impact of a routing change over every listening worker's identity sample, summed. Each
   * worker answers counts only (its sample never crosses the channel). A worker that does not
   * answer in time is left out, and the answer says how many processes were counted.
   */
  impact(request: { from?: ProposedRouting; to: ProposedRouting }): Promise<ImpactCounts> {
    const asks = [...this.slots.values()]
      .filter((slot) => slot.listening && slot.worker.isConnected())
      .map(
        (slot) =>
          new Promise<ImpactCounts | undefined>((resolve, reject) => {
            const id = ++this.nextMetricsId;
            const timer = setTimeout(() => {
              this.impactWaiters.delete(id);
              this.logger.debug({ worker: slot.worker.id }, 'a worker did not count the impact in time; left out');
              resolve(undefined);
            }, METRICS_WAIT_MS);
            this.impactWaiters.set(id, (answer) => {
              clearTimeout(timer);
              this.impactWaiters.delete(id);
              if (answer.error !== undefined) reject(new Error(`a worker could not count the impact: ${answer.error}`));
              else resolve(answer.impact);
            });
            this.send(slot.worker, { type: 'gg:impact', id, ...(request.from ? { from: request.from } : {}), to: request.to });
          }),
      );
    const sample = this.settings.identitySample;
    return Promise.all(asks).then((all) => sumImpacts(all.filter((part): part is ImpactCounts => part !== undefined), sample.windowMs, sample.enabled));
  }

  drain(graceMs: number): Promise<void> {
    this.drainPromise ??= this.runDrain(graceMs);
    return this.drainPromise;
  }

  /** A worker that serves (or is about to): a write's acknowledgement waits for it. */
  private counts(slot: Slot): boolean {
    return slot.started && !slot.worker.isDead() && slot.worker.isConnected();
  }

  private describe(slot: Slot): WorkerServing {
    const current = slot.servedSeq >= this.seq;
    return { pid: slot.worker.process.pid ?? 0, version: slot.servedVersion, current, behindMs: current ? 0 : Date.now() - slot.sentAt };
  }

  /** Resends the newest snapshot to a worker that has not confirmed it in time, and says so once. */
  private checkLag(): void {
    const routing = this.routing;
    if (this.draining || routing === undefined) return;
    const now = Date.now();
    for (const slot of this.slots.values()) {
      if (!this.counts(slot) || !slot.listening) continue;
      if (slot.servedSeq >= routing.seq) continue;
      if (now - slot.sentAt < WORKER_CONFIRM_MS || now - slot.resentAt < WORKER_CONFIRM_MS) continue;
      const pid = slot.worker.process.pid;
      const fields = { event: 'worker-behind', worker: slot.worker.id, pid, servedVersion: slot.servedVersion, version: routing.version, behindMs: now - slot.sentAt };
      if (!slot.flaggedBehind) {
        slot.flaggedBehind = true;
        this.logger.warn(fields, `worker ${pid} has not confirmed routing version ${routing.version} within ${WORKER_CONFIRM_MS} ms (it serves ${slot.servedVersion ?? 'nothing yet'}); sending it again`);
      } else {
        this.logger.debug(fields, `worker ${pid} is still behind; sending routing version ${routing.version} again`);
      }
      slot.resentAt = now;
      this.send(slot.worker, routing);
    }
  }

  private confirmed(slot: Slot, seq: number, version: number): void {
    // Messages on one channel arrive in order, but a resend may be confirmed after a newer one.
    if (seq < slot.servedSeq) return;
    slot.servedSeq = seq;
    slot.servedVersion = version;
    if (slot.flaggedBehind && seq >= this.seq) {
      slot.flaggedBehind = false;
      this.logger.info({ event: 'worker-caught-up', worker: slot.worker.id, pid: slot.worker.process.pid, version }, `worker ${slot.worker.process.pid} serves routing version ${version} again, like the others`);
    }
    for (const check of [...this.confirmWaiters]) check();
  }

  private async runDrain(graceMs: number): Promise<void> {
    this.draining = true;
    clearInterval(this.lagTimer);
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
    const slot: Slot = {
      worker,
      stats: { openConnections: 0, inFlightRequests: 0, upstreams: {} },
      figures: {},
      startedAt: Date.now(),
      listening: false,
      started: false,
      servedSeq: 0,
      servedVersion: null,
      sentAt: Date.now(),
      resentAt: Date.now(),
      flaggedBehind: false,
    };
    this.slots.set(worker.id, slot);

    worker.on('message', (message: unknown) => {
      if (!isMessage(message)) return;
      const m = message as ToPrimary;
      switch (m.type) {
        case 'gg:ready':
          // startGateway installs the first snapshot before it calls listen(), so routing is set.
          if (this.routing !== undefined) {
            slot.started = true;
            slot.sentAt = slot.resentAt = Date.now();
            this.send(worker, { type: 'gg:start', settings: this.settings, routing: this.routing, ...(this.settings.tls !== undefined ? { tlsTicketKeys: this.tlsTicketKeys } : {}) });
          }
          break;
        case 'gg:listening':
          this.logger.debug({ event: 'worker-listening', worker: worker.id, pid: worker.process.pid }, `worker ${worker.id} listening`);
          onReady?.(slot, m);
          slot.listening = true;
          break;
        case 'gg:served':
          this.confirmed(slot, m.seq, m.version);
          break;
        case 'gg:stats':
          slot.stats = m.stats;
          if (m.draining && slot.onDrainStats) {
            slot.onDrainStats(m.stats);
            slot.onDrainStats = undefined;
          }
          break;
        case 'gg:figures':
          slot.figures = m.figures;
          break;
        case 'gg:start-failed':
          onFailed?.(m.message);
          break;
        case 'gg:metrics':
          this.metricsWaiters.get(m.id)?.(m.metrics);
          break;
        case 'gg:impact':
          this.impactWaiters.get(m.id)?.(m);
          break;
      }
    });
    worker.on('error', (error) => this.logger.debug({ err: error, worker: worker.id }, 'worker IPC error'));
    worker.on('exit', (code, signal) => {
      this.slots.delete(worker.id);
      // What it counted stays in the sum: the figures are cumulative, and a sum that went back
      // would read as a restart of the whole gateway.
      this.retiredFigures = addServicesFigures(this.retiredFigures, slot.figures);
      // A worker gone is no longer awaited by a write's acknowledgement.
      for (const check of [...this.confirmWaiters]) check();
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

  private send(worker: Worker, message: ToWorker): void {
    if (worker.isConnected()) worker.send(message, (error: Error | null) => error && this.logger.debug({ err: error }, 'could not message a worker'));
  }
}
