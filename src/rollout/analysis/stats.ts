/**
 * The statistics of the analysis: exact binomial mixture tests (e-values), valid at every look.
 * An e-value E for a null hypothesis is a non-negative quantity whose running value is a
 * supermartingale under the null: by Ville's inequality, the chance that it EVER reaches 1/alpha
 * (however often it is looked at) is at most alpha. Pure functions, no allocation in the loops.
 */

const LANCZOS = [0.9999999999998099, 676.5203681218851, -1259.1392167224028, 771.3234287776531, -176.6150291621406, 12.507343278686905, -0.13857109526572012, 9.984369578019572e-6, 1.5056327351493116e-7];

/** ln Γ(x) for x > 0 (Lanczos, g = 7; relative error ~1e-15). */
export function logGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  x -= 1;
  let a = LANCZOS[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** ln B(a, b). */
export function logBeta(a: number, b: number): number {
  return logGamma(a) + logGamma(b) - logGamma(a + b);
}

/** Continued fraction of the incomplete beta (Lentz), for x < (a + 1) / (a + b + 2). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 500; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-14) break;
  }
  return h;
}

/**
 * ln of the upper tail of the Beta(a, b) distribution above x: ln(1 − I_x(a, b)), computed
 * without cancellation (it is tiny exactly when the evidence is weak, and ln of it matters).
 */
export function logBetaUpperTail(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return -Infinity;
  const logFront = a * Math.log(x) + b * Math.log1p(-x) - logBeta(a, b);
  if (x < (a + 1) / (a + b + 2)) {
    // Lower tail is front·cf/a: the upper tail is 1 minus it.
    const lower = Math.exp(logFront) * betaContinuedFraction(x, a, b) / a;
    return Math.log1p(-Math.min(lower, 1 - 1e-16));
  }
  // Upper tail directly: I_{1-x}(b, a).
  return logFront + Math.log(betaContinuedFraction(1 - x, b, a) / b);
}

/**
 * The e-value against "success probability ≤ p0" after `k` successes in `n` trials: the
 * likelihood ratio of a Beta(1, b) mixture restricted to p ≥ p0, against p0. Every alternative in
 * the mixture is above p0, so the ratio is a supermartingale under any p ≤ p0 (a composite null)
 * and depends on the counts only (the order of the trials does not matter, so cumulative figures
 * suffice). `b` puts the mixture's weight near the alternatives that matter: b = 1 is uniform,
 * larger b favours rates a few times p0. Returns ln E.
 */
export function logMixtureEValue(k: number, n: number, p0: number, b: number): number {
  if (n <= 0) return 0;
  if (p0 <= 0) return Infinity;
  if (p0 >= 1) return -Infinity;
  const failures = n - k;
  // ∫_{p0}^1 p^k (1-p)^(n-k) p^0 (1-p)^(b-1) dp / [B(1,b) (1-I_{p0}(1,b))]  over  p0^k (1-p0)^(n-k)
  const numerator = logBeta(k + 1, failures + b) + logBetaUpperTail(p0, k + 1, failures + b);
  const priorMass = logBeta(1, b) + b * Math.log1p(-p0); // 1 - I_{p0}(1, b) = (1-p0)^b
  const nullLikelihood = k * Math.log(p0) + failures * Math.log1p(-p0);
  return numerator - priorMass - nullLikelihood;
}

/**
 * The upper end of an always-valid confidence sequence for a binomial proportion after `k`
 * successes in `n` trials: the largest p whose one-sided mixture e-value against "p is too
 * high" (a Beta(1, b) mixture below p) stays under 1/alpha. With chance at least 1 − alpha the
 * true rate is below it at every look at once.
 */
export function upperConfidenceBound(k: number, n: number, alpha: number, b: number): number {
  if (n <= 0) return 1;
  const target = Math.log(1 / alpha);
  const failures = n - k;
  // The parts of logLowerMixtureEValue that do not depend on p, computed once for the search.
  const constant = logBeta(k + 1, failures + b) - logBeta(1, b);
  const evidence = (p: number): number => {
    const upper = logBetaUpperTail(p, k + 1, failures + b);
    const lowerTail = Math.log(-Math.expm1(Math.min(upper, -1e-300)));
    return constant + lowerTail - Math.log(-Math.expm1(b * Math.log1p(-p))) - k * Math.log(p) - failures * Math.log1p(-p);
  };
  let lo = Math.max(k / n, 1e-12);
  let hi = 1 - 1e-12;
  if (evidence(hi) < target) return 1;
  // Geometric bisection to a relative precision of 1e-4: bounds span orders of magnitude.
  while (hi / lo > 1.0001) {
    const mid = Math.sqrt(lo * hi);
    if (evidence(mid) >= target) hi = mid;
    else lo = mid;
  }
  return hi;
}

/**
 * ln of the e-value against "success probability ≥ p0": a Beta(1, b) mixture restricted to p ≤ p0.
 */
export function logLowerMixtureEValue(k: number, n: number, p0: number, b: number): number {
  if (n <= 0) return 0;
  if (p0 >= 1) return k < n ? Infinity : 0;
  if (p0 <= 0) return k > 0 ? -Infinity : 0;
  const failures = n - k;
  // ∫_0^{p0} p^k (1-p)^(n-k+b-1) dp = B(k+1, n-k+b) · I_{p0}(k+1, n-k+b) = B · (1 − upper tail)
  const upper = logBetaUpperTail(p0, k + 1, failures + b);
  const lowerTail = Math.log(-Math.expm1(Math.min(upper, -1e-300)));
  const numerator = logBeta(k + 1, failures + b) + lowerTail;
  const priorMass = logBeta(1, b) + Math.log(-Math.expm1(b * Math.log1p(-p0))); // I_{p0}(1, b) = 1 − (1-p0)^b
  const nullLikelihood = k * Math.log(p0) + failures * Math.log1p(-p0);
  return numerator - priorMass - nullLikelihood;
}
