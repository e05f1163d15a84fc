import { describe, expect, it } from 'vitest';
import { cidr } from '../../../src/rules/strategies/cidr.js';
import type { Matcher } from '../../../src/rules/strategy.js';
import { parsedRule, ruleIssues } from '../../helpers/documents.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(cidr, {
  valid: [{ cidrs: ['10.0.0.0/8'] }, { cidrs: ['2001:db8::/32', '192.168.0.0/16', '203.0.113.7'] }],
  invalid: [
    { config: { cidrs: [] }, path: '.cidrs' },
    { config: { cidrs: ['10.0.0.0/8', '10.0.0.0/33'] }, path: '.cidrs[1]' },
    { config: { cidrs: ['10.1.0.0/8'] }, path: '.cidrs[0]' },
    { config: { cidrs: ['office'] }, path: '.cidrs[0]' },
    { config: { cidrs: '10.0.0.0/8' }, path: '.cidrs' },
  ],
  factsThatMatch: [{ config: { cidrs: ['10.0.0.0/8'] }, facts: { clientIp: '10.9.9.9' } }, { config: { cidrs: ['10.0.0.0/8'] }, facts: { clientIp: '::ffff:10.9.9.9' } }],
  factsThatDoNotMatch: [{ config: { cidrs: ['10.0.0.0/8'] }, facts: { clientIp: '11.0.0.1' } }],
  // No usable client IP: what a data plane without a peer address would give.
  factsWithoutInput: [{ clientIp: '' }, { clientIp: 'unknown' }, { clientIp: '[::1]' }],
});

const issuesOf = (config: unknown) => ruleIssues(cidr, config);

function compile(config: unknown): Matcher {
  return cidr.compile(parsedRule(cidr, config), { storeValue: () => undefined, releaseSeed: 'checkout' });
}

describe('cidr strategy', () => {
  it('refuses bad CIDRs with the path of the entry', () => {
    const at = 'services[0].release.rules[0].cidr';
    expect(issuesOf({ cidrs: [] })).toEqual([`${at}.cidrs: give at least one CIDR`]);
    expect(issuesOf({ cidrs: ['10.0.0.0/8', '10.0.0.0/33'] })).toEqual([
      `${at}.cidrs[1]: expected a CIDR like 10.0.0.0/8 or 2001:db8::/32, got "10.0.0.0/33": an IPv4 prefix is at most /32`,
    ]);
    expect(issuesOf({ cidrs: ['10.1.0.0/8'] })).toEqual([
      `${at}.cidrs[0]: "10.1.0.0/8" has bits set after the /8 prefix; write the network address 10.0.0.0/8`,
    ]);
    expect(issuesOf({ cidrs: ['2001:db8::/129'] })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.cidr\.cidrs\[0\]: .*at most \/128/);
    expect(issuesOf({ cidrs: ['office'] })[0]).toMatch(/^services\[0\]\.release\.rules\[0\]\.cidr\.cidrs\[0\]: expected a CIDR/);
  });

  it('matches the client IP against IPv4 and IPv6 networks', () => {
    const match = compile({ cidrs: ['10.0.0.0/8', '192.168.1.7', '2001:db8::/32'] });
    const truth: [string, boolean][] = [
      ['10.2.3.4', true], ['::ffff:10.2.3.4', true], ['192.168.1.7', true], ['192.168.1.8', false],
      ['2001:db8:1::5', true], ['2001:db9::1', false], ['11.0.0.1', false], ['', false], ['not-an-ip', false],
    ];
    for (const [clientIp, expected] of truth) expect(match(makeFacts({ clientIp })), clientIp).toBe(expected);
  });

  it('reads the client IP', () => {
    expect(cidr.inputs({ cidrs: ['10.0.0.0/8'] })).toEqual([{ kind: 'clientIp' }]);
  });
});
