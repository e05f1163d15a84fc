import { z } from 'zod';
import { IdRange } from '../../config/primitives.js';
import { ConfigError } from '../../errors.js';
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
    fromKey: z
      .string()
      .min(1)
      .max(512)
      .optional()
      .meta({
        description:
          'Read the range from this store key instead, in the OpenResty recipe\'s form {"idStart":1,"idEnd":5000} (both bounds inclusive; see rangeStart), ' +
          'e.g. Grayscale_Range. Watched live; a malformed value is refused and the last good range stays; an absent key matches nobody.',
      }),
    rangeStart: z
      .enum(['inclusive', 'exclusive'])
      .optional()
      .meta({
        description:
          'With fromKey: whether idStart itself is in the range. `inclusive` (the default: idStart..idEnd, like every other graygate range) ' +
          'or `exclusive` (idStart < id <= idEnd, the `UserId > idStart` test of the original OpenResty recipe). idEnd is always inclusive.',
      }),
  })
  .superRefine((config, ctx) => {
    if (config.fromKey !== undefined) {
      if (config.from !== undefined || config.to !== undefined || config.ranges) {
        ctx.addIssue({ code: 'custom', message: 'give either fromKey or from/to/ranges, not both' });
      }
      return;
    }
    if (config.rangeStart !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['rangeStart'], message: 'only with fromKey (configured ranges are inclusive: write from as the first id in)' });
      return;
    }
    const hasSingle = config.from !== undefined || config.to !== undefined;
    if (hasSingle && config.ranges) {
      ctx.addIssue({ code: 'custom', message: 'give either from/to or ranges, not both' });
      return;
    }
    if (!hasSingle && !config.ranges) {
      ctx.addIssue({ code: 'custom', message: 'give from and to, ranges, or fromKey' });
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

/** The configured ranges (not for `fromKey`, whose range lives in the store). */
export function normalizeRanges(config: UidRangeConfig): { from: number; to: number }[] {
  return config.ranges ?? [{ from: config.from!, to: config.to! }];
}

/**
 * Parses the recipe's range value `{"idStart":N,"idEnd":M}` (inclusive); throws ConfigError
 * naming the key and what was found, so the last good range stays in force.
 */
export function parseStoredRange(key: string, value: string): { from: number; to: number } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    parsed = undefined;
  }
  const range = parsed as { idStart?: unknown; idEnd?: unknown } | undefined;
  const isBound = (bound: unknown): bound is number => typeof bound === 'number' && Number.isSafeInteger(bound);
  if (typeof range !== 'object' || range === null || !isBound(range.idStart) || !isBound(range.idEnd) || range.idStart > range.idEnd) {
    const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
    throw new ConfigError([
      `fromKey: store key ${JSON.stringify(key)} holds ${JSON.stringify(shown)}: expected {"idStart":N,"idEnd":M} with integers and idStart <= idEnd`,
    ]);
  }
  return { from: range.idStart, to: range.idEnd };
}

const matchesNobody = () => false;

export const uidRange = defineStrategy({
  kind: 'uidRange',
  schema: UidRangeConfig,
  inputs: () => [{ kind: 'identity' }],
  storeKeys: (config) => (config.fromKey !== undefined ? [config.fromKey] : []),
  compile(config, context) {
    let ranges: { from: number; to: number }[];
    if (config.fromKey !== undefined) {
      const value = context.storeValue(config.fromKey);
      // An absent key is a release nobody is in yet, exactly as in the recipe.
      if (value === undefined) return matchesNobody;
      const stored = parseStoredRange(config.fromKey, value);
      // The recipe's own test is `UserId > idStart`: an exclusive start is the next integer id.
      if (config.rangeStart === 'exclusive') stored.from += 1;
      // {"idStart":5,"idEnd":5} with an exclusive start holds no id, as in the recipe.
      if (stored.from > stored.to) return matchesNobody;
      ranges = [stored];
    } else {
      ranges = normalizeRanges(config);
    }
    const sorted = [...ranges].sort((a, b) => a.from - b.from);
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
