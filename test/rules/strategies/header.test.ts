import { describe, expect, it } from 'vitest';
import { header } from '../../../src/rules/strategies/header.js';
import { makeFacts } from '../../helpers/facts.js';
import { valueTestStrategyCases } from './value-test-cases.js';

valueTestStrategyCases({
  strategy: header,
  kind: 'header',
  factsKey: 'headers',
  noun: 'header',
  badName: { name: 'bad header', message: 'expected an HTTP header name (letters, digits, - and token characters), got "bad header"' },
  // A header's name is case-insensitive, however the config or the request spell it.
  more: {
    valid: [{ name: 'X-Canary', present: true }],
    invalid: [
      { config: { name: 'x', equals: 1 }, path: '.equals' },
      { config: { name: 'x', equals: 'a', nope: 1 }, path: '.nope' },
    ],
    factsThatMatch: [
      { config: { name: 'X-Canary', present: true }, facts: { headers: { 'x-canary': '' } } },
      { config: { name: 'x-canary', equals: 'on' }, facts: { headers: { 'X-Canary': 'on' } } },
    ],
    factsThatDoNotMatch: [{ config: { name: 'x-canary', equals: 'on' }, facts: { headers: { 'x-canary': 'ON' } } }],
    factsWithoutInput: [{ userId: '5', cookies: { 'x-canary': 'on' } }],
  },
});

describe('header strategy', () => {
  it('reads its header name in lower case whatever the config spelled', () => {
    const config = header.schema.parse({ name: 'X-Canary', equals: 'on' });
    expect(header.inputs(config)).toEqual([{ kind: 'header', name: 'x-canary' }]);
  });

  it('a regex keeps no state between requests (no lastIndex drift)', () => {
    const matcher = header.compile(header.schema.parse({ name: 'x', regex: 'a' }), { storeValue: () => undefined, releaseSeed: 's' });
    const facts = makeFacts({ headers: { x: 'aaa' } });
    for (let i = 0; i < 5; i++) expect(matcher(facts)).toBe(true);
  });
});
