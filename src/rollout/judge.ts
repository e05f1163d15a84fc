import type { RolloutEvidence } from '../config/schema.js';
import type { AnalysisParams } from './analysis/params.js';

/**
 * The one seam between the driver and the statistics: what the driver hands over (the figures of
 * both versions over the step's window) and what it gets back (an outcome with its evidence).
 * The driver knows nothing else of how the candidate is judged.
 */

/** One version's figures over a window: requests, failed ones (5xx and upstream failures), and latency. */
export interface VersionFigures {
  readonly requests: number;
  readonly errors: number;
  /** Upper bounds of the duration buckets, in seconds (the last bucket, +Inf, is implied). */
  readonly bucketBounds: readonly number[];
  /** Requests per bucket, not cumulative; one more entry than `bucketBounds` (the +Inf bucket). */
  readonly bucketCounts: readonly number[];
}

export interface WindowFigures {
  readonly stable: VersionFigures;
  readonly candidate: VersionFigures;
  /** Where the figures come from, e.g. `this gateway` or `3 gateways (1 not reporting, left out)`. */
  readonly scope: string;
}

export type Outcome = 'pass' | 'fail' | 'inconclusive';

export interface Judgement {
  readonly outcome: Outcome;
  readonly evidence: RolloutEvidence[];
}

export type Judge = (window: WindowFigures, analysis: AnalysisParams) => Judgement;

/** The combined outcome: any fail fails, else any inconclusive holds, else pass. */
export function combine(evidence: readonly RolloutEvidence[]): Outcome {
  if (evidence.some((e) => e.outcome === 'fail')) return 'fail';
  if (evidence.some((e) => e.outcome === 'inconclusive')) return 'inconclusive';
  return 'pass';
}

/** The q-quantile of a histogram by linear interpolation inside its bucket; undefined without samples. */
export function quantileOf(figures: VersionFigures, q: number): number | undefined {
  const total = figures.bucketCounts.reduce((sum, n) => sum + n, 0);
  if (total === 0) return undefined;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < figures.bucketCounts.length; i++) {
    const n = figures.bucketCounts[i]!;
    if (seen + n >= rank && n > 0) {
      const lower = i === 0 ? 0 : figures.bucketBounds[i - 1]!;
      const upper = figures.bucketBounds[i] ?? lower * 2;
      return lower + ((upper - lower) * (rank - seen)) / n;
    }
    seen += n;
  }
  return figures.bucketBounds[figures.bucketBounds.length - 1];
}

const round = (value: number, digits = 4) => Math.round(value * 10 ** digits) / 10 ** digits;

/**
 * Bounds on plain counts, used until the sequential statistics are wired in: too few samples of
 * either version is inconclusive; the error share and the latency quantiles are held to the
 * plan's bounds. A share or a quantile that cannot be computed is inconclusive, never a pass.
 */
export const thresholdJudge: Judge = (window, analysis) => {
  const { stable, candidate } = window;
  const samples = { candidate: candidate.requests, stable: stable.requests };
  const evidence: RolloutEvidence[] = [];
  const min = analysis.minSamples;
  const enough = candidate.requests >= min.candidate && stable.requests >= min.stable;
  evidence.push({
    metric: 'samples',
    outcome: enough ? 'pass' : 'inconclusive',
    candidate: candidate.requests,
    stable: stable.requests,
    bound: min.candidate,
    samples,
    detail: enough
      ? `${candidate.requests} candidate and ${stable.requests} stable requests (at least ${min.candidate} and ${min.stable}) from ${window.scope}`
      : `too few requests to judge: ${candidate.requests} candidate and ${stable.requests} stable, ${min.candidate} and ${min.stable} needed (${window.scope})`,
  });
  if (!enough) return { outcome: 'inconclusive', evidence };
  const candidateRate = candidate.errors / candidate.requests;
  const stableRate = stable.errors / stable.requests;
  // Above both bounds, as the plan states them: a relative one alone would fail 0.2 % against 0.05 %.
  const bound = Math.max(stableRate + analysis.errors.absolute, stableRate * analysis.errors.relative);
  const errorFails = candidateRate > bound;
  evidence.push({
    metric: 'errorRate',
    outcome: errorFails ? 'fail' : 'pass',
    candidate: round(candidateRate),
    stable: round(stableRate),
    bound: round(bound),
    samples,
    detail: `candidate error share ${round(candidateRate * 100, 2)} % (${candidate.errors} of ${candidate.requests}) against stable ${round(stableRate * 100, 2)} % (${stable.errors} of ${stable.requests}); bound ${round(bound * 100, 2)} %`,
  });
  for (const [metric, q, ratio] of [['latencyP50', 0.5, analysis.latency.p50Ratio], ['latencyP99', 0.99, analysis.latency.p99Ratio]] as const) {
    const c = quantileOf(candidate, q);
    const s = quantileOf(stable, q);
    if (c === undefined || s === undefined) {
      evidence.push({ metric, outcome: 'inconclusive', candidate: c ?? null, stable: s ?? null, bound: null, samples, detail: `no ${metric} histogram to judge` });
      continue;
    }
    // A floor of 1 ms: two sub-millisecond quantiles differ by noise, not by a slower candidate.
    const limit = Math.max(s, 0.001) * ratio;
    evidence.push({
      metric,
      outcome: c > limit ? 'fail' : 'pass',
      candidate: round(c),
      stable: round(s),
      bound: round(limit),
      samples,
      detail: `candidate ${metric.slice(7).toLowerCase()} ${round(c * 1000, 1)} ms against stable ${round(s * 1000, 1)} ms; bound ${round(limit * 1000, 1)} ms (${ratio} ×)`,
    });
  }
  return { outcome: combine(evidence), evidence };
};

/** The judge the driver uses. */
export const judge: Judge = thresholdJudge;
