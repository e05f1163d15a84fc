import { describe, expect, it } from 'vitest';
import { formatIssues } from '../../../src/config/issues.js';
import { RoutingDocument } from '../../../src/config/schema.js';
import { cookie } from '../../../src/rules/strategies/cookie.js';
import type { Matcher } from '../../../src/rules/strategy.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(cookie, {
  valid: [
    { name: 'beta', present: true },
    { name: 'beta', equals: 'on' },
    { name: 'beta', oneOf: ['a', 'b'] },
    { name: 'beta', prefix: 'ios-' },
    { name: 'beta', regex: '^v[23]$' },
  ],
  invalid: [
    { config: { name: 'beta' }, path: '' },
    { config: { name: 'beta', equals: 'a', prefix: 'b' }, path: '' },
    { config: { name: 'a b', present: true }, path: '.name' },
    { config: { name: 'beta', prefix: '' }, path: '.prefix' },
    { config: { name: 'beta', regex: '(' }, path: '.regex' },
    { config: { name: 'beta', oneOf: [] }, path: '.oneOf' },
    { config: { name: 'beta', present: true, suffix: 'x' }, path: '.suffix' },
  ],
  factsThatMatch: [{ config: { name: 'beta', prefix: 'ios-' }, facts: { cookies: { beta: 'ios-7' } } }],
  factsThatDoNotMatch: [{ config: { name: 'beta', prefix: 'ios-' }, facts: { cookies: { beta: 'android-7' } } }],
  factsWithoutInput: [{}, { headers: { beta: 'ios-7' } }, { cookies: { other: 'on' } }],
});

function documentWith(rule: unknown): unknown {
  return {
    upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
    services: [{ name: 'checkout', stable: 'v1', release: { candidate: 'v2', rules: [rule] } }],
  };
}

function issuesOf(config: unknown): string[] {
  const result = RoutingDocument.safeParse(documentWith({ cookie: config }), { reportInput: true });
  return result.success ? [] : formatIssues(result.error);
}

function compile(config: unknown): Matcher {
  const parsed = RoutingDocument.parse(documentWith({ cookie: config })).services[0]!.release!.rules[0]!.cookie!;
  return cookie.compile(parsed, { storeValue: () => undefined, releaseSeed: 'checkout' });
}

/** Truth table: each value (undefined = not sent) and whether it matches. */
function expectTable(config: unknown, table: [string | undefined, boolean][]): void {
  const match = compile(config);
  for (const [value, expected] of table) {
    const facts = makeFacts({ cookies: value === undefined ? { other: 'x' } : { beta: value } });
    expect(match(facts), `${JSON.stringify(config)} on ${JSON.stringify(value)}`).toBe(expected);
  }
}

describe('cookie', () => {
  it('refuses bad configs with the path of the field', () => {
    const at = 'services[0].release.rules[0].cookie';
    expect(issuesOf({ name: 'beta' })).toEqual([`${at}: give one of present, equals, oneOf, prefix, regex`]);
    expect(issuesOf({ name: 'beta', equals: 'a', prefix: 'b' })).toEqual([`${at}: give only one of equals, prefix`]);
    expect(issuesOf({ name: 'a b', present: true })).toEqual([`${at}.name: expected a cookie name (letters, digits and token characters), got "a b"`]);
    expect(issuesOf({ name: 'beta', prefix: '' })).toEqual([`${at}.prefix: expected at least 1 character`]);
    expect(issuesOf({ name: 'beta', regex: '(' })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.cookie\.regex: invalid regular expression/);
    expect(issuesOf({ name: 'beta', oneOf: [] })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.cookie\.oneOf: /);
    expect(issuesOf({ name: 'beta', present: false })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.cookie\.present: /);
  });

  it('present: sent at all, even empty', () => {
    expectTable({ name: 'beta', present: true }, [['1', true], ['', true], [undefined, false]]);
  });

  it('equals: exact and case-sensitive', () => {
    expectTable({ name: 'beta', equals: 'on' }, [['on', true], ['On', false], ['on ', false], ['', false], [undefined, false]]);
  });

  it('oneOf: any of the exact values', () => {
    expectTable({ name: 'beta', oneOf: ['a', 'b'] }, [['a', true], ['b', true], ['ab', false], ['', false], [undefined, false]]);
  });

  it('prefix: starts with', () => {
    expectTable({ name: 'beta', prefix: 'ios-7.' }, [['ios-7.1', true], ['ios-7.', true], ['ios-8.0', false], ['IOS-7.1', false], [undefined, false]]);
  });

  it('regex: a match anywhere unless anchored', () => {
    expectTable({ name: 'beta', regex: 'v[2-3]' }, [['v2', true], ['app-v3-x', true], ['v4', false], [undefined, false]]);
    expectTable({ name: 'beta', regex: '^v[2-3]$' }, [['v2', true], ['app-v3', false], [undefined, false]]);
  });

  it('reads only its own cookie and declares it', () => {
    expect(cookie.inputs({ name: 'beta', present: true })).toEqual([{ kind: 'cookie', name: 'beta' }]);
    expect(compile({ name: 'beta', present: true })(makeFacts({ headers: { beta: '1' } }))).toBe(false);
  });
});
