import type { CacheMode } from '../config/schema.js';
import { decisionOf } from './cache-headers.js';
import { BUCKETS, deriveSeed } from './hash.js';
import type { SplitDescription } from './description.js';
import type { Decision } from './snapshot.js';

/**
 * The A/B/n split: callers no rule decided are spread over weighted candidates by a sticky hash
 * of their id, with stable keeping what the weights leave.
 */

/** Salt of the A/B/n split hash: a seed independent of every percentage rule's, so the two never correlate. */
export const SPLIT_SALT = 'graygate/split';

/**
 * The bucket ranges of an A/B/n split, fixed at compile: candidate i takes buckets
 * `[from[i], to[i])` of `murmur3(userId, deriveSeed(service, SPLIT_SALT)) % 10000`. Every
 * candidate but the last takes consecutive ranges upwards from bucket 0, in list order; the
 * last takes the top of the range downwards from 9999; stable keeps the gap between. So
 * changing the weight of the last candidate, or of the one listed just before it, moves callers
 * only between that candidate and stable (with two candidates, an A/B test, that is both);
 * changing an earlier candidate's weight shifts the ranges of those listed after it but the last.
 */
export function splitRanges(weights: readonly number[]): { from: number[]; to: number[] } {
  const from: number[] = [];
  const to: number[] = [];
  let low = 0;
  weights.forEach((weight, i) => {
    const width = Math.round(weight * 100);
    if (i === weights.length - 1 && i > 0) {
      from.push(BUCKETS - width);
      to.push(BUCKETS);
    } else {
      from.push(low);
      to.push(low + width);
      low += width;
    }
  });
  return { from, to };
}

/** A split ready for a request: bucket bounds in typed arrays and one frozen Decision per part. */
export interface CompiledSplit {
  readonly seed: number;
  /** Bucket bounds of the candidates that take part (weight above 0), in list order. */
  readonly from: Int32Array;
  readonly to: Int32Array;
  /** The Decision of each part, by the same index. */
  readonly decisions: readonly Decision[];
  /** A caller whose bucket no candidate takes. */
  readonly stable: Decision;
  readonly description: SplitDescription;
}

/** Compiles the split of a release's weighted candidates. */
export function compileSplit(init: {
  readonly service: string;
  readonly cache: CacheMode;
  readonly stable: string;
  readonly candidates: readonly string[];
  readonly weights: readonly number[];
  readonly releaseSeed: string;
  /** The `Vary` of a split decision: the rules' inputs and the identity. */
  readonly vary: string | undefined;
}): CompiledSplit {
  const { service, cache, candidates, vary } = init;
  const seed = deriveSeed(init.releaseSeed, SPLIT_SALT);
  const ranges = splitRanges(init.weights);
  // Only candidates with a weight take part: weight 0 is never chosen, so never dialled by the split.
  const used = candidates.map((_, i) => i).filter((i) => ranges.to[i]! > ranges.from[i]!);
  const from = Int32Array.from(used, (i) => ranges.from[i]!);
  const to = Int32Array.from(used, (i) => ranges.to[i]!);
  const decisions = Object.freeze(
    used.map((i) => decisionOf(service, cache, { version: 'candidate', upstream: candidates[i]!, reason: 'split', dependsOnCaller: true, varyValue: vary })),
  );
  const stable = decisionOf(service, cache, { version: 'stable', upstream: init.stable, reason: 'split', dependsOnCaller: true, varyValue: vary });
  const description = Object.freeze({ seed, candidates: Object.freeze(used.map((i) => candidates[i]!)), from: Object.freeze([...from]), to: Object.freeze([...to]) });
  return Object.freeze({ seed, from, to, decisions, stable, description });
}
