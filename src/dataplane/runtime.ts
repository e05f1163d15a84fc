import type { Logger } from 'pino';
import type { Settings } from '../config/schema.js';
import type { MetricsJson, Registry } from '../observe/metrics.js';
import type { ServicesFigures } from '../observe/version-figures.js';
import type { IdentitySample } from '../observe/identity-sample.js';
import type { ImpactCounts, ProposedRouting } from '../observe/impact.js';
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
  listen(): Promise<ListenAddresses>;
  /** Installs a new snapshot. Requests already routed finish on the one they started with. */
  setSnapshot(snapshot: RoutingSnapshot): void;
  /**
   * For a data plane whose requests are served by other processes (`--workers`): resolves once
   * every one of them serves the last snapshot set, or after `withinMs` naming those that do not
   * yet. Absent: `setSnapshot` serves the snapshot before it returns.
   */
  settled?(withinMs: number): Promise<ServedReport>;
  /** For the same data plane: the routing version each worker serves, and whether it is behind. */
  workers?(): readonly WorkerServing[];
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
  /** With a TLS listener: certificate reloads applied and refused since start (this process). */
  tlsReloads?(): { readonly applied: number; readonly refused: number };
  /**
   * Per-service, per-version figures of the processes behind this data plane, when they are not
   * this one (the `--workers` primary sums its workers', and keeps what exited workers counted so
   * the sum never goes back); undefined when they cannot be read now (the load report then
   * carries none, and the rollout analysis leaves this gateway out, by name). Absent when requests
   * are recorded in this process.
   */
  figures?(): ServicesFigures | undefined;
  /**
   * For a data plane whose requests are served by other processes (`--workers`): the impact of a
   * routing change counted over each one's identity sample, summed. Absent when this process
   * serves the requests (and keeps the sample) itself.
   */
  impact?(request: { from?: ProposedRouting; to: ProposedRouting }): Promise<ImpactCounts>;
  /** Set when the traffic is served outside graygate (`openresty`), for the fleet view. */
  readonly kind?: string;
  /**
   * For a data plane outside graygate: the routing version it confirms serving (null before its
   * first), which the fleet view reports instead of the version graygate compiled.
   */
  servedVersion?(): number | null;
}

/**
 * Where a data plane listens: `host`/`port` is the plain HTTP listener, or the TLS one when there
 * is no plain listener (`listen: off`); `tls` is the TLS listener when there is one.
 */
export interface ListenAddresses {
  readonly host: string;
  readonly port: number;
  readonly tls?: { readonly host: string; readonly port: number };
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

/** One worker process as the `--workers` primary sees it. */
export interface WorkerServing {
  readonly pid: number;
  /** The routing version it confirmed serving (null before its first). */
  readonly version: number | null;
  /** Has it confirmed the last snapshot the primary sent? */
  readonly current: boolean;
  /** Since when it has not confirmed the last snapshot, in ms (0 when current). */
  readonly behindMs: number;
}

export interface ServedReport {
  /** True when every worker serves the last snapshot (always true for a single process). */
  readonly everywhere: boolean;
  /** The workers that did not confirm it in time. */
  readonly behind: readonly WorkerServing[];
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
  /** This process's metrics registry, for series a data plane records itself (per connection, not per request). */
  readonly registry?: Registry;
  /** Where the callers the rules decide for are sampled (for the impact of a change); none by default. */
  readonly identitySample?: IdentitySample;
}

export type CreateDataPlane = (options: DataPlaneOptions) => DataPlane;
