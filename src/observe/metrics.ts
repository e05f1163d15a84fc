import { AggregatorRegistry, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { DataPlaneStats } from '../dataplane/runtime.js';
import type { ErrorCode } from '../errors.js';
import type { ConfigSyncStats } from '../gateway/config-sync.js';
import type { IdentityContext } from '../identity/source.js';
import { jwtStats } from '../identity/jwt.js';
import { oversizedIdStats } from '../identity/source.js';
import { tokenLookupStats } from '../identity/token-lookup.js';
import type { Decision } from '../rules/snapshot.js';
import { VersionFiguresRecorder, type FiguresCell } from './version-figures.js';
import { FALLBACK_REASONS, servedVersion, type ExchangeRecord, type FallbackReason, type RequestObserver } from './request-observer.js';

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
 *
 * Over 400 lines on purpose: every series graygate exports is declared here, so the names and
 * labels dashboards depend on can be reviewed in one place.
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

type Labels = Readonly<Record<string, string>>;

/**
 * A counter or histogram whose numbers graygate keeps itself, in one cell per label set, and hands
 * to prom-client only when scraped: prom-client's own `labels(...).inc()` builds a label hash
 * string and result objects on every call (measured: ~6 µs and ~300 B per request for a counter
 * and a histogram), too much for the hot path. These objects are registered like any metric
 * (registry.registerMetric) and `get()` answers in prom-client's own JSON form, so the text
 * exposition, getMetricsAsJSON and AggregatorRegistry treat them exactly like prom-client's.
 */
abstract class HeldMetric<Cell extends { readonly labels: Labels }> {
  readonly aggregator = 'sum' as const;
  protected readonly cells: Cell[] = [];
  private readonly byKey = new Map<string, Cell>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }

  /** The one cell of a label set (made on first use; callers keep it, so this runs once per caller). */
  protected cellOf(labels: Labels, create: () => Cell): Cell {
    let key = '';
    for (const name of this.labelNames) key += `${labels[name]}\u0000`;
    let cell = this.byKey.get(key);
    if (cell === undefined) {
      cell = create();
      this.byKey.set(key, cell);
      this.cells.push(cell);
    }
    return cell;
  }
}

/** What `get()` answers: prom-client's JSON form of one metric. */
interface MetricJson {
  readonly name: string;
  readonly help: string;
  readonly type: string;
  readonly aggregator: string;
  readonly values: readonly { labels: Record<string, string | number>; value: number; metricName?: string }[];
}

/** One label set of a HeldCounter: bump `value` directly. */
interface CounterCell {
  readonly labels: Labels;
  value: number;
}

class HeldCounter extends HeldMetric<CounterCell> {
  readonly type = 'counter';

  cell(labels: Labels): CounterCell {
    return this.cellOf(labels, () => ({ labels, value: 0 }));
  }

  async get(): Promise<MetricJson> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.cells.map((cell) => ({ labels: { ...cell.labels }, value: cell.value })) };
  }

  reset(): void {
    for (const cell of this.cells) cell.value = 0;
  }
}

/** One label set of a HeldHistogram. */
class HistogramCell {
  /** Per bucket (the last one is +Inf), not cumulative; made cumulative when scraped. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Labels,
    private readonly bounds: Float64Array,
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

class HeldHistogram extends HeldMetric<HistogramCell> {
  readonly type = 'histogram';
  private readonly bounds: Float64Array;

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[], registry: Registry) {
    super(name, help, labelNames, registry);
    this.bounds = Float64Array.from(buckets);
  }

  cell(labels: Labels): HistogramCell {
    return this.cellOf(labels, () => new HistogramCell(labels, this.bounds));
  }

  async get(): Promise<MetricJson> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const cell of this.cells) {
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += cell.counts[i]!;
        values.push({ labels: { ...cell.labels, le: this.bounds[i]! }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels: { ...cell.labels, le: '+Inf' }, value: cell.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { ...cell.labels }, value: cell.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...cell.labels }, value: cell.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    for (const cell of this.cells) {
      cell.counts.fill(0);
      cell.sum = 0;
      cell.count = 0;
    }
  }
}

/** The cells of one (service, served version, upstream), resolved once and kept. */
class Series {
  /** By `Math.floor(status / 100)`; filled on first use of each class. */
  private readonly byClass: (CounterCell | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];

  constructor(
    private readonly requests: HeldCounter,
    readonly duration: HistogramCell,
    private readonly service: string,
    private readonly version: string,
    private readonly upstream: string,
    /** The rollout analysis's figures of (service, served version); undefined for unmatched requests. */
    readonly figures: FiguresCell | undefined,
  ) {}

  count(status: number): CounterCell {
    let index = (status / 100) | 0;
    if (index < 1 || index > 5) index = 5;
    let cell = this.byClass[index];
    if (cell === undefined) {
      cell = this.requests.cell({ service: this.service, version: this.version, status_class: STATUS_CLASSES[index]!, upstream: this.upstream });
      this.byClass[index] = cell;
    }
    return cell;
  }
}

/** Per decision: the series of the upstream it names, and of any other that served it (fail-safe). */
interface DecisionSeries {
  readonly upstream: string;
  readonly series: Series;
  others: Map<string, Series> | undefined;
  /** Fallback cells by FALLBACK_REASONS index (stable is one upstream per decision's snapshot). */
  fallback: (CounterCell | undefined)[] | undefined;
  /** The candidate's figures cell of the decision's service (a fallback is a candidate failure). */
  candidateFigures: FiguresCell | undefined;
}

/**
 * The data plane's per-request metrics. Cells are cached per compiled Decision (frozen, one per
 * rule and split bucket), so recording a request is one WeakMap lookup, one increment and one
 * histogram observation (a scan of 13 bounds), and allocates nothing.
 */
export class RequestMetrics implements RequestObserver {
  private readonly requests: HeldCounter;
  private readonly duration: HeldHistogram;
  private readonly fallbacks: HeldCounter;
  private readonly upstreamErrors: Counter<string>;
  private readonly ejections: Counter<string>;
  private readonly byDecision = new WeakMap<Decision, DecisionSeries>();
  private readonly unmatched: Series;
  /** Per-service, per-version figures for the rollout analysis (requests, 5xx, failures, latency). */
  readonly figures = new VersionFiguresRecorder();

  constructor(readonly registry: Registry) {
    this.requests = new HeldCounter(
      'graygate_requests_total',
      'Requests answered, by service, the version that served them (stable | candidate), status class and upstream. Unmatched requests have service="".',
      ['service', 'version', 'status_class', 'upstream'],
      registry,
    );
    this.duration = new HeldHistogram(
      'graygate_request_duration_seconds',
      'Time from the request to the end of the response (Bun: to the response head), by service and served version.',
      ['service', 'version'],
      DURATION_BUCKETS_SECONDS,
      registry,
    );
    this.fallbacks = new HeldCounter(
      'graygate_fallback_total',
      'Requests (and upgrades) the rules sent to a candidate that went to stable instead, by service, from (candidate upstream), to (stable upstream) and reason: no_server | unhealthy (every server ejected) | connect_failure.',
      ['service', 'from', 'to', 'reason'],
      registry,
    );
    // Failures and ejections are rare: prom-client's own counters are cheap enough for them.
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
    this.unmatched = new Series(this.requests, this.durationCell(NO_SERVICE, ''), NO_SERVICE, '', '', undefined);
  }

  requestClosed(record: ExchangeRecord): void {
    const series = this.seriesOf(record.decision, record.upstreamName);
    series.count(record.status).value++;
    series.duration.observe(record.durationMs / 1000);
    series.figures?.record(record.status, record.durationMs);
  }

  upstreamFailed(upstream: string, code: ErrorCode, isConnectFailure: boolean): void {
    this.upstreamErrors.inc({ upstream, kind: upstreamErrorKind(code, isConnectFailure) });
  }

  serverEjected(upstream: string): void {
    this.ejections.inc({ upstream });
  }

  fellBack(decision: Decision, to: string, reason: FallbackReason): void {
    // A candidate that fails over does so for every request while it is down: held cells, one
    // WeakMap lookup and an increment, like the request counts.
    const entry = this.entryOf(decision);
    (entry.candidateFigures ??= this.figures.cell(decision.service, 'candidate')).failures++;
    const index = FALLBACK_REASONS.indexOf(reason);
    const cells = (entry.fallback ??= []);
    let cell = cells[index];
    if (cell === undefined || cell.labels.to !== to) {
      cell = this.fallbacks.cell({ service: decision.service, from: decision.upstream, to, reason });
      cells[index] = cell;
    }
    cell.value++;
  }

  private entryOf(decision: Decision): DecisionSeries {
    let entry = this.byDecision.get(decision);
    if (entry === undefined) {
      entry = { upstream: decision.upstream, series: this.newSeries(decision, decision.upstream), others: undefined, fallback: undefined, candidateFigures: undefined };
      this.byDecision.set(decision, entry);
    }
    return entry;
  }

  private seriesOf(decision: Decision | undefined, upstreamName: string | undefined): Series {
    if (decision === undefined) return this.unmatched;
    const entry = this.entryOf(decision);
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
    const version = servedVersion(decision, upstreamName);
    return new Series(this.requests, this.durationCell(decision.service, version), decision.service, version, upstreamName, this.figures.cell(decision.service, version));
  }

  private durationCell(service: string, version: string): HistogramCell {
    return this.duration.cell({ service, version });
  }
}

/**
 * `graygate_identity_lookups_total{source, result}`, read at scrape time from the token lookup
 * counts of `context` (they are plain integers bumped on the hot path; nothing more is done per
 * request). result: `hit` (answered from the cache, a known or a known-unknown token), `miss` (the
 * store was asked and answered), `error` (the store failed, or too many lookups were in flight),
 * `timeout` (no answer within the deadline). For `source="jwt"`: `hit` (cache), `miss` (a signature
 * was checked), `invalid` (no identity from the token: refused before the check or by it). For
 * `source="header" | "cookie" | "query"`: `invalid`, an id longer than the limit was ignored.
 */
export function registerIdentityMetrics(registry: Registry, context: IdentityContext): void {
  new Counter({
    name: 'graygate_identity_lookups_total',
    help: 'Identity lookups by source and result: hit (cache) | miss (asked the store, or checked a JWT signature) | error | timeout | invalid (JWT refused, or an id over the length limit ignored).',
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
      const jwt = jwtStats(context);
      this.labels('jwt', 'hit').inc(jwt.hits);
      this.labels('jwt', 'miss').inc(jwt.verified + jwt.rejected);
      this.labels('jwt', 'invalid').inc(jwt.rejected + jwt.refused);
      for (const [source, count] of Object.entries(oversizedIdStats(context))) this.labels(source, 'invalid').inc(count);
    },
  });
}

/**
 * `graygate_proxy_protocol_connections_total{outcome}`: connections to a listener that reads the
 * PROXY protocol, by what became of them (`outcomes`, all shown from zero). Returns the function
 * that counts one; it is called once per connection, never per request.
 */
export function registerProxyProtocolMetrics(registry: Registry, outcomes: readonly string[]): (outcome: string) => void {
  const counter = new Counter({
    name: 'graygate_proxy_protocol_connections_total',
    help:
      'Connections to the PROXY protocol listener by outcome: proxied (a trusted peer named the client) | local (a trusted peer\'s header said to use the connection\'s address) | direct (another peer, no header) | ' +
      'refused: untrusted (a header from a peer not in proxyProtocol.trustedFrom) | missing (a trusted peer sent no header) | malformed | timeout.',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const cells = new Map(outcomes.map((outcome) => [outcome, counter.labels(outcome)] as const));
  // Shown from zero, so a dashboard sees "no refusals" rather than no series.
  for (const cell of cells.values()) cell.inc(0);
  return (outcome) => (cells.get(outcome) ?? counter.labels(outcome)).inc();
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

/** What the rollout metrics read at scrape time. */
export interface RolloutMetricsInputs {
  /** Every service's rollout run as the served routing document has it. */
  readonly runs: () => readonly { readonly service: string; readonly status: string; readonly step: number; readonly steps: number }[];
  /** The live evidence of the rollouts this gateway drives (empty on the others). */
  readonly live: () => readonly {
    readonly service: string;
    readonly evidence: readonly { readonly metric: string; readonly candidate: number | null; readonly stable: number | null; readonly bound: number | null }[];
  }[];
  /** Whether this gateway drives rollouts (holds the lease). */
  readonly isDriver: () => boolean;
}

/**
 * `graygate_rollout_*`: each service's rollout step and status (from the routing document, so
 * every gateway shows them), the live evidence against each bound and the moves made (on the
 * gateway that drives, the one whose figures decide). Returns the counter of moves.
 */
export function registerRolloutMetrics(registry: Registry, inputs: RolloutMetricsInputs): { moved(service: string, event: string): void } {
  new Gauge({
    name: 'graygate_rollout_step',
    help: 'The step in force of each service\'s rollout, 1-based (0: no rollout run recorded).',
    labelNames: ['service'],
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.reset();
      for (const run of inputs.runs()) this.labels(run.service).set(run.step + 1);
    },
  });
  new Gauge({
    name: 'graygate_rollout_steps',
    help: 'Steps in the plan of each service\'s rollout run.',
    labelNames: ['service'],
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.reset();
      for (const run of inputs.runs()) this.labels(run.service).set(run.steps);
    },
  });
  new Gauge({
    name: 'graygate_rollout_status',
    help: 'Status of each service\'s rollout run: 1 on the status it is in (running | paused | done | rolled-back | aborted).',
    labelNames: ['service', 'status'],
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.reset();
      for (const run of inputs.runs()) for (const status of ['running', 'paused', 'done', 'rolled-back', 'aborted']) this.labels(run.service, status).set(run.status === status ? 1 : 0);
    },
  });
  new Gauge({
    name: 'graygate_rollout_evidence',
    help: 'Live evidence of a running rollout step on the gateway that drives it: the value per version (candidate | stable) and the bound (version="bound"), by check (samples, errors, latency-p50, latency-p99, or an external check\'s name).',
    labelNames: ['service', 'metric', 'version'],
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.reset();
      for (const live of inputs.live()) {
        for (const evidence of live.evidence) {
          if (evidence.candidate !== null) this.labels(live.service, evidence.metric, 'candidate').set(evidence.candidate);
          if (evidence.stable !== null) this.labels(live.service, evidence.metric, 'stable').set(evidence.stable);
          if (evidence.bound !== null) this.labels(live.service, evidence.metric, 'bound').set(evidence.bound);
        }
      }
    },
  });
  new Gauge({
    name: 'graygate_rollout_driver',
    help: '1 when this gateway drives the fleet\'s rollouts (holds the rollout lease), else 0.',
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.set(inputs.isDriver() ? 1 : 0);
    },
  });
  const moves = new Counter({
    name: 'graygate_rollout_moves_total',
    help: 'Rollout moves this gateway wrote as the driver, by service and event (step | passed | pause | rollback | done).',
    labelNames: ['service', 'event'],
    registers: [registry],
  });
  return { moved: (service, event) => moves.inc({ service, event }) };
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
