/**
 * Live figures from `GET /v1/metrics` (prom-client's `getMetricsAsJSON()`): requests/s, error
 * rate and p99 per version of one service, and what went wrong on each version's upstreams
 * (upstream errors, ejections) and the candidate's requests that stable served (fallback). Counters and histograms are cumulative, so every
 * figure is a difference between two polls: requests/s between the last two, error rate and
 * p99 over a sliding window (WINDOW_MS), which a single poll's handful of requests would make
 * jumpy. Pure (no DOM, no clock of its own), so it is tested under Node with a real registry.
 */

/** One metric as prom-client's getMetricsAsJSON() gives it. */
export interface MetricJson {
  readonly name: string;
  readonly type: string;
  readonly values: readonly { readonly labels: Readonly<Record<string, string | number>>; readonly value: number; readonly metricName?: string }[];
}

export const REQUESTS_TOTAL = 'graygate_requests_total';
export const REQUEST_DURATION = 'graygate_request_duration_seconds';
export const UPSTREAM_ERRORS = 'graygate_upstream_errors_total';
export const EJECTIONS = 'graygate_upstream_ejections_total';
export const FALLBACK = 'graygate_fallback_total';
/** Error rate and p99 are over this much time: long enough to hold some requests, short enough to follow a change. */
export const WINDOW_MS = 10_000;
export const VERSIONS = ['stable', 'candidate'] as const;
export type Version = (typeof VERSIONS)[number];

/** Cumulative counts of one version of one service, as read at one poll. */
interface Cumulative {
  requests: number;
  errors: number;
  /** Histogram buckets: upper bound (seconds, Infinity for +Inf) → cumulative count. */
  buckets: Map<number, number>;
}

/** Cumulative failure counts of one upstream, as read at one poll. */
interface UpstreamCumulative {
  errors: number;
  ejections: number;
}

/** What one poll read: per service, per version; per upstream; fallbacks per service. */
export interface Sample {
  readonly atMs: number;
  readonly services: ReadonlyMap<string, ReadonlyMap<Version, Cumulative>>;
  readonly upstreams: ReadonlyMap<string, UpstreamCumulative>;
  readonly fallback: ReadonlyMap<string, number>;
}

/** The upstreams each version of a service is served by (several candidates with A/B/n). */
export type VersionUpstreams = Readonly<Record<Version, readonly string[]>>;

export interface VersionFigures {
  /** Requests per second between the last two polls. */
  readonly rps: number;
  /** Share of 5xx answers over the window, 0..1; null without requests. */
  readonly errorRate: number | null;
  /** 99th percentile latency over the window, in seconds; null without requests. */
  readonly p99: number | null;
  /** Failed attempts at the version's upstreams over the window; null when its upstreams are not known. */
  readonly upstreamErrors: number | null;
  /** Servers of the version's upstreams ejected over the window; null when its upstreams are not known. */
  readonly ejections: number | null;
  /** Candidate: requests the rules sent to it that stable served, over the window. Stable: null. */
  readonly fallback: number | null;
}

export type Figures = Readonly<Record<Version, VersionFigures>>;

const isVersion = (value: unknown): value is Version => value === 'stable' || value === 'candidate';

function cumulativeOf(services: Map<string, Map<Version, Cumulative>>, service: string, version: Version): Cumulative {
  let versions = services.get(service);
  if (!versions) services.set(service, (versions = new Map()));
  let entry = versions.get(version);
  if (!entry) versions.set(version, (entry = { requests: 0, errors: 0, buckets: new Map() }));
  return entry;
}

function upstreamOf(upstreams: Map<string, UpstreamCumulative>, name: string): UpstreamCumulative {
  let entry = upstreams.get(name);
  if (!entry) upstreams.set(name, (entry = { errors: 0, ejections: 0 }));
  return entry;
}

/** Reads one poll's metrics; metrics it does not know are ignored, labels other than these summed over. */
export function sampleOf(metrics: readonly MetricJson[], atMs: number): Sample {
  const services = new Map<string, Map<Version, Cumulative>>();
  const upstreams = new Map<string, UpstreamCumulative>();
  const fallback = new Map<string, number>();
  for (const metric of metrics) {
    if (metric.name === UPSTREAM_ERRORS || metric.name === EJECTIONS) {
      for (const { labels, value } of metric.values) {
        if (typeof labels.upstream !== 'string') continue;
        const entry = upstreamOf(upstreams, labels.upstream);
        if (metric.name === EJECTIONS) entry.ejections += value;
        else entry.errors += value;
      }
      continue;
    }
    if (metric.name === FALLBACK) {
      for (const { labels, value } of metric.values) if (typeof labels.service === 'string') fallback.set(labels.service, (fallback.get(labels.service) ?? 0) + value);
      continue;
    }
    if (metric.name === REQUESTS_TOTAL) {
      for (const { labels, value } of metric.values) {
        if (!isVersion(labels.version) || typeof labels.service !== 'string') continue;
        const entry = cumulativeOf(services, labels.service, labels.version);
        entry.requests += value;
        if (String(labels.status_class) === '5xx') entry.errors += value;
      }
    } else if (metric.name === REQUEST_DURATION) {
      for (const { labels, value, metricName } of metric.values) {
        if (metricName !== `${REQUEST_DURATION}_bucket` || !isVersion(labels.version) || typeof labels.service !== 'string') continue;
        const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
        if (Number.isNaN(le)) continue;
        const { buckets } = cumulativeOf(services, labels.service, labels.version);
        buckets.set(le, (buckets.get(le) ?? 0) + value);
      }
    }
  }
  return { atMs, services, upstreams, fallback };
}

/** An increase of a cumulative value; a drop means the gateway restarted, so the new value is all new. */
const increase = (now: number, before: number) => (now >= before ? now - before : now);

/**
 * The q-quantile of the requests counted between two cumulative histograms, interpolated linearly
 * inside the bucket it falls in (as Prometheus' histogram_quantile does); the highest finite bound
 * when it falls in +Inf. Null without requests.
 */
export function quantileBetween(q: number, now: ReadonlyMap<number, number>, before: ReadonlyMap<number, number> | undefined): number | null {
  const bounds = [...now.keys()].sort((a, b) => a - b);
  const counts = bounds.map((le) => increase(now.get(le) ?? 0, before?.get(le) ?? 0));
  // Cumulative buckets never decrease; a reset between polls can make the differences do so.
  for (let i = 1; i < counts.length; i++) counts[i] = Math.max(counts[i]!, counts[i - 1]!);
  const total = counts[counts.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i]! >= rank) {
      const upper = bounds[i]!;
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      if (upper === Infinity) return lower;
      const below = i === 0 ? 0 : counts[i - 1]!;
      const inBucket = counts[i]! - below;
      return inBucket <= 0 ? upper : lower + (upper - lower) * ((rank - below) / inBucket);
    }
  }
  return bounds.length > 1 ? bounds[bounds.length - 2]! : null;
}

/** Keeps the polls of the last window and turns them into figures for one service. */
export class LiveFigures {
  private samples: Sample[] = [];

  /** Adds a poll; keeps one sample at or beyond the window's start, so the window is always whole. */
  add(sample: Sample): void {
    this.samples.push(sample);
    const start = sample.atMs - WINDOW_MS;
    while (this.samples.length > 2 && this.samples[1]!.atMs <= start) this.samples.shift();
  }

  /** Forgets every poll (e.g. after the token changed or the gateway restarted). */
  reset(): void {
    this.samples = [];
  }

  /**
   * The figures of `service` at the last poll; null before two polls. `upstreams` names the
   * upstreams of each version, for their errors and ejections (null figures without it).
   */
  figures(service: string, upstreams?: VersionUpstreams): Figures | null {
    const last = this.samples[this.samples.length - 1];
    const previous = this.samples[this.samples.length - 2];
    const oldest = this.samples[0];
    if (!last || !previous || !oldest) return null;
    const seconds = (last.atMs - previous.atMs) / 1000;
    const get = (sample: Sample, version: Version) => sample.services.get(service)?.get(version);
    const upstreamIncrease = (version: Version, field: keyof UpstreamCumulative): number | null => {
      if (!upstreams) return null;
      let total = 0;
      for (const name of upstreams[version]) total += increase(last.upstreams.get(name)?.[field] ?? 0, oldest.upstreams.get(name)?.[field] ?? 0);
      return total;
    };
    const failures = (version: Version) => ({
      upstreamErrors: upstreamIncrease(version, 'errors'),
      ejections: upstreamIncrease(version, 'ejections'),
      fallback: version === 'candidate' ? increase(last.fallback.get(service) ?? 0, oldest.fallback.get(service) ?? 0) : null,
    });
    const one = (version: Version): VersionFigures => {
      const now = get(last, version);
      if (!now) return { rps: 0, errorRate: null, p99: null, ...failures(version) };
      const before = get(previous, version);
      const windowStart = get(oldest, version);
      const requests = increase(now.requests, before?.requests ?? 0);
      const windowRequests = increase(now.requests, windowStart?.requests ?? 0);
      const windowErrors = increase(now.errors, windowStart?.errors ?? 0);
      return {
        rps: seconds > 0 ? requests / seconds : 0,
        errorRate: windowRequests > 0 ? Math.min(1, windowErrors / windowRequests) : null,
        p99: quantileBetween(0.99, now.buckets, windowStart?.buckets),
        ...failures(version),
      };
    };
    return { stable: one('stable'), candidate: one('candidate') };
  }
}
