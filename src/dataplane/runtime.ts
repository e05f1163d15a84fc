import type { Logger } from 'pino';
import type { Settings } from '../config/schema.js';
import type { MetricsJson } from '../observe/metrics.js';
import type { RequestObserver } from '../observe/request-observer.js';
import type { RoutingSnapshot } from '../rules/snapshot.js';

/**
 * The seam between graygate and the runtime that serves HTTP. Only `dataplane/node/` (node:http
 * + undici) and, later, `dataplane/bun/` (Bun.serve + fetch) implement it; everything above
 * (config, rules, identity, store, control plane) is runtime-neutral and drives a DataPlane
 * through this interface alone.
 */
export interface DataPlane {
  /** Starts listening; resolves with the bound address (port 0 picks a free port). */
  listen(): Promise<{ host: string; port: number }>;
  /**
   * Installs a new snapshot. Requests already routed finish on the one they started with.
   * `storeValue` gives the store key values (e.g. `Grayscale_Range`) it was compiled with, for a
   * data plane that compiles the same document again elsewhere (the `--workers` primary).
   */
  setSnapshot(snapshot: RoutingSnapshot, storeValue?: (key: string) => string | undefined): void;
  /**
   * Graceful stop: stop accepting, tell keep-alive clients `Connection: close`, close idle
   * sockets, let in-flight requests finish for up to `graceMs`, then destroy what remains.
   */
  drain(graceMs: number): Promise<void>;
  /** Open client connections and requests in flight, for drain reporting and tests. */
  stats(): DataPlaneStats;
  /**
   * Metrics recorded by the processes behind this data plane, when they are not this one (the
   * `--workers` primary asks each worker): one prom-client JSON registry per process, for the
   * admin API to sum with its own. Absent when requests are recorded in this process.
   */
  collectMetrics?(): Promise<MetricsJson[]>;
}

export interface DataPlaneStats {
  /** Client connections open to this data plane. */
  readonly openConnections: number;
  /** Client requests not yet answered. */
  readonly inFlightRequests: number;
  /**
   * Per upstream name (every upstream of the snapshot in force, and any older one still busy):
   * requests in flight to it and connections open to its servers. This is what tells an operator
   * that stable has drained after `full`.
   */
  readonly upstreams: Readonly<Record<string, UpstreamLoad>>;
}

export interface UpstreamLoad {
  readonly inFlightRequests: number;
  readonly openConnections: number;
}

export interface DataPlaneOptions {
  readonly settings: Settings;
  readonly logger: Logger;
  /** Told of every request once it has closed, and of upstream failures (metrics, access log). */
  readonly observer?: RequestObserver;
}

export type CreateDataPlane = (options: DataPlaneOptions) => DataPlane;
