import { z } from 'zod';
import { BUCKETS, bucketOf, deriveSeed } from '../hash.js';
import type { RequestFacts } from '../facts.js';
import { defineStrategy } from '../strategy.js';

/**
 * Sticky percentage of callers by identity: `bucket = murmur3_x86_32(utf8(userId), seed) %
 * 10000`, in when `bucket < cut` with `cut = round(percent * 100)` (see src/rules/hash.ts for
 * the exact, reproducible definition). The seed is `deriveSeed(releaseSeed, salt)`.
 */
const PercentageConfig = z
  .strictObject({
    percent: z
      .number({ message: 'expected a number from 0 to 100' })
      .min(0, { message: 'percent is at least 0' })
      .max(100, { message: 'percent is at most 100' })
      .refine((percent) => Math.abs(percent * 100 - Math.round(percent * 100)) < 1e-6, {
        message: 'percent has at most two decimals (buckets are 0.01 %)',
      })
      .meta({ description: 'Share of callers, 0 to 100, at most two decimals. Raising it only adds callers; lowering it only removes them.' }),
    salt: z
      .string()
      .min(1)
      .max(64)
      .optional()
      .meta({ description: 'Re-buckets callers independently of other percentage rules of the same release (e.g. a second experiment).' }),
  })
  .meta({ description: 'A sticky share of identified callers, by a hash of their id. 0 is nobody, 100 is every caller with an id; callers without one never match.' });

export type PercentageConfig = z.infer<typeof PercentageConfig>;

/** The bucket threshold of a percentage: buckets below it are in. */
export function cutOf(percent: number): number {
  return Math.round(percent * 100);
}

const nobody = () => false;
// 100 % needs no hash, but still an identity: an unknown caller is never sent to the candidate
// (anonymous callers get an id cookie first when the release asks for it).
const everyoneIdentified = (facts: RequestFacts) => facts.userId !== undefined && facts.userId.length > 0;

/** Sticky percentage: the seed and the cut are fixed at compile, so a caller's answer never drifts. */
export const percentage = defineStrategy({
  kind: 'percentage',
  schema: PercentageConfig,
  inputs: (config) => (config.percent === 0 ? [] : [{ kind: 'identity' }]),
  compile(config, context) {
    const cut = cutOf(config.percent);
    // 0 % is nobody and 100 % every identified caller: no hash is needed to decide.
    if (cut <= 0) return nobody;
    if (cut >= BUCKETS) return everyoneIdentified;
    const seed = deriveSeed(context.releaseSeed, config.salt);
    return (facts) => {
      const key = facts.userId;
      // Never hash an empty key: every such caller would share one constant bucket.
      if (key === undefined || key.length === 0) return false;
      return bucketOf(key, seed) < cut;
    };
  },
});
