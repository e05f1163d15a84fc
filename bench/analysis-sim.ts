/**
 * The simulation half of `npm run bench:analysis`: many rollouts in seconds, no HTTP. Traffic is
 * drawn request by request from a seeded generator (same seeds for both policies, so they judge
 * the same traffic), looked at every LOOK_MS like the driver does, and judged by
 * - graygate's sequential analysis (src/rollout/analysis, default parameters), and
 * - a fixed-interval threshold policy configured like Argo Rollouts' / Flagger's defaults: every
 *   60 s, the candidate's error rate over the interval above 1 % (Flagger's request-success-rate
 *   99 %) or its p99 above 500 ms (Flagger's request-duration default) is a failed check; the
 *   third failed check rolls back (a failure limit of 3); a clean interval advances a step.
 */
import { analyzeStep } from '../src/rollout/analysis/analyze.js';
import { bucketUpperMs, latencyBucket, LATENCY_BUCKET_COUNT } from '../src/rollout/analysis/histogram.js';
import { DEFAULT_ANALYSIS_PARAMS, type AnalysisParams } from '../src/rollout/analysis/params.js';
import type { FleetWindow, VersionFigures } from '../src/rollout/analysis/types.js';

const TICK_MS = 500;

/** mulberry32: small, fast, seeded. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(random: () => number): number {
  let u = 0;
  while (u === 0) u = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

function poisson(random: () => number, mean: number): number {
  if (mean > 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian(random)));
  const limit = Math.exp(-mean);
  let k = 0;
  let p = random();
  while (p > limit && k < 1000) {
    k++;
    p *= random();
  }
  return k;
}

export interface VersionModel {
  readonly errorRate: number;
  /** Lognormal latency: median ms and sigma. */
  readonly medianMs: number;
  readonly sigma: number;
}

export interface Scenario {
  readonly name: string;
  readonly rps: number;
  readonly stable: VersionModel;
  readonly candidate: VersionModel;
  /** Candidate traffic share of each step (fractions). */
  readonly steps: readonly number[];
  readonly holdMs: number;
  /** A step still inconclusive this long after its hold pauses the rollout (for a person). */
  readonly pauseAfterMs: number;
  /** How often the sequential analysis looks (the driver looks at every fleet read, about 1 s). */
  readonly lookMs: number;
}

export interface Outcome {
  readonly result: 'rollback' | 'done' | 'paused';
  readonly stepsTaken: number;
  /** Time from the first bad candidate response (an error, or a response slower than stable's p99) to the rollback. */
  readonly detectionMs: number | null;
  readonly durationMs: number;
}

/** Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7: plenty for a simulation). */
function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return z >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
}

/** Cumulative probability of each latency bucket under a model: a request's bucket is one draw and a binary search. */
const cdfCache = new Map<VersionModel, Float64Array>();
function bucketCdf(model: VersionModel): Float64Array {
  let cdf = cdfCache.get(model);
  if (cdf === undefined) {
    cdf = new Float64Array(LATENCY_BUCKET_COUNT);
    for (let i = 0; i < LATENCY_BUCKET_COUNT; i++) {
      const upper = bucketUpperMs(i);
      cdf[i] = Number.isFinite(upper) ? normalCdf(Math.log(upper / model.medianMs) / model.sigma) : 1;
    }
    cdfCache.set(model, cdf);
  }
  return cdf;
}

class Counts {
  requests = 0;
  errors = 0;
  readonly latency = new Float64Array(LATENCY_BUCKET_COUNT);
  /**
   * Adds one tick of Poisson arrivals at `mean` requests: split by latency bucket (and errors
   * apart), the counts are independent Poissons, so each is one draw. Says how many were errors
   * and how many landed above bucket `slowAbove`.
   */
  add(mean: number, model: VersionModel, random: () => number, slowAbove = LATENCY_BUCKET_COUNT): { errors: number; slow: number } {
    const cdf = bucketCdf(model);
    let n = 0;
    let slow = 0;
    let previous = 0;
    for (let i = 0; i < LATENCY_BUCKET_COUNT; i++) {
      const p = cdf[i]! - previous;
      previous = cdf[i]!;
      if (p < 1e-9) continue;
      const count = poisson(random, mean * p);
      if (count === 0) continue;
      this.latency[i] = this.latency[i]! + count;
      n += count;
      if (i > slowAbove) slow += count;
    }
    // Errors: a thinning of the same arrivals (a request errs with errorRate, whatever its latency).
    let errors = 0;
    for (let i = 0; i < n; i++) if (random() < model.errorRate) errors++;
    this.requests += n;
    this.errors += errors;
    return { errors, slow };
  }
  figures(): VersionFigures {
    const latency: Record<string, number> = {};
    for (let i = 0; i < this.latency.length; i++) if (this.latency[i]! > 0) latency[i] = this.latency[i]!;
    return { requests: this.requests, errors: this.errors, failures: 0, latency };
  }
  p99Ms(): number {
    let rank = this.requests * 0.99;
    for (let i = 0; i < this.latency.length; i++) {
      rank -= this.latency[i]!;
      if (rank <= 0) return bucketUpperMs(i);
    }
    return Infinity;
  }
}

type Policy = 'sequential' | 'threshold';

/** One rollout of `scenario` under `policy`, on the traffic of `seed`. */
export function simulate(scenario: Scenario, policy: Policy, seed: number, params: AnalysisParams = DEFAULT_ANALYSIS_PARAMS): Outcome {
  const random = rng(seed);
  let now = 0;
  let firstBadMs: number | null = null;
  // A "bad" candidate response: an error, or slower than stable's p99 when the candidate is slower.
  const isSlowerModel = scenario.candidate.sigma > scenario.stable.sigma || scenario.candidate.medianMs > scenario.stable.medianMs;
  const isWorseModel = scenario.candidate.errorRate > scenario.stable.errorRate || isSlowerModel;
  let failedChecks = 0;
  const stableP99Bucket = latencyBucket(scenario.stable.medianMs * Math.exp(2.326 * scenario.stable.sigma));
  for (let step = 0; step < scenario.steps.length; step++) {
    const share = scenario.steps[step]!;
    const stable = new Counts();
    const candidate = new Counts();
    let interval = { stable: new Counts(), candidate: new Counts() };
    const stepStart = now;
    let nextLook = now + scenario.lookMs;
    let nextInterval = now + 60_000;
    for (;;) {
      now += TICK_MS;
      // Poisson arrivals thinned by the step's share: the two versions' counts are independent Poissons.
      const bad = candidate.add((scenario.rps * share * TICK_MS) / 1000, scenario.candidate, random, stableP99Bucket);
      stable.add((scenario.rps * (1 - share) * TICK_MS) / 1000, scenario.stable, random);
      if (firstBadMs === null && isWorseModel && (bad.errors > 0 || (isSlowerModel && bad.slow > 0))) firstBadMs = now - random() * TICK_MS;
      if (policy === 'threshold') {
        // The interval's own counts: a difference of the cumulative ones at its start.
        if (now >= nextInterval) {
          const cRequests = candidate.requests - interval.candidate.requests;
          const cErrors = candidate.errors - interval.candidate.errors;
          const windowP99 = p99Between(interval.candidate, candidate);
          const isFailed = (cRequests > 0 && cErrors / cRequests > 0.01) || windowP99 > 500;
          interval = { stable: snapshot(stable), candidate: snapshot(candidate) };
          nextInterval = now + 60_000;
          if (isFailed) {
            failedChecks++;
            if (failedChecks >= 3) return { result: 'rollback', stepsTaken: step, detectionMs: firstBadMs === null ? null : now - firstBadMs, durationMs: now };
          } else if (now - stepStart >= scenario.holdMs) break;
        }
        if (now - stepStart > scenario.holdMs + scenario.pauseAfterMs) return { result: 'paused', stepsTaken: step, detectionMs: null, durationMs: now };
        continue;
      }
      if (now < nextLook) continue;
      nextLook = now + scenario.lookMs;
      const window: FleetWindow = {
        fromMs: stepStart,
        toMs: now,
        services: { shop: { stable: stable.figures(), candidate: candidate.figures() } },
        gateways: ['sim'],
        excluded: [],
        resets: [],
      };
      const analysis = analyzeStep({ service: 'shop', figures: { ok: true, window }, nowMs: now }, params);
      if (analysis.verdict === 'fail') return { result: 'rollback', stepsTaken: step, detectionMs: firstBadMs === null ? null : now - firstBadMs, durationMs: now };
      if (analysis.verdict === 'pass' && now - stepStart >= scenario.holdMs) break;
      if (now - stepStart > scenario.holdMs + scenario.pauseAfterMs) return { result: 'paused', stepsTaken: step, detectionMs: null, durationMs: now };
    }
  }
  return { result: 'done', stepsTaken: scenario.steps.length, detectionMs: null, durationMs: now };
}

function snapshot(counts: Counts): Counts {
  const copy = new Counts();
  copy.requests = counts.requests;
  copy.errors = counts.errors;
  copy.latency.set(counts.latency);
  return copy;
}

function p99Between(start: Counts, end: Counts): number {
  const diff = new Counts();
  diff.requests = end.requests - start.requests;
  for (let i = 0; i < diff.latency.length; i++) diff.latency[i] = end.latency[i]! - start.latency[i]!;
  return diff.requests === 0 ? 0 : diff.p99Ms();
}

export function quantile(values: readonly number[], q: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
