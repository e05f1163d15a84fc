import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { analyzeStep, AnalysisParams, DEFAULT_ANALYSIS_PARAMS, latencyBucket, type FleetWindow, type SparseHistogram, type StepAnalysis, type VersionFigures } from '../../src/rollout/analysis/index.js';
import { rng } from '../../bench/analysis-sim.js';

// The step analysis: never a pass without enough figures, never a fail for a candidate that
// looks like stable, monotone in the candidate's errors, and at most alpha false fails however
// often it looks.

const windowOf = (stable: VersionFigures, candidate: VersionFigures): FleetWindow => ({ fromMs: 0, toMs: 60_000, services: { app: { stable, candidate } }, gateways: ['g1'], excluded: [], resets: [] });
const judge = (stable: VersionFigures, candidate: VersionFigures, params = DEFAULT_ANALYSIS_PARAMS): StepAnalysis =>
  analyzeStep({ service: 'app', figures: { ok: true, window: windowOf(stable, candidate) }, nowMs: 60_000 }, params);

/** `n` latencies spread like a lognormal with `medianMs` (deterministic: quantiles of the distribution). */
function histogram(n: number, medianMs: number, sigma = 0.5): SparseHistogram {
  const counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const z = inverseNormal((i + 0.5) / n);
    const bucket = latencyBucket(medianMs * Math.exp(sigma * z));
    counts[bucket] = (counts[bucket] ?? 0) + 1;
  }
  return counts;
}

/** Acklam's rational approximation of the standard normal quantile (plenty for test data). */
function inverseNormal(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const q = Math.min(p, 1 - p);
  let x: number;
  if (q < 0.02425) {
    const r = Math.sqrt(-2 * Math.log(q));
    x = (((((c[0]! * r + c[1]!) * r + c[2]!) * r + c[3]!) * r + c[4]!) * r + c[5]!) / ((((d[0]! * r + d[1]!) * r + d[2]!) * r + d[3]!) * r + 1);
    return p < 0.5 ? x : -x;
  }
  const r = (p - 0.5) ** 2;
  return ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * (p - 0.5)) / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

const figures = (requests: number, errors: number, latency: SparseHistogram = histogram(requests, 50), failures = 0): VersionFigures => ({ requests, errors, failures, latency });

/** Arbitrary figures of one version: counts and a histogram whose total is the request count. */
const arbitraryFigures = fc
  .record({ requests: fc.integer({ min: 0, max: 50_000 }), errorShare: fc.double({ min: 0, max: 1, noNaN: true }), failures: fc.integer({ min: 0, max: 200 }), medianMs: fc.double({ min: 1, max: 2_000, noNaN: true }), sigma: fc.double({ min: 0.05, max: 1.5, noNaN: true }) })
  .map(({ requests, errorShare, failures, medianMs, sigma }) => figures(requests, Math.floor(requests * errorShare), histogram(Math.min(requests, 3_000), medianMs, sigma), failures));

const rank: Record<StepAnalysis['verdict'], number> = { pass: 0, inconclusive: 1, fail: 2 };

describe('step analysis', () => {
  it('identical figures for candidate and stable never fail', () => {
    fc.assert(
      fc.property(arbitraryFigures, (same) => {
        // Failures exist only for the candidate: a stable with the same errors counted as 5xx.
        const stable = { ...same, errors: same.errors + same.failures, requests: same.requests + same.failures, failures: 0 };
        const analysis = judge(stable, same);
        expect(analysis.verdict).not.toBe('fail');
        for (const evidence of analysis.evidence) expect(evidence.verdict).not.toBe('fail');
      }),
      { numRuns: 200 },
    );
  });

  it('more candidate errors never turn a fail into anything else (monotone)', () => {
    fc.assert(
      fc.property(arbitraryFigures, arbitraryFigures, fc.integer({ min: 1, max: 500 }), (stable, candidate, extra) => {
        const before = judge(stable, candidate);
        const more = { ...candidate, errors: Math.min(candidate.requests, candidate.errors + extra) };
        const after = judge(stable, more);
        const errorsBefore = before.evidence.find((e) => e.check === 'errors')!;
        const errorsAfter = after.evidence.find((e) => e.check === 'errors')!;
        if (errorsBefore.verdict === 'fail') expect(errorsAfter.verdict).toBe('fail');
        if (before.verdict === 'fail') expect(after.verdict).toBe('fail');
        expect(rank[after.verdict] >= rank[before.verdict] || before.verdict === 'inconclusive').toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('unreadable figures, or no traffic, are inconclusive with the reason, never a pass', () => {
    const unread = analyzeStep({ service: 'app', figures: { ok: false, reason: 'store unavailable (GG_STORE_UNAVAILABLE)' }, nowMs: 5 });
    expect(unread.verdict).toBe('inconclusive');
    expect(unread.reason).toContain('GG_STORE_UNAVAILABLE');
    expect(unread.atMs).toBe(5);
    const empty = judge(figures(0, 0, {}), figures(0, 0, {}));
    expect(empty.verdict).toBe('inconclusive');
    expect(empty.evidence.map((e) => e.check)).toEqual(['samples', 'errors', 'latency-p50', 'latency-p99']);
    // A service nobody asked for: zeros, not a pass.
    expect(analyzeStep({ service: 'other', figures: { ok: true, window: windowOf(figures(5_000, 0), figures(5_000, 0)) }, nowMs: 0 }).verdict).toBe('inconclusive');
  });

  it('too few candidate requests hold the step even when everything looks fine', () => {
    const analysis = judge(figures(20_000, 20), figures(50, 0));
    expect(analysis.verdict).toBe('inconclusive');
    expect(analysis.evidence[0]).toMatchObject({ check: 'samples', verdict: 'inconclusive', candidateSamples: 50, stableSamples: 20_000 });
    expect(analysis.evidence[0]!.reason).toMatch(/50 candidate and 20000 stable requests so far; the step needs 200 and 200/);
  });

  it('passes a candidate like stable with enough samples, and says so per check', () => {
    const analysis = judge(figures(18_000, 90), figures(2_000, 10));
    expect(analysis.verdict).toBe('pass');
    expect(analysis.evidence.every((e) => e.verdict === 'pass')).toBe(true);
  });

  it('fails a clearly bad candidate (5 % errors against 0.1 %) with the figures in the evidence', () => {
    const analysis = judge(figures(2_700, 3), figures(300, 15));
    expect(analysis.verdict).toBe('fail');
    const errors = analysis.evidence.find((e) => e.check === 'errors')!;
    expect(errors).toMatchObject({ verdict: 'fail', value: 0.05, candidateSamples: 300, stableSamples: 2_700 });
    // Stable's own figure in the same window, apart from the sentence, so every view can show it.
    expect(errors.stableValue).toBeCloseTo(3 / 2_700, 12);
    expect(analysis.evidence.find((e) => e.check === 'samples')).toMatchObject({ value: 300, stableValue: 2_700 });
    expect(errors.bound).toBeCloseTo(3 / 2_700 + 0.005, 9);
    expect(errors.evidence!).toBeGreaterThanOrEqual(errors.evidenceToFail!);
    expect(errors.reason).toMatch(/candidate 5\.0 % \(15\/300\) against stable 0\.11 % \(3\/2700\)/);
    expect(analysis.reason).toMatch(/^errors failed: /);
  });

  it('counts failures (requests the candidate could not take) as candidate errors', () => {
    const analysis = judge(figures(2_700, 3), figures(300, 0, histogram(300, 50), 40));
    expect(analysis.evidence.find((e) => e.check === 'errors')).toMatchObject({ verdict: 'fail', candidateSamples: 340 });
  });

  it('fails a candidate twice as slow at p99 and at p50, naming the quantile and the threshold', () => {
    const slow = judge(figures(20_000, 0, histogram(20_000, 50)), figures(2_000, 0, histogram(2_000, 100)));
    expect(slow.verdict).toBe('fail');
    const p50 = slow.evidence.find((e) => e.check === 'latency-p50')!;
    expect(p50.verdict).toBe('fail');
    expect(p50.value!).toBeGreaterThan(p50.bound!);
    // Stable's p50 is the figure the bound is made of: the bound is 1.25× it.
    expect(p50.stableValue!).toBeGreaterThan(0);
    expect(p50.bound!).toBeCloseTo(p50.stableValue! * 1.25, 0);
    const p99 = slow.evidence.find((e) => e.check === 'latency-p99')!;
    expect(p99.stableValue!).toBeGreaterThanOrEqual(p50.stableValue!);
    expect(p50.reason).toMatch(/candidate p50 .* against stable .* \(bound 1\.25× = .*\); \d+ of 2000 candidate requests above/);
  });

  it('an external check that could not be read holds the step; one that failed fails it', () => {
    const base = { service: 'app', figures: { ok: true as const, window: windowOf(figures(18_000, 90), figures(2_000, 10)) }, nowMs: 0 };
    const held = analyzeStep({ ...base, external: [{ check: 'prometheus', outcome: 'error', metric: 'q', value: null, bound: 1, reason: 'timeout after 5000 ms' }] });
    expect(held.verdict).toBe('inconclusive');
    expect(held.reason).toMatch(/prometheus inconclusive: could not be read.*timeout/);
    // An external check has no stable counterpart.
    expect(held.evidence.find((e) => e.check === 'prometheus')).toMatchObject({ value: null, stableValue: null });
    const failed = analyzeStep({ ...base, external: [{ check: 'webhook', outcome: 'fail', metric: 'status', value: 500, bound: null, reason: 'answered 500' }] });
    expect(failed.verdict).toBe('fail');
  });

  it('parameters are checked with the field named', () => {
    expect(() => AnalysisParams.parse({ alpha: 2 })).toThrow(/alpha/);
    expect(AnalysisParams.parse({ errors: { relative: 3 } }).errors).toMatchObject({ relative: 3, absolute: 0.005 });
  });

  it('keeps the false-fail rate under alpha at every look, for a candidate exactly at its bound (fixed seeds)', () => {
    // Relative bound 2 and no absolute margin; the candidate's error rate is exactly 2× stable's,
    // so its errors check is at the edge of failing. Looked at every second for 5 minutes: the
    // share of streams that ever fail stays under the check's alpha (alpha / 3), with margin.
    const params = AnalysisParams.parse({ alpha: 0.09, errors: { relative: 2, absolute: 0 } });
    const checkAlpha = params.alpha / 3;
    const streams = 300;
    let failed = 0;
    for (let s = 0; s < streams; s++) {
      const random = rng(1_000 + s);
      let sn = 0;
      let sk = 0;
      let cn = 0;
      let ck = 0;
      for (let second = 1; second <= 300; second++) {
        for (let i = 0; i < 180; i++) if (random() < 0.01) sk++;
        for (let i = 0; i < 20; i++) if (random() < 0.02) ck++;
        sn += 180;
        cn += 20;
        const analysis = judge({ requests: sn, errors: sk, failures: 0, latency: {} }, { requests: cn, errors: ck, failures: 0, latency: {} }, params);
        if (analysis.evidence.find((e) => e.check === 'errors')!.verdict === 'fail') {
          failed++;
          break;
        }
      }
    }
    expect(failed / streams).toBeLessThanOrEqual(checkAlpha * 1.5);
  });
});
