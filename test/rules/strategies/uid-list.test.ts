import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { uidList } from '../../../src/rules/strategies/uid-list.js';
import type { Matcher } from '../../../src/rules/strategy.js';
import { parsedRule, ruleIssues } from '../../helpers/documents.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(uidList, {
  valid: [{ ids: [1, 2, 3] }, { ids: ['alice', 7, '007'] }],
  invalid: [
    { config: { ids: [] }, path: '.ids' },
    { config: { ids: ['a', ''] }, path: '.ids[1]' },
    { config: { ids: [1, 2.5] }, path: '.ids[1]' },
    { config: { ids: [true] }, path: '.ids[0]' },
    { config: {}, path: '.ids' },
    { config: { ids: [1], extra: 1 }, path: '.extra' },
  ],
  factsThatMatch: [{ config: { ids: ['alice', 7] }, facts: { userId: '7' } }, { config: { ids: ['alice', 7] }, facts: { userId: 'alice' } }],
  factsThatDoNotMatch: [{ config: { ids: ['alice', 7] }, facts: { userId: '007' } }],
  factsWithoutInput: [{}, { headers: { 'x-user-id': '7' } }],
});

const issuesOf = (config: unknown) => ruleIssues(uidList, config);

function compile(config: unknown): Matcher {
  return uidList.compile(parsedRule(uidList, config), { storeValue: () => undefined, releaseSeed: 'checkout' });
}

describe('uidList', () => {
  it('refuses bad lists with the path of the id', () => {
    const at = 'services[0].release.rules[0].uidList';
    expect(issuesOf({ ids: [] })).toEqual([`${at}.ids: give at least one id`]);
    expect(issuesOf({ ids: ['a', ''] })).toEqual([`${at}.ids[1]: an id cannot be empty`]);
    expect(issuesOf({ ids: [1, 2.5] })).toEqual([`${at}.ids[1]: expected an id (a string or an integer), got 2.5`]);
    expect(issuesOf({ ids: ['x'.repeat(257)] })).toEqual([`${at}.ids[0]: an id is at most 256 characters`]);
    expect(issuesOf({ ids: [1], users: [2] })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.uidList(\.users)?: .*users/);
  });

  it('matches ids in canonical form: numbers as decimal, strings exactly', () => {
    const match = compile({ ids: [7, '42', 'alice', -3] });
    const truth: [string | undefined, boolean][] = [
      ['7', true], ['42', true], ['alice', true], ['-3', true],
      ['007', false], ['7.0', false], ['Alice', false], ['alice ', false], ['8', false], [undefined, false],
    ];
    for (const [userId, expected] of truth) expect(match(makeFacts(userId === undefined ? {} : { userId })), String(userId)).toBe(expected);
  });

  it('agrees with a naive includes over random lists and ids (property)', () => {
    const id = fc.oneof(fc.string({ minLength: 1, maxLength: 8 }), fc.integer({ min: -1000, max: 1000 }));
    fc.assert(
      fc.property(fc.array(id, { minLength: 1, maxLength: 30 }), fc.array(fc.oneof(id.map(String), fc.string({ maxLength: 8 })), { maxLength: 30 }), (ids, probes) => {
        const match = compile({ ids });
        const listed = ids.map(String);
        for (const probe of [...probes, ...listed]) {
          const facts = makeFacts({ userId: probe });
          expect(match(facts), probe).toBe(probe.length > 0 && listed.includes(probe));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('handles 100k ids: built once, looked up in constant time', () => {
    const ids = Array.from({ length: 100_000 }, (_, i) => (i % 2 === 0 ? i * 3 : `user-${i}`));
    const match = compile({ ids });
    expect(match(makeFacts({ userId: '299994' }))).toBe(true);
    expect(match(makeFacts({ userId: 'user-99999' }))).toBe(true);
    expect(match(makeFacts({ userId: '299995' }))).toBe(false);
    expect(match(makeFacts({ userId: 'user-100000' }))).toBe(false);
  });

  it('reads the identity', () => {
    expect(uidList.inputs({ ids: ['a'] })).toEqual([{ kind: 'identity' }]);
  });
});
