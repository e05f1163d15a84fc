import { describe, expect, it } from 'vitest';
import { header } from '../../../src/rules/strategies/header.js';
import { makeFacts } from '../../helpers/facts.js';
import { strategyContract } from './contract.js';

strategyContract(header, {
  valid: [
    { name: 'X-Canary', present: true },
    { name: 'x-canary', equals: 'on' },
    { name: 'x-canary', oneOf: ['a', 'b'] },
    { name: 'x-canary', regex: '^beta-' },
  ],
  invalid: [
    { config: { name: 'x-canary' }, path: '' },
    { config: { name: 'x-canary', equals: 'a', regex: 'b' }, path: '' },
    { config: { name: 'bad header', present: true }, path: '.name' },
    { config: { name: 'x', regex: '(' }, path: '.regex' },
    { config: { name: 'x', oneOf: [] }, path: '.oneOf' },
    { config: { name: 'x', present: false }, path: '.present' },
    { config: { name: 'x', equals: 1 }, path: '.equals' },
    { config: { name: 'x', equals: 'a', nope: 1 }, path: '.nope' },
  ],
  factsThatMatch: [
    { config: { name: 'X-Canary', present: true }, facts: { headers: { 'x-canary': '' } } },
    { config: { name: 'x-canary', equals: 'on' }, facts: { headers: { 'X-Canary': 'on' } } },
    { config: { name: 'x-canary', oneOf: ['a', 'b'] }, facts: { headers: { 'x-canary': 'b' } } },
    { config: { name: 'x-canary', regex: '^beta-' }, facts: { headers: { 'x-canary': 'beta-7' } } },
  ],
  factsThatDoNotMatch: [
    { config: { name: 'x-canary', equals: 'on' }, facts: { headers: { 'x-canary': 'ON' } } },
    { config: { name: 'x-canary', oneOf: ['a', 'b'] }, facts: { headers: { 'x-canary': 'c' } } },
    { config: { name: 'x-canary', regex: '^beta-' }, facts: { headers: { 'x-canary': 'not-beta-7' } } },
  ],
  factsWithoutInput: [{}, { headers: { 'x-other': 'on' } }, { userId: '5', cookies: { 'x-canary': 'on' } }],
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
