import { afterEach, describe, expect, it, vi } from 'vitest';
import { timeWindow } from '../../../src/rules/strategies/time-window.js';
import type { Matcher } from '../../../src/rules/strategy.js';
import { parsedRule, ruleIssues } from '../../helpers/documents.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(timeWindow, {
  // The clock is never a missing input, so the contract's "false without its input" check can
  // only be met by windows the real clock is outside of: one over, one not begun.
  valid: [{ to: '2001-01-01T00:00:00Z' }, { from: '2999-01-01T00:00:00Z' }, { from: '2000-01-01T00:00:00Z', to: '2001-01-01T00:00:00+02:00' }],
  invalid: [
    { config: {}, path: '' },
    { config: { from: '2026-12-01' }, path: '.from' },
    { config: { to: 'tomorrow' }, path: '.to' },
    { config: { from: '2026-12-02T00:00:00Z', to: '2026-12-01T00:00:00Z' }, path: '.to' },
    { config: { from: '2026-12-01T00:00:00Z', until: '2026-12-02T00:00:00Z' }, path: '.until' },
  ],
  factsThatMatch: [{ config: { from: '2000-01-01T00:00:00Z' }, facts: {} }],
  factsThatDoNotMatch: [{ config: { from: '2000-01-01T00:00:00Z', to: '2001-01-01T00:00:00Z' }, facts: {} }],
  factsWithoutInput: [{}, { headers: { date: 'Tue, 01 Dec 2026 09:00:00 GMT' } }],
});

const issuesOf = (config: unknown) => ruleIssues(timeWindow, config);

function compile(config: unknown): Matcher {
  return timeWindow.compile(parsedRule(timeWindow, config), { storeValue: () => undefined, releaseSeed: 'checkout' });
}

// The clock is outside what is tested: fake it (only Date, no timers).
afterEach(() => {
  vi.useRealTimers();
});
function at(iso: string): void {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(new Date(iso));
}

describe('timeWindow', () => {
  it('refuses bad windows with the path of the field', () => {
    const where = 'services[0].release.rules[0].timeWindow';
    expect(issuesOf({})).toEqual([`${where}: give from, to, or both`]);
    expect(issuesOf({ from: '2026-12-01' })).toEqual([`${where}.from: expected an ISO 8601 timestamp with a zone, like 2026-12-01T09:00:00Z, got "2026-12-01"`]);
    expect(issuesOf({ to: '2026-12-01T09:00:00' })).toEqual([
      `${where}.to: expected an ISO 8601 timestamp with a zone, like 2026-12-01T09:00:00Z, got "2026-12-01T09:00:00"`,
    ]);
    expect(issuesOf({ from: '2026-12-01T10:00:00Z', to: '2026-12-01T11:00:00+01:00' })).toEqual([
      `${where}.to: window is empty: to (2026-12-01T11:00:00+01:00) is not after from (2026-12-01T10:00:00Z)`,
    ]);
  });

  it('matches from (inclusive) to (exclusive), zones respected', () => {
    const match = compile({ from: '2026-12-01T09:00:00+01:00', to: '2026-12-01T10:00:00Z' });
    const truth: [string, boolean][] = [
      ['2026-12-01T07:59:59.999Z', false],
      ['2026-12-01T08:00:00.000Z', true],
      ['2026-12-01T09:59:59.999Z', true],
      ['2026-12-01T10:00:00.000Z', false],
    ];
    for (const [now, expected] of truth) {
      at(now);
      expect(match(makeFacts()), now).toBe(expected);
    }
  });

  it('an open end is open', () => {
    const since = compile({ from: '2026-12-01T00:00:00Z' });
    const until = compile({ to: '2026-12-01T00:00:00Z' });
    at('2030-01-01T00:00:00Z');
    expect([since(makeFacts()), until(makeFacts())]).toEqual([true, false]);
    at('2020-01-01T00:00:00Z');
    expect([since(makeFacts()), until(makeFacts())]).toEqual([false, true]);
  });

  it('reads the time', () => {
    expect(timeWindow.inputs({ from: '2026-12-01T00:00:00Z' })).toEqual([{ kind: 'time' }]);
  });
});
