import type { RequestFacts } from './facts.js';
import type { Decision } from './snapshot.js';
import type { Matcher, RequestInput } from './strategy.js';

/**
 * What explain reads of a compiled service: a description built at compile time beside the
 * `decide` function, from the same compiled rules, so explaining a request evaluates exactly
 * what the data plane evaluates.
 */

/** One rule as compiled: its matcher, the Decision it makes and the inputs it reads. */
export interface CompiledRule {
  readonly index: number;
  readonly matches: Matcher;
  readonly decision: Decision;
  readonly inputs: readonly RequestInput[];
}

/** The split of a release, as explain shows it: which candidates take which buckets. */
export interface SplitDescription {
  readonly seed: number;
  readonly candidates: readonly string[];
  readonly from: readonly number[];
  readonly to: readonly number[];
}

export interface ServiceDescription {
  /** The release's state; `none` without a release. */
  readonly state: 'idle' | 'canary' | 'full' | 'none';
  /** The compiled rules in order (empty unless the release is in canary). */
  readonly rules: readonly CompiledRule[];
  /** The split, when the release has weighted candidates in canary. */
  readonly split: SplitDescription | undefined;
  /** Resolves identity like the data plane, except that no anonymous id is minted. */
  resolveIdentityWithoutMinting(facts: RequestFacts): void | Promise<void>;
}
