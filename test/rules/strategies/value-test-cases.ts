import { describe, expect, it } from 'vitest';
import type { Matcher, Strategy } from '../../../src/rules/strategy.js';
import { parsedRule, ruleIssues } from '../../helpers/documents.js';
import { makeFacts, type FactsInit } from '../../helpers/facts.js';
import { strategyContract, type StrategyContractCases } from './contract.js';

/** What differs between the strategies that test one named request value: header, cookie, query. */
export interface ValueTestStrategy<C> {
  readonly strategy: Strategy<C>;
  /** The input kind it declares (`{ kind, name }`), which is also its config key. */
  readonly kind: 'header' | 'cookie' | 'query';
  /** Where its values sit in the facts. */
  readonly factsKey: 'headers' | 'cookies' | 'query';
  /** A name the schema refuses, and the message it says about it. */
  readonly badName: { readonly name: string; readonly message: string };
  /** What the "reads only its own …" case calls the input. */
  readonly noun: string;
  /** Contract cases beyond the shared ones (a strategy's own rules, e.g. header names in any case). */
  readonly more?: Partial<StrategyContractCases>;
}

/**
 * The cases header, cookie and query share, since they test a value the same way (one of
 * present, equals, oneOf, prefix, regex): the strategy contract, config issues with their paths,
 * and a truth table per test. `beta` names the value; other inputs named `beta` never count.
 */
export function valueTestStrategyCases<C>(spec: ValueTestStrategy<C>): void {
  const { strategy, kind, factsKey } = spec;
  const carrying = (values: Record<string, string>): FactsInit => ({ [factsKey]: values });
  // The same name in another input: a header test must not read a cookie named beta, and so on.
  const elsewhere: FactsInit = kind === 'header' ? { cookies: { beta: 'ios-7' } } : { headers: { beta: 'ios-7' } };

  strategyContract(strategy, {
    valid: [
      { name: 'beta', present: true },
      { name: 'beta', equals: 'on' },
      { name: 'beta', oneOf: ['a', 'b'] },
      { name: 'beta', prefix: 'ios-' },
      { name: 'beta', regex: '^v[23]$' },
      ...(spec.more?.valid ?? []),
    ],
    invalid: [
      { config: { name: 'beta' }, path: '' },
      { config: { name: 'beta', equals: 'a', prefix: 'b' }, path: '' },
      { config: { name: spec.badName.name, present: true }, path: '.name' },
      { config: { name: 'beta', prefix: '' }, path: '.prefix' },
      { config: { name: 'beta', regex: '(' }, path: '.regex' },
      { config: { name: 'beta', oneOf: [] }, path: '.oneOf' },
      { config: { name: 'beta', present: true, suffix: 'x' }, path: '.suffix' },
      ...(spec.more?.invalid ?? []),
    ],
    factsThatMatch: [{ config: { name: 'beta', prefix: 'ios-' }, facts: carrying({ beta: 'ios-7' }) }, ...(spec.more?.factsThatMatch ?? [])],
    factsThatDoNotMatch: [{ config: { name: 'beta', prefix: 'ios-' }, facts: carrying({ beta: 'android-7' }) }, ...(spec.more?.factsThatDoNotMatch ?? [])],
    factsWithoutInput: [{}, elsewhere, carrying({ other: 'on' }), ...(spec.more?.factsWithoutInput ?? [])],
  });

  const compile = (config: unknown): Matcher => strategy.compile(parsedRule(strategy, config), { storeValue: () => undefined, releaseSeed: 'checkout' });
  /** Truth table: each value (undefined = not sent) and whether it matches. */
  const expectTable = (config: unknown, table: [string | undefined, boolean][]) => {
    const match = compile(config);
    for (const [value, expected] of table) {
      const facts = makeFacts(carrying(value === undefined ? { other: 'x' } : { beta: value }));
      expect(match(facts), `${JSON.stringify(config)} on ${JSON.stringify(value)}`).toBe(expected);
    }
  };

  describe(kind, () => {
    it('refuses bad configs with the path of the field', () => {
      const at = `services[0].release.rules[0].${kind}`;
      const issuesOf = (config: unknown) => ruleIssues(strategy, config);
      expect(issuesOf({ name: 'beta' })).toEqual([`${at}: give one of present, equals, oneOf, prefix, regex`]);
      expect(issuesOf({ name: 'beta', equals: 'a', prefix: 'b' })).toEqual([`${at}: give only one of equals, prefix`]);
      expect(issuesOf({ name: spec.badName.name, present: true })).toEqual([`${at}.name: ${spec.badName.message}`]);
      expect(issuesOf({ name: 'beta', prefix: '' })).toEqual([`${at}.prefix: expected at least 1 character`]);
      expect(issuesOf({ name: 'beta', regex: '(' })[0]).toMatch(new RegExp(`^services\\[0\\]\\.release\\.rules\\[0\\]\\.${kind}\\.regex: invalid regular expression`));
      expect(issuesOf({ name: 'beta', oneOf: [] })[0]).toMatch(new RegExp(`^services\\[0\\]\\.release\\.rules\\[0\\]\\.${kind}\\.oneOf: `));
      expect(issuesOf({ name: 'beta', present: false })[0]).toMatch(new RegExp(`^services\\[0\\]\\.release\\.rules\\[0\\]\\.${kind}\\.present: `));
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

    it(`reads only its own ${spec.noun} and declares it`, () => {
      expect(strategy.inputs(strategy.schema.parse({ name: 'beta', present: true }))).toEqual([{ kind, name: 'beta' }]);
      expect(compile({ name: 'beta', present: true })(makeFacts(elsewhere))).toBe(false);
    });
  });
}
