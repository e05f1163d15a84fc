import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lastAtOrBelow, uidRange } from '../../../src/rules/strategies/uid-range.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(uidRange, {
  valid: [{ from: 1, to: 5000 }, { ranges: [{ from: 1, to: 10 }, { from: 100, to: 200 }] }, { from: -5, to: -5 }],
  invalid: [
    { config: { from: '5k', to: 10 }, path: '.from' },
    { config: { from: 1.5, to: 10 }, path: '.from' },
    { config: { from: 10, to: 1 }, path: '.to' },
    { config: { from: 1 }, path: '.to' },
    { config: {}, path: '' },
    { config: { from: 1, to: 2, ranges: [{ from: 3, to: 4 }] }, path: '' },
    { config: { ranges: [{ from: 1, to: 10 }, { from: 5, to: 20 }] }, path: '.ranges[1]' },
    { config: { ranges: [{ from: 1, to: 'x' }] }, path: '.ranges[0].to' },
    { config: { ranges: [] }, path: '.ranges' },
    { config: { from: 1, to: 2, extra: true }, path: '.extra' },
  ],
  factsThatMatch: [
    { config: { from: 1, to: 5000 }, facts: { userId: '1' } },
    { config: { from: 1, to: 5000 }, facts: { userId: '5000' } },
    { config: { ranges: [{ from: 1, to: 10 }, { from: 100, to: 200 }] }, facts: { userId: '150' } },
  ],
  factsThatDoNotMatch: [
    { config: { from: 1, to: 5000 }, facts: { userId: '5001' } },
    { config: { from: 1, to: 5000 }, facts: { userId: '0' } },
    // Non-canonical forms never alias a number in range.
    { config: { from: 1, to: 5000 }, facts: { userId: '007' } },
    { config: { from: 1, to: 5000 }, facts: { userId: '7.0' } },
    { config: { ranges: [{ from: 1, to: 10 }, { from: 100, to: 200 }] }, facts: { userId: '50' } },
  ],
  factsWithoutInput: [{}, { userId: 'alice' }, { headers: { 'x-user-id': '5' } }],
});

describe('uidRange lookup', () => {
  // Disjoint sorted ranges from a sorted list of distinct cut points.
  const rangesArb = fc
    .uniqueArray(fc.integer({ min: -1_000_000, max: 1_000_000 }), { minLength: 2, maxLength: 8000, size: 'max' })
    .map((points) => {
      points.sort((a, b) => a - b);
      const ranges: { from: number; to: number }[] = [];
      for (let i = 0; i + 1 < points.length; i += 2) ranges.push({ from: points[i]!, to: points[i + 1]! });
      return ranges;
    });

  it('binary search over thousands of ranges equals a linear scan', () => {
    let largest = 0;
    fc.assert(
      fc.property(rangesArb, fc.array(fc.integer({ min: -1_100_000, max: 1_100_000 }), { minLength: 1, maxLength: 200 }), fc.boolean(), (ranges, ids, shuffle) => {
        expect(ranges.length).toBeGreaterThan(0);
        const given = shuffle ? [...ranges].reverse() : ranges;
        largest = Math.max(largest, ranges.length);
        const matcher = uidRange.compile({ ranges: given }, { storeValue: () => undefined, releaseSeed: 's' });
        // Probe the edges too: the bounds of every 40th range and of the last, and their neighbours.
        const edges = ranges.filter((_, i) => i % 40 === 0 || i === ranges.length - 1);
        const probes = [...ids, ...edges.flatMap((r) => [r.from - 1, r.from, r.to, r.to + 1])];
        for (const id of probes) {
          const linear = ranges.some((r) => r.from <= id && id <= r.to);
          expect(matcher(makeFacts({ userId: String(id) }))).toBe(linear);
        }
      }),
      { numRuns: 40 },
    );
    expect(largest).toBeGreaterThan(1000);
  });

  it('lastAtOrBelow finds the last element at or below the value', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer(), { maxLength: 300 }), fc.integer(), (values, probe) => {
        const sorted = Float64Array.from(values.sort((a, b) => a - b));
        let expected = -1;
        for (let i = 0; i < sorted.length; i++) if (sorted[i]! <= probe) expected = i;
        expect(lastAtOrBelow(sorted, probe)).toBe(expected);
      }),
    );
  });
});

describe('uidRange fromKey: the start bound', () => {
  const compileWith = (value: string, rangeStart?: 'inclusive' | 'exclusive') =>
    uidRange.compile(uidRange.schema.parse({ fromKey: 'Grayscale_Range', ...(rangeStart ? { rangeStart } : {}) }), {
      storeValue: (key) => (key === 'Grayscale_Range' ? value : undefined),
      releaseSeed: 's',
    });

  it('inclusive by default, and exclusive on request: idStart < id <= idEnd, as the recipe\'s `UserId > idStart`', () => {
    fc.assert(
      fc.property(fc.integer({ min: -1_000, max: 1_000 }), fc.integer({ min: 0, max: 50 }), fc.integer({ min: -1_100, max: 1_100 }), (start, width, id) => {
        const value = JSON.stringify({ idStart: start, idEnd: start + width });
        const facts = makeFacts({ userId: String(id) });
        expect(compileWith(value)(facts)).toBe(start <= id && id <= start + width);
        expect(compileWith(value, 'inclusive')(facts)).toBe(start <= id && id <= start + width);
        expect(compileWith(value, 'exclusive')(facts)).toBe(start < id && id <= start + width);
      }),
    );
  });

  it('rangeStart is refused without fromKey, naming the field', () => {
    const result = uidRange.schema.safeParse({ from: 1, to: 5, rangeStart: 'exclusive' });
    expect(result.success).toBe(false);
    expect(result.error!.issues.map((issue) => issue.path.join('.'))).toContain('rangeStart');
    expect(uidRange.schema.safeParse({ fromKey: 'k', rangeStart: 'open' }).success).toBe(false);
  });
});
