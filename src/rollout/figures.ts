import type { MetricsJson, MetricsSource } from '../observe/metrics.js';
import type { VersionFigures, WindowFigures } from './judge.js';

/**
 * Where the driver's figures come from: counts since the gateway(s) started, per version of a
 * service. The driver keeps the counts at the start of a step and judges the difference.
 */
export type FigureSource = (service: string) => Promise<WindowFigures>;

const empty = (bounds: readonly number[]): VersionFigures => ({ requests: 0, errors: 0, bucketBounds: bounds, bucketCounts: new Array<number>(bounds.length + 1).fill(0) });

/**
 * This gateway's figures (every worker's, summed), from its own request metrics:
 * `graygate_requests_total` (5xx = failed; upstream failures answer 502/504 and count there) and
 * `graygate_request_duration_seconds`.
 */
export function localFigures(metrics: MetricsSource): FigureSource {
  return async (service) => {
    const json: MetricsJson = await metrics.json();
    const requests = json.find((metric) => metric.name === 'graygate_requests_total');
    const duration = json.find((metric) => metric.name === 'graygate_request_duration_seconds');
    const bounds = [
      ...new Set(
        (duration?.values ?? [])
          .map((value) => value.labels.le)
          .filter((le): le is number | string => le !== undefined && le !== '+Inf')
          .map(Number),
      ),
    ].sort((a, b) => a - b);
    const figures: Record<'stable' | 'candidate', { requests: number; errors: number; cumulative: number[] }> = {
      stable: { requests: 0, errors: 0, cumulative: new Array<number>(bounds.length + 1).fill(0) },
      candidate: { requests: 0, errors: 0, cumulative: new Array<number>(bounds.length + 1).fill(0) },
    };
    for (const value of requests?.values ?? []) {
      if (value.labels.service !== service) continue;
      const version = value.labels.version === 'stable' ? 'stable' : value.labels.version === 'candidate' ? 'candidate' : undefined;
      if (version === undefined) continue;
      figures[version].requests += value.value;
      if (value.labels.status_class === '5xx') figures[version].errors += value.value;
    }
    for (const value of duration?.values ?? []) {
      if (value.labels.service !== service || (value as { metricName?: string }).metricName !== 'graygate_request_duration_seconds_bucket') continue;
      const version = value.labels.version === 'stable' ? 'stable' : value.labels.version === 'candidate' ? 'candidate' : undefined;
      if (version === undefined) continue;
      const le = value.labels.le;
      const at = le === '+Inf' ? bounds.length : bounds.indexOf(Number(le));
      if (at >= 0) figures[version].cumulative[at]! += value.value;
    }
    const toVersion = (f: { requests: number; errors: number; cumulative: number[] }): VersionFigures => {
      if (bounds.length === 0) return { ...empty(bounds), requests: f.requests, errors: f.errors };
      const counts = f.cumulative.map((n, i) => n - (i === 0 ? 0 : f.cumulative[i - 1]!));
      return { requests: f.requests, errors: f.errors, bucketBounds: bounds, bucketCounts: counts };
    };
    return { stable: toVersion(figures.stable), candidate: toVersion(figures.candidate), scope: 'this gateway' };
  };
}

/** `now − start`, per count, never below 0 (a gateway that left the fleet takes its counts with it). */
export function windowOf(start: WindowFigures, now: WindowFigures): WindowFigures {
  const minus = (a: VersionFigures, b: VersionFigures): VersionFigures => ({
    requests: Math.max(0, a.requests - b.requests),
    errors: Math.max(0, a.errors - b.errors),
    bucketBounds: a.bucketBounds,
    bucketCounts: a.bucketCounts.map((n, i) => (a.bucketBounds.length === b.bucketBounds.length ? Math.max(0, n - (b.bucketCounts[i] ?? 0)) : n)),
  });
  return { stable: minus(now.stable, start.stable), candidate: minus(now.candidate, start.candidate), scope: now.scope };
}
