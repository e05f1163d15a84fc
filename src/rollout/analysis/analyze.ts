import { serviceFiguresOf } from './fleet.js';
import { LATENCY_BOUNDS_MS, LATENCY_BUCKET_COUNT, type SparseHistogram } from './histogram.js';
import { DEFAULT_ANALYSIS_PARAMS, type AnalysisParams } from './params.js';
import { logMixtureEValue, upperConfidenceBound } from './stats.js';
import type { CheckEvidence, ServiceFigures, StepAnalysis, StepInput, Verdict } from './types.js';

// Module-local copies: the loops below read them per bucket, and an imported binding may be a getter.
const BOUNDS: readonly number[] = LATENCY_BOUNDS_MS;
const BUCKETS = LATENCY_BUCKET_COUNT;
const upperMs = (index: number): number => (index < BOUNDS.length ? BOUNDS[index]! : Infinity);

/** Built-in statistical checks sharing a step's alpha. */
const STATISTICAL_CHECKS = 3;

/**
 * The mixture's shape for a null rate p0: Beta(1, b) above p0 with its weight a few times p0,
 * where a regression worth catching lies (a uniform mixture wastes most weight on rates near 1).
 */
export function mixtureShape(p0: number): number {
  return Math.max(1, 1 / (4 * p0));
}

/**
 * Judges one look at a step: candidate against stable on the figures of the same window, with
 * sequential tests valid at every look (look as often as you like; the chance that a candidate
 * within the bounds fails the step stays under `params.alpha`). Pure: no I/O, no clock.
 * - fail: some check has enough evidence that the candidate is worse than its bound (at any sample
 *   count: the tests are valid from the first request), or an external check failed;
 * - inconclusive: figures missing or unreadable, too few samples of either version (for the step,
 *   or for a check), or an external check that could not be read. Never a pass;
 * - pass: every check has its minimum samples and none failed.
 */
export function analyzeStep(input: StepInput, params: AnalysisParams = DEFAULT_ANALYSIS_PARAMS): StepAnalysis {
  const external = (input.external ?? []).map(externalEvidence);
  if (!input.figures.ok) {
    const reason = `the figures could not be read (${input.figures.reason}); nothing is judged without them`;
    const evidence: CheckEvidence[] = [{ check: 'figures', verdict: 'inconclusive', metric: 'fleet figures', value: null, stableValue: null, bound: null, candidateSamples: 0, stableSamples: 0, reason }, ...external];
    return conclude(evidence, input.nowMs, undefined);
  }
  const window = input.figures.window;
  const figures = serviceFiguresOf(window, input.service);
  const checkAlpha = params.alpha / STATISTICAL_CHECKS;
  const evidence: CheckEvidence[] = [
    samplesCheck(figures, params),
    errorsCheck(figures, params, checkAlpha),
    latencyCheck('latency-p50', 0.5, params.latency.p50Ratio, figures, params, checkAlpha),
    latencyCheck('latency-p99', 0.99, params.latency.p99Ratio, figures, params, checkAlpha),
    ...external,
  ];
  return conclude(evidence, input.nowMs, { fromMs: window.fromMs, toMs: window.toMs, gateways: window.gateways, excluded: window.excluded, resets: window.resets });
}

function conclude(evidence: CheckEvidence[], atMs: number, window: StepAnalysis['window']): StepAnalysis {
  const failed = evidence.find((e) => e.verdict === 'fail');
  const held = evidence.find((e) => e.verdict === 'inconclusive');
  const verdict: Verdict = failed !== undefined ? 'fail' : held !== undefined ? 'inconclusive' : 'pass';
  const reason =
    failed !== undefined
      ? `${failed.check} failed: ${failed.reason}`
      : held !== undefined
        ? `${held.check} inconclusive: ${held.reason}`
        : `every check passed (${evidence.map((e) => e.check).join(', ')})`;
  return { verdict, reason, evidence, atMs, ...(window === undefined ? {} : { window }) };
}

function externalEvidence(result: NonNullable<StepInput['external']>[number]): CheckEvidence {
  const isError = result.outcome === 'error';
  return {
    check: result.check,
    verdict: isError ? 'inconclusive' : result.outcome,
    metric: result.metric,
    value: result.value,
    stableValue: null,
    bound: result.bound,
    candidateSamples: 0,
    stableSamples: 0,
    reason: isError ? `could not be read, so it holds the step: ${result.reason}` : result.reason,
  };
}

function samplesCheck(figures: ServiceFigures, params: AnalysisParams): CheckEvidence {
  const candidate = figures.candidate.requests + figures.candidate.failures;
  const stable = figures.stable.requests;
  const min = params.minSamples;
  const enough = candidate >= min.candidate && stable >= min.stable;
  return {
    check: 'samples',
    verdict: enough ? 'pass' : 'inconclusive',
    metric: 'candidate requests',
    value: candidate,
    stableValue: stable,
    bound: min.candidate,
    candidateSamples: candidate,
    stableSamples: stable,
    reason: enough
      ? `${candidate} candidate and ${stable} stable requests, at least the ${min.candidate} and ${min.stable} a step needs`
      : `${candidate} candidate and ${stable} stable requests so far; the step needs ${min.candidate} and ${min.stable} before it may pass`,
  };
}

/**
 * Errors: 5xx responses plus failures (requests the version could not take). The candidate fails
 * when it is, with the test's confidence, both above `relative` × stable's rate and more than
 * `absolute` above it (an intersection-union test: each part at the check's alpha, so the check
 * as a whole is too):
 * - relative: each error is the candidate's or stable's; with the traffic split w fixed by the
 *   step's rule, an error is the candidate's with chance ρw / (ρw + 1 − w) when the candidate's
 *   rate is ρ × stable's. A binomial mixture test on (candidate errors, all errors) against that
 *   share: exact for rare errors, and blind to the overall error level (both versions' shared
 *   trouble cancels out).
 * - absolute: the candidate's rate against stable's upper confidence bound (always valid, at half
 *   the alpha) plus `absolute`, by a binomial mixture test at the other half.
 */
function errorsCheck(figures: ServiceFigures, params: AnalysisParams, alpha: number): CheckEvidence {
  const { relative, absolute, minSamples } = params.errors;
  const cn = figures.candidate.requests + figures.candidate.failures;
  const ck = Math.min(cn, figures.candidate.errors + figures.candidate.failures);
  const sn = figures.stable.requests;
  const sk = Math.min(sn, figures.stable.errors + figures.stable.failures);
  const cRate = cn > 0 ? ck / cn : null;
  const sRate = sn > 0 ? sk / sn : null;
  const toFail = 1 / alpha;
  const base = { check: 'errors', metric: 'error rate (5xx and upstream failures)', value: cRate, stableValue: sRate, candidateSamples: cn, stableSamples: sn, evidenceToFail: round(toFail) } as const;
  const describe = `candidate ${rate(ck, cn)} against stable ${rate(sk, sn)}`;
  const bound = sRate === null ? null : Math.max(sRate * relative, sRate + absolute);
  if (cn === 0 || sn === 0) {
    return { ...base, verdict: 'inconclusive', bound, evidence: 1, reason: `${describe}: no ${cn === 0 ? 'candidate' : 'stable'} requests to compare` };
  }
  const share = cn / (cn + sn);
  const q0 = (relative * share) / (relative * share + 1 - share);
  const logRelative = logMixtureEValue(ck, ck + sk, q0, mixtureShape(q0));
  const bounds = `the bound is ${pct(bound!)} (${relative}× stable, or stable + ${pct(absolute)}, whichever is higher)`;
  // Both parts must reject: the absolute one (the costlier) is only computed when the relative one does.
  let evidence = Math.exp(logRelative);
  if (logRelative >= Math.log(toFail)) {
    const stableUpper = upperConfidenceBound(sk, sn, alpha / 2, 1);
    const p0 = Math.min(stableUpper + absolute, 1 - 1e-12);
    const logAbsolute = logMixtureEValue(ck, cn, p0, mixtureShape(p0));
    // Reported on the relative part's scale: the absolute part runs at half the alpha.
    evidence = Math.exp(Math.min(logRelative, logAbsolute - Math.log(2)));
    if (logAbsolute >= Math.log(toFail * 2)) {
      return { ...base, verdict: 'fail', bound, evidence: round(evidence), reason: `${describe}: above ${bounds}; evidence ${fmt(evidence)} ≥ ${fmt(toFail)}` };
    }
  }
  const enough = cn >= minSamples.candidate && sn >= minSamples.stable;
  return {
    ...base,
    verdict: enough ? 'pass' : 'inconclusive',
    bound,
    evidence: round(evidence),
    reason: enough
      ? `${describe}: no evidence it is above ${bounds} (evidence ${fmt(evidence)} < ${fmt(toFail)})`
      : `${describe}: ${bounds}; too few requests to pass (needs ${minSamples.candidate} candidate and ${minSamples.stable} stable)`,
  };
}

/**
 * Latency at quantile q: the candidate's q-quantile may be up to `ratio` × stable's. Stable's
 * quantile (from its histogram, the larger sample) times the ratio, rounded up to a bucket bound,
 * is a threshold T; a candidate within the bound has at most a 1 − q share of requests above T.
 * A binomial mixture test on the candidate's requests above T against that share.
 */
function latencyCheck(check: 'latency-p50' | 'latency-p99', q: number, ratio: number, figures: ServiceFigures, params: AnalysisParams, alpha: number): CheckEvidence {
  const label = check === 'latency-p50' ? 'p50' : 'p99';
  const min = params.latency.minSamples;
  const candidate = dense(figures.candidate.latency);
  const stable = dense(figures.stable.latency);
  const cn = total(candidate);
  const sn = total(stable);
  const cq = quantileMs(candidate, cn, q);
  const sq = quantileMs(stable, sn, q);
  const toFail = 1 / alpha;
  const base = { check, metric: `${label} latency (ms)`, value: cq === null ? null : round(cq), stableValue: sq === null ? null : round(sq), candidateSamples: cn, stableSamples: sn, evidenceToFail: round(toFail) } as const;
  if (sn < min.stable || sq === null) {
    return { ...base, verdict: 'inconclusive', bound: sq === null ? null : round(sq * ratio), evidence: 1, reason: `stable has ${sn} timed requests; its ${label} needs ${min.stable} to be placed` };
  }
  const bound = sq * ratio;
  let index = 0;
  while (index < BOUNDS.length && BOUNDS[index]! < bound) index++;
  const threshold = upperMs(index);
  let above = 0;
  for (let i = index + 1; i < BUCKETS; i++) above += candidate[i]!;
  const p0 = 1 - q;
  const evidence = cn > 0 ? Math.exp(logMixtureEValue(above, cn, p0, mixtureShape(p0))) : 1;
  const describe = `candidate ${label} ${cq === null ? 'unknown' : ms(cq)} against stable ${ms(sq)} (bound ${ratio}× = ${ms(bound)}); ${above} of ${cn} candidate requests above ${ms(threshold)}, ${pct(p0)} allowed`;
  if (evidence >= toFail) {
    return { ...base, verdict: 'fail', bound: round(bound), evidence: round(evidence), reason: `${describe}; evidence ${fmt(evidence)} ≥ ${fmt(toFail)}` };
  }
  const enough = cn >= min.candidate;
  return {
    ...base,
    verdict: enough ? 'pass' : 'inconclusive',
    bound: round(bound),
    evidence: round(evidence),
    reason: enough ? `${describe}; evidence ${fmt(evidence)} < ${fmt(toFail)}` : `${describe}; too few candidate requests to pass (needs ${min.candidate})`,
  };
}

function dense(histogram: SparseHistogram): Float64Array {
  const counts = new Float64Array(BUCKETS);
  for (const key in histogram) {
    const index = Number(key);
    const count = histogram[key]!;
    if (Number.isInteger(index) && index >= 0 && index < BUCKETS && count > 0) counts[index] = counts[index]! + count;
  }
  return counts;
}

function total(counts: Float64Array): number {
  let sum = 0;
  for (const count of counts) sum += count;
  return sum;
}

/** The q-quantile in ms, interpolated geometrically inside its bucket; null without samples. */
export function quantileMs(counts: Float64Array, n: number, q: number): number | null {
  if (n <= 0) return null;
  const rank = q * n;
  let cumulative = 0;
  for (let i = 0; i < counts.length; i++) {
    const count = counts[i]!;
    if (count > 0 && cumulative + count >= rank) {
      const upper = upperMs(i);
      const lower = i === 0 ? BOUNDS[0]! / 2 : BOUNDS[i - 1]!;
      if (!Number.isFinite(upper)) return lower;
      const fraction = Math.max(0, Math.min(1, (rank - cumulative) / count));
      return lower * (upper / lower) ** fraction;
    }
    cumulative += count;
  }
  return upperMs(BOUNDS.length - 1);
}

function round(value: number): number {
  if (!Number.isFinite(value)) return value > 0 ? Number.MAX_VALUE : 0;
  return Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 1000) / 1000;
}

function fmt(value: number): string {
  return value >= 1e6 ? value.toExponential(1) : value >= 100 ? String(Math.round(value)) : value.toPrecision(3);
}

function pct(value: number): string {
  return `${(value * 100).toFixed(value < 0.01 ? 2 : 1)} %`;
}

function rate(errors: number, requests: number): string {
  return requests === 0 ? 'no requests' : `${pct(errors / requests)} (${errors}/${requests})`;
}

function ms(value: number): string {
  return `${value >= 100 ? Math.round(value) : value.toPrecision(3)} ms`;
}
