import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { diffValues, formatChanges } from '../../src/control/diff.js';

describe('diffValues', () => {
  it('is empty exactly when the two JSON values are equal', () => {
    const json = fc.jsonValue({ maxDepth: 3 });
    fc.assert(
      fc.property(json, json, (rawA, rawB) => {
        // As a document travels: through JSON.
        const [a, b] = [JSON.parse(JSON.stringify(rawA)) as unknown, JSON.parse(JSON.stringify(rawB)) as unknown];
        expect(diffValues(a, a)).toEqual([]);
        expect(diffValues(a, b).length === 0).toBe(isDeepStrictEqual(a, b));
      }),
      { numRuns: 500 },
    );
  });

  it('names each change by its path', () => {
    const before = { upstreams: { 'app-v1': { servers: ['http://a'] } }, services: [{ name: 's', release: { rules: [1, 2] } }] };
    const after = { upstreams: { 'app-v1': { servers: ['http://b'] }, 'a b': {} }, services: [{ name: 's', release: { rules: [1] } }] };
    const changes = diffValues(before, after);
    expect(formatChanges(changes)).toEqual([
      '~ upstreams.app-v1.servers[0]: "http://a" → "http://b"',
      '+ upstreams["a b"]: {}',
      '- services[0].release.rules[1]: 2',
    ]);
  });
});
