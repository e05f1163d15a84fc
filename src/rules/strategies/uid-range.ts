import { z } from 'zod';
import { IdRange } from '../../config/primitives.js';
import { defineStrategy } from '../strategy.js';

/**
 * Numeric user id inside one of several inclusive ranges. Ranges are sorted into typed arrays
 * at compile time and looked up by binary search, so thousands of ranges cost ~log2(n) steps.
 */
const UidRangeConfig = z
  .strictObject({
    from: IdRange.shape.from.optional().meta({ description: 'First user id (inclusive); shorthand for a single range.' }),
    to: IdRange.shape.to.optional().meta({ description: 'Last user id (inclusive); shorthand for a single range.' }),
    ranges: z.array(IdRange).min(1).optional().meta({ description: 'Several inclusive ranges; they must not overlap.' }),
  })
  .superRefine((config, ctx) => {
    const hasSingle = config.from !== undefined || config.to !== undefined;
    if (hasSingle && config.ranges) {
      ctx.addIssue({ code: 'custom', message: 'give either from/to or ranges, not both' });
      return;
    }
    if (!hasSingle && !config.ranges) {
      ctx.addIssue({ code: 'custom', message: 'give from and to, or ranges' });
      return;
    }
    if (hasSingle) {
      if (config.from === undefined) ctx.addIssue({ code: 'custom', path: ['from'], message: 'required with to' });
      if (config.to === undefined) ctx.addIssue({ code: 'custom', path: ['to'], message: 'required with from' });
      if (config.from !== undefined && config.to !== undefined && config.from > config.to) {
        ctx.addIssue({ code: 'custom', path: ['to'], message: `range is inverted: to (${config.to}) is below from (${config.from})` });
      }
      return;
    }
    const ranges = config.ranges!;
    ranges.forEach((range, i) => {
      if (range.from > range.to) {
        ctx.addIssue({ code: 'custom', path: ['ranges', i, 'to'], message: `range is inverted: to (${range.to}) is below from (${range.from})` });
      }
    });
    const order = ranges.map((range, i) => ({ range, i })).sort((a, b) => a.range.from - b.range.from);
    for (let k = 1; k < order.length; k++) {
      const previous = order[k - 1]!;
      const current = order[k]!;
      if (current.range.from <= previous.range.to) {
        ctx.addIssue({
          code: 'custom',
          path: ['ranges', current.i],
          message: `overlaps ranges[${previous.i}] (${previous.range.from}..${previous.range.to})`,
        });
      }
    }
  })
  .meta({ description: 'Numeric user id inside one of the inclusive ranges. Callers without a numeric id never match.' });

export type UidRangeConfig = z.infer<typeof UidRangeConfig>;

/** Index of the last element of `sorted` that is `<= value`; -1 when every element is above it. */
export function lastAtOrBelow(sorted: Float64Array, value: number): number {
  let low = 0;
  let high = sorted.length - 1;
  let found = -1;
  while (low <= high) {
    const mid = (low + high) >>> 1;
    if (sorted[mid]! <= value) {
      found = mid;
      low = mid + 1;
    } else {
      high = mid - 1;
    }
  }
  return found;
}

export function normalizeRanges(config: UidRangeConfig): { from: number; to: number }[] {
  return config.ranges ?? [{ from: config.from!, to: config.to! }];
}

export const uidRange = defineStrategy({
  kind: 'uidRange',
  schema: UidRangeConfig,
  inputs: () => [{ kind: 'identity' }],
  compile(config) {
    const sorted = [...normalizeRanges(config)].sort((a, b) => a.from - b.from);
    const from = Float64Array.from(sorted, (r) => r.from);
    const to = Float64Array.from(sorted, (r) => r.to);
    return (facts) => {
      const id = facts.numericUserId;
      if (id === undefined) return false;
      const i = lastAtOrBelow(from, id);
      return i >= 0 && id <= to[i]!;
    };
  },
});
