import { LATENCY_BUCKET_COUNT, latencyBucket } from '../rollout/analysis/histogram.js';
import type { ServiceFigures, VersionFigures } from '../rollout/analysis/types.js';

/** Per-service figures of one process (or of a primary's workers summed), by service name. */
export type ServicesFigures = Readonly<Record<string, ServiceFigures>>;

/** One (service, version) cell: bumped in place on the request path, read on a timer. */
export class FiguresCell {
  requests = 0;
  errors = 0;
  failures = 0;
  readonly latency = new Float64Array(LATENCY_BUCKET_COUNT);

  /** One response of this version: no allocation (a bucket index computed, three increments). */
  record(status: number, durationMs: number): void {
    this.requests++;
    if (status >= 500 && status < 600) this.errors++;
    const bucket = latencyBucket(durationMs);
    this.latency[bucket] = this.latency[bucket]! + 1;
  }

  figures(): VersionFigures {
    const latency: Record<string, number> = {};
    for (let i = 0; i < this.latency.length; i++) if (this.latency[i]! > 0) latency[i] = this.latency[i]!;
    return { requests: this.requests, errors: this.errors, failures: this.failures, latency };
  }
}

/**
 * The per-service, per-version figures the rollout analysis reads (requests, 5xx, failures,
 * latency histogram), cumulative since the process started. Cells are made once per (service,
 * version) and kept by their callers (the request metrics' series), so recording is increments.
 */
export class VersionFiguresRecorder {
  private readonly cells = new Map<string, { stable: FiguresCell; candidate: FiguresCell }>();

  /** The cell of `service`'s `version` (made on first use). */
  cell(service: string, version: string): FiguresCell {
    let pair = this.cells.get(service);
    if (pair === undefined) {
      pair = { stable: new FiguresCell(), candidate: new FiguresCell() };
      this.cells.set(service, pair);
    }
    return version === 'candidate' ? pair.candidate : pair.stable;
  }

  /** Requests counted so far, every cell summed (cheap: says whether anything changed). */
  total(): number {
    let sum = 0;
    for (const pair of this.cells.values()) sum += pair.stable.requests + pair.candidate.requests + pair.candidate.failures;
    return sum;
  }

  /** Everything counted so far, as plain data (sparse histograms). */
  snapshot(): ServicesFigures {
    const services: Record<string, ServiceFigures> = {};
    for (const [service, pair] of this.cells) services[service] = { stable: pair.stable.figures(), candidate: pair.candidate.figures() };
    return services;
  }
}

/** `a + b` per service, version and bucket (the `--workers` primary's sum of its workers). */
export function addServicesFigures(a: ServicesFigures, b: ServicesFigures): ServicesFigures {
  const sum: Record<string, ServiceFigures> = { ...a };
  for (const [service, figures] of Object.entries(b)) {
    const other = sum[service];
    sum[service] = other === undefined ? figures : { stable: addVersion(other.stable, figures.stable), candidate: addVersion(other.candidate, figures.candidate) };
  }
  return sum;
}

function addVersion(a: VersionFigures, b: VersionFigures): VersionFigures {
  const latency: Record<string, number> = { ...a.latency };
  for (const key in b.latency) latency[key] = (latency[key] ?? 0) + b.latency[key]!;
  return { requests: a.requests + b.requests, errors: a.errors + b.errors, failures: a.failures + b.failures, latency };
}
