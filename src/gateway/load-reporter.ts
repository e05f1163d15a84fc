import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { DataPlaneStats } from '../dataplane/runtime.js';
import { rateLimited, type Logger } from '../observe/log.js';
import type { GatewayFigures } from '../rollout/analysis/types.js';
import type { FleetReports, LoadReport } from '../store/store.js';

/** How often the load is looked at; it is published when it changed or anything is in flight. */
export const LOAD_REPORT_EVERY_MS = 250;
/** A report is written at least this often, so a quiet gateway still counts as alive. */
export const LOAD_REPORT_AT_LEAST_EVERY_MS = 1_000;
/**
 * Reports older than this (by the store's clock) are left out of the fleet's sum: a gateway that
 * stopped without deleting its report (killed) drops out after it. Three missed reports.
 */
export const FLEET_LOAD_STALE_MS = 3_000;
/** How long closing waits to delete this gateway's report. */
const CLOSE_WAIT_MS = 500;

/** A name for this gateway process that no other process of the fleet has: host, pid, a random suffix. */
export function newInstanceId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

export interface LoadReporterOptions {
  /** Where the reports go; undefined for a store that serves one gateway (nothing is published). */
  readonly fleet: FleetReports | undefined;
  readonly instanceId: string;
  /** This gateway's own figures now (with --workers: summed over the workers). */
  readonly measure: () => LoadReport;
  readonly logger: Logger;
}

/**
 * Publishes this gateway's load to the store (a store shared by a fleet: `store.fleet`) so any gateway's
 * drain report can sum the fleet. On a timer, never on the request path; a failure to publish is
 * logged at a bounded rate and changes nothing else (routing never depends on it).
 */
export class LoadReporter {
  private readonly logFault: ReturnType<typeof rateLimited>;
  private timer: NodeJS.Timeout | undefined;
  private publishing: Promise<void> | undefined;
  private lastText = '';
  private lastAt = 0;
  private isClosed = false;
  /** Failures in a row, and no attempt before `retryAt`: a store that refuses (down, or a
   * read-only replica, where each refusal makes the client reconnect) is not hammered. */
  private failures = 0;
  private retryAt = 0;

  constructor(private readonly options: LoadReporterOptions) {
    this.logFault = rateLimited(options.logger);
  }

  start(): void {
    if (this.options.fleet === undefined || this.timer !== undefined) return;
    this.tick();
    this.timer = setInterval(() => this.tick(), LOAD_REPORT_EVERY_MS);
    this.timer.unref();
  }

  private tick(): void {
    if (this.isClosed || this.publishing !== undefined) return;
    if (Date.now() < this.retryAt) return;
    const report = this.options.measure();
    // servedForMs always changes: compare what an operator would see change.
    // The figures change with every request: their request total stands for them.
    const text = JSON.stringify([report.servedVersion, report.servedEpoch, report.inFlightRequests, report.openConnections, report.upstreams, figuresTotal(report.figures)]);
    const now = Date.now();
    if (text === this.lastText && report.inFlightRequests === 0 && now - this.lastAt < LOAD_REPORT_AT_LEAST_EVERY_MS) return;
    this.publishing = this.options.fleet!.reportLoad(this.options.instanceId, report).then(
      () => {
        this.lastText = text;
        this.lastAt = now;
        this.failures = 0;
      },
      (error: unknown) => {
        this.failures++;
        this.retryAt = Date.now() + Math.min(LOAD_REPORT_EVERY_MS * 2 ** this.failures, 5_000);
        this.logFault('load-report', 'warn', { err: (error as Error)?.message ?? String(error) }, 'could not publish this gateway\'s load to the store; the fleet\'s drain report leaves it out until it can');
      },
    );
    void this.publishing.finally(() => {
      this.publishing = undefined;
    });
  }

  /**
   * Stops publishing and deletes this gateway's report. Bounded (CLOSE_WAIT_MS): with the store
   * unreachable, shutdown does not wait on it; the report left behind goes stale in 3 s.
   */
  async close(): Promise<void> {
    this.isClosed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    const fleet = this.options.fleet;
    if (fleet === undefined) return;
    const remove = (async () => {
      await this.publishing;
      await fleet.removeLoad(this.options.instanceId);
    })().catch((error: unknown) => this.options.logger.debug({ err: (error as Error)?.message }, 'could not delete this gateway\'s load report; it goes stale'));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([remove, new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)))]);
    clearTimeout(timer);
  }
}

/** The report of `stats` for a gateway serving `servedVersion` (of `servedEpoch`) since `servedSince` (Date.now()). */
export function loadReportOf(stats: DataPlaneStats, servedVersion: number | null, servedSince: number, now = Date.now(), servedEpoch: string | null = null, figures?: GatewayFigures): LoadReport {
  return {
    ...(figures === undefined ? {} : { figures }),
    servedVersion,
    servedEpoch,
    servedForMs: servedVersion === null ? 0 : Math.max(0, now - servedSince),
    inFlightRequests: stats.inFlightRequests,
    openConnections: stats.openConnections,
    upstreams: stats.upstreams,
  };
}

/** Requests counted in `figures` (every service and version), to notice that they changed. */
function figuresTotal(figures: GatewayFigures | undefined): number {
  let total = 0;
  for (const service of Object.values(figures?.services ?? {})) total += service.stable.requests + service.candidate.requests + service.candidate.failures;
  return total;
}
