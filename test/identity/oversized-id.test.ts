import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IdentitySourceConfig } from '../../src/config/schema.js';
import { buildIdentityChain } from '../../src/identity/chain.js';
import { MAX_USER_ID_LENGTH, oversizedIdStats, type IdentityContext } from '../../src/identity/source.js';
import { makeFacts } from '../helpers/facts.js';

const sources = (raw: unknown[]) => raw.map((source) => IdentitySourceConfig.parse(source));

/**
 * Ids longer than MAX_USER_ID_LENGTH from a header, a cookie or a query parameter are no id (the
 * caller goes to stable), and each one is counted per source kind: an operator sees callers who
 * pile into stable because their id is too long, instead of nothing.
 */
describe('over-long ids', () => {
  it('the limit is 256 characters, and the generated config reference says so for each source', () => {
    expect(MAX_USER_ID_LENGTH).toBe(256);
    const reference = readFileSync(new URL('../../docs/config.md', import.meta.url), 'utf8');
    for (const kind of ['header', 'cookie', 'query']) {
      expect(reference).toContain(`longer than 256 characters is not an id (the caller goes to stable) and is counted in graygate_identity_lookups_total{source="${kind}", result="invalid"}`);
    }
  });

  it('property: an id is used exactly when it is 1..256 characters; every longer one is counted once, per source kind', () => {
    const context: IdentityContext = {};
    const chain = buildIdentityChain(sources([{ header: { name: 'x-user-id' } }, { cookie: { name: 'uid' } }, { query: { name: 'uid' } }]), { context });
    const id = fc.oneof(fc.stringMatching(/^[a-z0-9]{1,40}$/), fc.integer({ min: 250, max: 300 }).chain((length) => fc.string({ minLength: length, maxLength: length, unit: fc.constantFrom('a', '7', '-') })));
    let expected = { header: 0, cookie: 0, query: 0 };
    fc.assert(
      fc.property(fc.constantFrom('header', 'cookie', 'query'), id, (kind, value) => {
        const facts = makeFacts(kind === 'header' ? { headers: { 'x-user-id': value } } : kind === 'cookie' ? { cookies: { uid: value } } : { query: { uid: value } });
        expect(chain.resolve(facts)).toBeUndefined(); // synchronous either way
        if (value.length <= MAX_USER_ID_LENGTH) {
          expect(facts.userId).toBe(value);
        } else {
          expect(facts.userId).toBeUndefined();
          expected = { ...expected, [kind]: expected[kind] + 1 };
        }
        expect(oversizedIdStats(context)).toEqual(expected);
      }),
      { numRuns: 300 },
    );
    expect(expected.header + expected.cookie + expected.query).toBeGreaterThan(0);
  });

  it('the boundary: 256 characters is an id, 257 is counted and ignored, and the next source is tried', () => {
    const context: IdentityContext = {};
    const chain = buildIdentityChain(sources([{ header: { name: 'x-user-id' } }, { cookie: { name: 'uid' } }]), { context });
    const at = makeFacts({ headers: { 'x-user-id': 'a'.repeat(256) } });
    chain.resolve(at);
    expect(at.userId).toBe('a'.repeat(256));
    const over = makeFacts({ headers: { 'x-user-id': 'a'.repeat(257) }, cookies: { uid: 'fallback' } });
    chain.resolve(over);
    expect([over.userId, over.identitySource]).toEqual(['fallback', 'cookie:uid']);
    expect(oversizedIdStats(context)).toEqual({ header: 1, cookie: 0 });
  });
});
