import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { uidModulo } from '../../../src/rules/strategies/uid-modulo.js';
import type { Matcher } from '../../../src/rules/strategy.js';
import { parsedRule, ruleIssues } from '../../helpers/documents.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(uidModulo, {
  valid: [{ modulo: 100, remainders: [0, 1, 2] }, { modulo: 2, remainders: [1] }, { modulo: 1_000_000, remainders: [999_999] }],
  invalid: [
    { config: { modulo: 1, remainders: [0] }, path: '.modulo' },
    { config: { modulo: '10', remainders: [0] }, path: '.modulo' },
    { config: { modulo: 10, remainders: [] }, path: '.remainders' },
    { config: { modulo: 10, remainders: [3, 10] }, path: '.remainders[1]' },
    { config: { modulo: 10, remainders: [3, 3] }, path: '.remainders[1]' },
    { config: { modulo: 10, remainders: [0.5] }, path: '.remainders[0]' },
    { config: { remainders: [1] }, path: '.modulo' },
  ],
  factsThatMatch: [{ config: { modulo: 100, remainders: [0, 1, 2] }, facts: { userId: '1201' } }],
  factsThatDoNotMatch: [{ config: { modulo: 100, remainders: [0, 1, 2] }, facts: { userId: '1203' } }],
  factsWithoutInput: [{}, { userId: 'alice' }, { userId: '0101' }],
});

const issuesOf = (config: unknown) => ruleIssues(uidModulo, config);

function compile(config: unknown): Matcher {
  return uidModulo.compile(parsedRule(uidModulo, config), { storeValue: () => undefined, releaseSeed: 'checkout' });
}

describe('uidModulo', () => {
  it('refuses bad configs with the path of the field', () => {
    const at = 'services[0].release.rules[0].uidModulo';
    expect(issuesOf({ modulo: 1, remainders: [0] })).toEqual([`${at}.modulo: modulo must be at least 2`]);
    expect(issuesOf({ modulo: 10.5, remainders: [0] })).toEqual([`${at}.modulo: expected an integer`]);
    expect(issuesOf({ modulo: 10, remainders: [] })).toEqual([`${at}.remainders: give at least one remainder`]);
    expect(issuesOf({ modulo: 10, remainders: [1, -1] })).toEqual([`${at}.remainders[1]: a remainder is at least 0`]);
    expect(issuesOf({ modulo: 10, remainders: [1, 10, 1] })).toEqual([
      `${at}.remainders[1]: remainder 10 is not below modulo 10`,
      `${at}.remainders[2]: remainder 1 is listed twice`,
    ]);
  });

  it('matches ids by their last digits, negative ids by their absolute value', () => {
    const match = compile({ modulo: 100, remainders: [0, 1, 2] });
    const truth: [string | undefined, boolean][] = [
      ['100', true], ['1201', true], ['2', true], ['-1201', true], ['0', true],
      ['103', false], ['99', false], ['12a', false], ['0101', false], ['alice', false], [undefined, false],
    ];
    for (const [userId, expected] of truth) expect(match(makeFacts(userId === undefined ? {} : { userId })), String(userId)).toBe(expected);
  });

  it('agrees with the arithmetic for table and Set sized moduli (property)', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: 2, max: 1000 }), fc.integer({ min: 70_000, max: 1_000_000_000 })),
        fc.array(fc.nat(), { minLength: 1, maxLength: 10 }),
        // canonicalNumericId reads at most 16 characters, sign included.
        fc.array(fc.integer({ min: -(10 ** 15) + 1, max: Number.MAX_SAFE_INTEGER }), { minLength: 1, maxLength: 20 }),
        (modulo, raw, ids) => {
          const remainders = [...new Set(raw.map((r) => r % modulo))];
          const match = compile({ modulo, remainders });
          for (const id of ids) {
            expect(match(makeFacts({ userId: String(id) }))).toBe(remainders.includes(Math.abs(id) % modulo));
          }
          for (const r of remainders) expect(match(makeFacts({ userId: String(modulo * 3 + r) }))).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });
});
