import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { DataPlaneStats } from '../dataplane/runtime.js';
import type { ErrorCode } from '../errors.js';
import type { ConfigSyncStats } from '../gateway/config-sync.js';
import type { IdentityContext } from '../identity/source.js';
import { tokenLookupStats } from '../identity/token-lookup.js';
import type { Decision } from '../rules/snapshot.js';
import { servedVersion, type ExchangeRecord, type RequestObserver } from './request-observer.js';

/**
 * graygate's Prometheus metrics (prom-client). Names and labels are a contract (the dashboard in
 * grafana/ and the admin UI read them); every label value comes from the config (service and
 * upstream names) or a fixed set, never from a request, so the series are bounded.
 *
 * Two halves, because with `--workers` they live in different processes:
 * - RequestMetrics: what the data plane records per request, in every process that serves;
 * - gateway metrics (config version and reloads, upstream load): read at scrape time from the
 *   process that holds the store subscription and the admin API.
 * The admin API's MetricsSource sums the workers' registries with its own (prom-client's
 * AggregatorRegistry.aggregate), so /metrics is the whole gateway either way.
 */

/** prom-client's JSON form of a registry, as `getMetricsAsJSON()` returns it and workers send it. */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** Seconds: 1 ms (a local upstream's keep-alive hit) to 10 s (past every sane default timeout). */
export const DURATION_BUCKETS_SECONDS: readonly number[] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Label value for requests that matched no service (and so have no version or upstream). */
export const NO_SERVICE = '';

const STATUS_CLASSES = ['1xx', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

type UpstreamErrorKind = 'connect' | 'timeout' | 'reset' | 'other';

/** The `kind` of an upstream failure: what an operator does about it differs per kind. */
export function upstreamErrorKind(code: ErrorCode, isConnectFailure: boolean): UpstreamErrorKind {
  if (code === 'GG_UPSTREAM_TIMEOUT') return 'timeout';
  if (isConnectFailure || code === 'GG_UPSTREAM_CONNECT') return 'connect';
  if (code === 'GG_UPSTREAM_RESET') return 'reset';
  return 'other';
}

/** The label children of one (service, served version, upstream), resolved once and kept. */
class Series {
  /** By `Math.floor(status / 100)`; filled on first use of each class. */
  private readonly byClass: (Counter.Internal | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];
  readonly duration: Histogram.Internal<string>;

  constructor(
    private readonly requests: Counter<string>,
    duration: Histogram<string>,
    private readonly service: string,
    private readonly version: string,
    private readonly upstream: string,
  ) {
    this.duration = duration.labels(service, version);
  }

  count(status: number): Counter.Internal {
    let index = (status / 100) | 0;
    if (index < 1 || index > 5) index = 5;
    let child = this.byClass[index];
    if (child === undefined) {
      child = this.requests.labels(this.service, this.version, STATUS_CLASSES[index]!, this.upstream);
      this.byClass[index] = child;
    }
    return child;
  }
}

/** Per decision: the series of the upstream it names, and of any other that served it (fail-safe). */
interface DecisionSeries {
  readonly upstream: string;
  readonly series: Series;
  others: Map<string, Series> | undefined;
}

/**
 * The data plane's per-request metrics. Label children are cached per compiled Decision (frozen,
 * one per rule and split bucket), so recording a request is one WeakMap lookup, one counter
 * increment and one histogram observation, with no label object built.
 */
export class RequestMetrics implements RequestObserver {
  readonly requests: Counter<string>;
  readonly duration: Histogram<string>;
  readonly upstreamErrors: Counter<string>;
  readonly ejections: Counter<string>;
  private readonly byDecision = new WeakMap<Decision, DecisionSeries>();
  private readonly unmatched: Series;
  private readonly errorChildren = new Map<string, Counter.Internal[]>();
  private readonly ejectionChildren = new Map<string, Counter.Internal>();

  constructor(readonly registry: Registry) {
    this.requests = new Counter({
      name: 'graygate_requests_total',
      help: 'Requests answered, by service, the version that served them (stable | candidate), status class and upstream. Unmatched requests have service="".',
      labelNames: ['service', 'version', 'status_class', 'upstream'],
      registers: [registry],
    });
    this.duration = new Histogram({
      name: 'graygate_request_duration_seconds',
      help: 'Time from the request to the end of the response (Bun: to the response head), by service and served version.',
      labelNames: ['service', 'version'],
      buckets: [...DURATION_BUCKETS_SECONDS],
      registers: [registry],
    });
    this.upstreamErrors = new Counter({
      name: 'graygate_upstream_errors_total',
      help: 'Failed attempts at an upstream (retried ones included), by kind: connect | timeout | reset | other.',
      labelNames: ['upstream', 'kind'],
      registers: [registry],
    });
    this.ejections = new Counter({
      name: 'graygate_upstream_ejections_total',
      help: 'Servers ejected by passive health (connect failures in a row), by upstream.',
      labelNames: ['upstream'],
      registers: [registry],
    });
    this.unmatched = new Series(this.requests, this.duration, NO_SERVICE, '', '');
  }

  requestClosed(record: ExchangeRecord): void {
    const series = this.seriesOf(record.decision, record.upstreamName);
    series.count(record.status).inc();
    series.duration.observe(record.durationMs / 1000);
  }

  upstreamFailed(upstream: string, code: ErrorCode, isConnectFailure: boolean): void {
    let children = this.errorChildren.get(upstream);
    if (children === undefined) {
      children = (['connect', 'timeout', 'reset', 'other'] as const).map((kind) => this.upstreamErrors.labels(upstream, kind));
      this.errorChildren.set(upstream, children);
    }
    const kind = upstreamErrorKind(code, isConnectFailure);
    children[kind === 'connect' ? 0 : kind === 'timeout' ? 1 : kind === 'reset' ? 2 : 3]!.inc();
  }

  serverEjected(upstream: string): void {
    let child = this.ejectionChildren.get(upstream);
    if (child === undefined) {
      child = this.ejections.labels(upstream);
      this.ejectionChildren.set(upstream, child);
    }
    child.inc();
  }

  private seriesOf(decision: Decision | undefined, upstreamName: string | undefined): Series {
    if (decision === undefined) return this.unmatched;
    let entry = this.byDecision.get(decision);
    if (entry === undefined) {
      entry = { upstream: decision.upstream, series: this.newSeries(decision, decision.upstream), others: undefined };
      this.byDecision.set(decision, entry);
    }
    if (upstreamName === undefined || upstreamName === entry.upstream) return entry.series;
    // Served by another upstream than decided (fail-safe to stable): rare, so a Map is fine.
    entry.others ??= new Map();
    let series = entry.others.get(upstreamName);
    if (series === undefined) {
      series = this.newSeries(decision, upstreamName);
      entry.others.set(upstreamName, series);
    }
    return series;
  }

  private newSeries(decision: Decision, upstreamName: string): Series {
    return new Series(this.requests, this.duration, decision.service, servedVersion(decision, upstreamName), upstreamName);
  }
}

/**
 * `graygate_identity_lookups_total{source, result}`, read at scrape time from the token lookup
 * counts of `context` (they are plain integers bumped on the hot path; nothing more is done per
 * request). result: `hit` (answered from the cache, a known or a known-unknown token), `miss` (the
 * store was asked and answered), `error` (the store failed, or too many lookups were in flight),
 * `timeout` (no answer within the deadline).
 */
export function registerIdentityMetrics(registry: Registry, context: IdentityContext): void {
  new Counter({
    name: 'graygate_identity_lookups_total',
    help: 'Identity lookups by source and result: hit (cache) | miss (asked the store) | error | timeout.',
    labelNames: ['source', 'result'],
    registers: [registry],
    collect() {
      const stats = tokenLookupStats(context);
      // The counts are monotonic: resetting and setting them again is the same counter.
      this.reset();
      this.labels('tokenLookup', 'hit').inc(stats.hits + stats.negativeHits);
      this.labels('tokenLookup', 'miss').inc(stats.answered);
      this.labels('tokenLookup', 'error').inc(stats.failures - stats.timeouts + stats.shed);
      this.labels('tokenLookup', 'timeout').inc(stats.timeouts);
    },
  });
}

/** What the gateway-level metrics read at scrape time. */
export interface GatewayMetricsInputs {
  readonly syncStats: () => ConfigSyncStats;
  readonly dataPlaneStats: () => DataPlaneStats;
}

/**
 * Metrics of the process that holds the store subscription (the single process, or the
 * `--workers` primary): the routing version in force and reloads, and per-upstream load as the
 * data plane reports it (`DataPlaneStats.upstreams`, summed over workers by the primary).
 */
export function registerGatewayMetrics(registry: Registry, inputs: GatewayMetricsInputs): void {
  new Gauge({
    name: 'graygate_config_version',
    help: 'Routing document version in force (0 before the first).',
    registers: [registry],
    // Only the primary has it, but should a worker ever report one, summing versions is meaningless.
    aggregator: 'max',
    collect() {
      this.set(inputs.syncStats().version ?? 0);
    },
  });
  new Counter({
    name: 'graygate_config_reloads_total',
    help: 'Routing documents applied (the first one included) and refused (invalid; the last good one stayed).',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      const stats = inputs.syncStats();
      this.reset();
      this.labels('applied').inc(stats.applied);
      this.labels('refused').inc(stats.refused);
    },
  });
  const upstreamGauge = (name: string, help: string, field: 'openConnections' | 'inFlightRequests') =>
    new Gauge({
      name,
      help,
      labelNames: ['upstream'],
      registers: [registry],
      collect() {
        // Upstreams come and go with the config: only those the data plane reports now are shown.
        this.reset();
        const upstreams = inputs.dataPlaneStats().upstreams;
        for (const upstream of Object.keys(upstreams)) this.labels(upstream).set(upstreams[upstream]![field]);
      },
    });
  upstreamGauge('graygate_upstream_open_connections', 'Connections open to the servers of each upstream.', 'openConnections');
  upstreamGauge('graygate_upstream_in_flight_requests', 'Requests in flight to each upstream.', 'inFlightRequests');
}

/** What the admin API serves at /metrics and /v1/metrics. */
export interface MetricsSource {
  readonly contentType: string;
  /** Prometheus text of the whole gateway (every worker summed, plus this process). */
  text(): Promise<string>;
  /** The same, as prom-client's `getMetricsAsJSON()` of the aggregated registry. */
  json(): Promise<MetricsJson>;
}

/**
 * The admin API's view: `registry` alone for one process; with `workers` (the `--workers`
 * primary), the workers' registries and this one summed by prom-client's AggregatorRegistry,
 * each metric by its `aggregator` (sum unless it says otherwise).
 */
export function metricsSource(registry: Registry, workers?: () => Promise<MetricsJson[]>): MetricsSource {
  const aggregated = async (): Promise<Registry> => {
    const own = await registry.getMetricsAsJSON();
    const others = await workers!();
    return AggregatorRegistry.aggregate([own, ...others]);
  };
  return {
    contentType: registry.contentType,
    text: async () => (workers === undefined ? registry.metrics() : (await aggregated()).metrics()),
    json: async () => (workers === undefined ? registry.getMetricsAsJSON() : (await aggregated()).getMetricsAsJSON()),
  };
}

export { Registry };
