import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BUCKETS, bucketOf, deriveSeed } from '../../../src/rules/hash.js';
import { percentage } from '../../../src/rules/strategies/percentage.js';
import type { Matcher } from '../../../src/rules/strategy.js';
import { parsedRule, ruleIssues } from '../../helpers/documents.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(percentage, {
  valid: [{ percent: 0 }, { percent: 0.01 }, { percent: 12.34 }, { percent: 50, salt: 'exp-2' }, { percent: 100 }],
  invalid: [
    { config: { percent: 12.345 }, path: '.percent' },
    { config: { percent: 101 }, path: '.percent' },
    { config: { percent: -0.01 }, path: '.percent' },
    { config: { percent: '5' }, path: '.percent' },
    { config: {}, path: '.percent' },
    { config: { percent: 5, salt: '' }, path: '.salt' },
    { config: { percent: 5, seed: 3 }, path: '.seed' },
  ],
  factsThatMatch: [
    { config: { percent: 100 }, facts: { userId: 'anyone' } },
    // Golden: id "42" is bucket 1560 of release "svc" (the contract's release seed).
    { config: { percent: 15.61 }, facts: { userId: '42' } },
  ],
  factsThatDoNotMatch: [
    { config: { percent: 0 }, facts: { userId: '42' } },
    { config: { percent: 15.6 }, facts: { userId: '42' } },
  ],
  factsWithoutInput: [{}, { headers: { 'x-user-id': '42' } }, { clientIp: '10.0.0.1' }],
});

const issuesOf = (config: unknown) => ruleIssues(percentage, config);

/** Parses the config through the real document schema, then compiles it. */
function compile(config: unknown, releaseSeed = 'checkout'): Matcher {
  return percentage.compile(parsedRule(percentage, config), { storeValue: () => undefined, releaseSeed });
}

const asUser = (userId: string) => makeFacts({ userId });

describe('percentage config', () => {
  it('accepts 0 to 100 with up to two decimals, and a salt', () => {
    for (const percent of [0, 0.01, 1, 12.34, 50, 99.99, 100]) expect(issuesOf({ percent }), String(percent)).toEqual([]);
    expect(issuesOf({ percent: 5, salt: 'experiment-2' })).toEqual([]);
  });

  it('refuses bad values with the path of the field', () => {
    const at = 'services[0].release.rules[0].percentage';
    expect(issuesOf({ percent: 12.345 })).toEqual([`${at}.percent: percent has at most two decimals (buckets are 0.01 %)`]);
    expect(issuesOf({ percent: 101 })).toEqual([`${at}.percent: percent is at most 100`]);
    expect(issuesOf({ percent: -1 })).toEqual([`${at}.percent: percent is at least 0`]);
    expect(issuesOf({ percent: '5' })[0]).toMatch(new RegExp(`^${at.replace(/[.[\]]/g, '\\$&')}\\.percent: `));
    expect(issuesOf({})[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.percentage\.percent: /);
    expect(issuesOf({ percent: 5, salt: '' })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.percentage\.salt: /);
    expect(issuesOf({ percent: 5, sticky: true })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.percentage(\.sticky)?: .*sticky/);
  });
});

describe('percentage matcher', () => {
  it('0 % is nobody and 100 % is every caller with an id', () => {
    const none = compile({ percent: 0 });
    const all = compile({ percent: 100 });
    for (const facts of [asUser('1'), asUser('alice'), asUser('😀')]) {
      expect(none(facts)).toBe(false);
      expect(all(facts)).toBe(true);
    }
    expect(all(makeFacts())).toBe(false);
  });

  it('gives no answer for callers without an id, and never hashes an empty id', () => {
    const half = compile({ percent: 99.99 });
    expect(half(makeFacts())).toBe(false);
    for (const percent of [99.99, 100]) {
      const empty = makeFacts();
      empty.userId = '';
      expect(compile({ percent })(empty)).toBe(false);
    }
  });

  it('cuts at the golden bucket: id "42" is bucket 5473 of release "checkout"', () => {
    expect(bucketOf('42', deriveSeed('checkout'))).toBe(5473);
    expect(compile({ percent: 54.73 })(asUser('42'))).toBe(false);
    expect(compile({ percent: 54.74 })(asUser('42'))).toBe(true);
    // Another release buckets the same id elsewhere; a salt re-buckets within a release.
    expect(bucketOf('42', deriveSeed('search'))).not.toBe(5473);
    expect(bucketOf('42', deriveSeed('checkout', 'b'))).not.toBe(5473);
  });

  it('is monotonic: raising the percentage only adds callers (property)', () => {
    const percent = fc.integer({ min: 0, max: BUCKETS }).map((n) => n / 100);
    const key = fc.oneof(fc.string({ minLength: 1, maxLength: 40 }), fc.nat().map(String), fc.uuid());
    fc.assert(
      fc.property(percent, percent, fc.array(key, { minLength: 1, maxLength: 50 }), fc.string({ maxLength: 12 }), (a, b, keys, releaseSeed) => {
        const [low, high] = a <= b ? [a, b] : [b, a];
        const inLow = compile({ percent: low }, releaseSeed);
        const inHigh = compile({ percent: high }, releaseSeed);
        for (const k of keys) if (inLow(asUser(k))) expect(inHigh(asUser(k)), `${k} at ${low} but not ${high}`).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('is sticky: the same id always gets the same answer, across compiles', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }), fc.integer({ min: 0, max: BUCKETS }), (id, cents) => {
        const first = compile({ percent: cents / 100 });
        const second = compile({ percent: cents / 100 });
        expect(first(asUser(id))).toBe(first(asUser(id)));
        expect(first(asUser(id))).toBe(second(asUser(id)));
      }),
      { numRuns: 300 },
    );
  });

  it('spreads 100k ids uniformly over buckets (chi-square) and hits the share', () => {
    const idForms = { numeric: (id: number) => String(id), prefixed: (id: number) => `user-${id}` };
    for (const [releaseSeed, form] of [['checkout', 'numeric'], ['search', 'numeric'], ['checkout', 'prefixed']] as const) {
      const seed = deriveSeed(releaseSeed);
      const bins = new Float64Array(100); // 100 bins of 100 buckets each
      for (let id = 1; id <= 100_000; id++) bins[Math.floor(bucketOf(idForms[form](id), seed) / 100)]! += 1;
      const expected = 100_000 / 100;
      let chiSquare = 0;
      for (const observed of bins) chiSquare += (observed - expected) ** 2 / expected;
      // 99 degrees of freedom: mean 99, sd ~14; 160 is beyond p = 0.0001.
      expect(chiSquare, `${releaseSeed} ${form}`).toBeLessThan(160);

      const tenPercent = compile({ percent: 10 }, releaseSeed);
      let inside = 0;
      const facts = makeFacts({ userId: '1' });
      for (let id = 1; id <= 100_000; id++) {
        facts.userId = idForms[form](id);
        if (tenPercent(facts)) inside++;
      }
      expect(Math.abs(inside / 100_000 - 0.1), `${releaseSeed} ${form}`).toBeLessThan(0.005);
    }
  });

  it('declares identity as its input, and none when it needs no id', () => {
    expect(percentage.inputs({ percent: 5 })).toEqual([{ kind: 'identity' }]);
    expect(percentage.inputs({ percent: 0 })).toEqual([]);
    expect(percentage.inputs({ percent: 100 })).toEqual([{ kind: 'identity' }]);
  });
});
