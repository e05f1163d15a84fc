/**
 * The latency histogram the rollout analysis reads: fixed log-spaced buckets, eight per doubling
 * (each bound 9 % above the one before), from 0.5 ms to past a minute. Fine enough that a ratio
 * bound of 1.25 lands within one bucket of its exact threshold; bounded (LATENCY_BUCKET_COUNT
 * buckets) and sent sparse (only non-empty buckets), so a load report stays small.
 */

/** Buckets per doubling of latency. */
export const BUCKETS_PER_DOUBLING = 8;
/** Upper bound of bucket 0, in ms. */
export const FIRST_BOUND_MS = 0.5;
/** Bounds (ms) of buckets 0..LATENCY_BOUNDS_MS.length-1; the last bucket (index length) is everything above. */
export const LATENCY_BOUNDS_MS: readonly number[] = Object.freeze(Array.from({ length: 8 * 17 + 1 }, (_, i) => FIRST_BOUND_MS * 2 ** (i / BUCKETS_PER_DOUBLING)));
/** Number of buckets, the overflow bucket included. */
export const LATENCY_BUCKET_COUNT = LATENCY_BOUNDS_MS.length + 1;

/**
 * A latency histogram: bucket index (as a string: it travels as JSON) to the number of requests in
 * it, not cumulative; empty buckets absent. Bucket i holds latencies in (bound[i-1], bound[i]].
 */
export type SparseHistogram = Readonly<Record<string, number>>;

/**
 * The bucket of a latency in ms: O(1), no allocation (it runs once per request). NaN and negative
 * values go to bucket 0.
 */
export function latencyBucket(ms: number): number {
  if (!(ms > FIRST_BOUND_MS)) return 0;
  let i = Math.ceil(Math.log2(ms / FIRST_BOUND_MS) * BUCKETS_PER_DOUBLING - 1e-9);
  // Floating point can put a value sitting on a bound one bucket off: settle it against the table.
  if (i > 0 && ms <= LATENCY_BOUNDS_MS[i - 1]!) i--;
  else if (i < LATENCY_BOUNDS_MS.length && ms > LATENCY_BOUNDS_MS[i]!) i++;
  return Math.min(i, LATENCY_BOUNDS_MS.length);
}

/** Upper bound (ms) of bucket `index`; Infinity for the overflow bucket. */
export function bucketUpperMs(index: number): number {
  return index < LATENCY_BOUNDS_MS.length ? LATENCY_BOUNDS_MS[index]! : Infinity;
}
