import { describe, expect, it } from 'vitest';
import { IdentitySourceConfig } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import { buildIdentityChain } from '../../src/identity/chain.js';
import type { IdentityContext } from '../../src/identity/source.js';
import { makeFacts } from '../helpers/facts.js';

const sources = (raw: unknown[]) => raw.map((source) => IdentitySourceConfig.parse(source));

/** An in-memory key reader standing in for the store (outside what is under test). */
function storeReader(values: Record<string, string>, behaviour: 'answer' | 'reject' = 'answer') {
  const reads: string[] = [];
  const context: IdentityContext = {
    readKey: async (key) => {
      reads.push(key);
      await new Promise((resolve) => setImmediate(resolve));
      if (behaviour === 'reject') throw new Error('store down');
      return values[key];
    },
  };
  return { context, reads };
}

describe('identity chain', () => {
  it('takes the first source that yields an id, synchronously', () => {
    const chain = buildIdentityChain(sources([{ header: { name: 'x-user-id' } }, { cookie: { name: 'uid' } }]));
    const both = makeFacts({ headers: { 'x-user-id': '42' }, cookies: { uid: 'alice' } });
    expect(chain.resolve(both)).toBeUndefined(); // not a Promise: the sync fast path
    expect([both.userId, both.numericUserId, both.identitySource]).toEqual(['42', 42, 'header:x-user-id']);

    const cookieOnly = makeFacts({ cookies: { uid: 'alice' } });
    chain.resolve(cookieOnly);
    expect([cookieOnly.userId, cookieOnly.numericUserId, cookieOnly.identitySource]).toEqual(['alice', undefined, 'cookie:uid']);

    const none = makeFacts({ headers: { 'x-other': '1' } });
    chain.resolve(none);
    expect([none.userId, none.numericUserId, none.identitySource]).toEqual([undefined, undefined, undefined]);
    expect(chain.kinds).toEqual(['header', 'cookie']);
    expect(chain.inputs).toEqual([{ kind: 'header', name: 'x-user-id' }, { kind: 'cookie', name: 'uid' }]);
  });

  it('skips empty values and parses numbers only in canonical form', () => {
    const chain = buildIdentityChain(sources([{ header: { name: 'x-user-id' } }, { cookie: { name: 'uid' } }]));
    const facts = makeFacts({ headers: { 'x-user-id': '' }, cookies: { uid: '007' } });
    chain.resolve(facts);
    expect([facts.userId, facts.numericUserId, facts.identitySource]).toEqual(['007', undefined, 'cookie:uid']);
  });

  it('clears an identity left on the facts before resolving', () => {
    const chain = buildIdentityChain(sources([{ header: { name: 'x-user-id' } }]));
    const facts = makeFacts({ userId: '99' });
    chain.resolve(facts);
    expect([facts.userId, facts.numericUserId, facts.identitySource]).toEqual([undefined, undefined, undefined]);
  });

  it('with no sources nobody has an identity', () => {
    const facts = makeFacts({ headers: { 'x-user-id': '1' } });
    expect(buildIdentityChain([]).resolve(facts)).toBeUndefined();
    expect(facts.userId).toBeUndefined();
  });

  it('continues asynchronously when a source must wait, then answers from its cache synchronously', async () => {
    const store = storeReader({ TOKEN_abc: '1234' });
    const chain = buildIdentityChain(sources([{ tokenLookup: {} }, { header: { name: 'x-user-id' } }]), { context: store.context });
    const facts = makeFacts({ headers: { token: 'abc', 'x-user-id': '7' } });
    const pending = chain.resolve(facts);
    expect(pending).toBeInstanceOf(Promise);
    await pending;
    expect([facts.userId, facts.numericUserId, facts.identitySource]).toEqual(['1234', 1234, 'tokenLookup:token']);
    expect(store.reads).toEqual(['TOKEN_abc']);

    const again = makeFacts({ headers: { token: 'abc' } });
    expect(chain.resolve(again)).toBeUndefined();
    expect(again.userId).toBe('1234');
    expect(store.reads).toHaveLength(1);
  });

  it('an unknown token falls through to the next source after the lookup', async () => {
    const store = storeReader({});
    const chain = buildIdentityChain(sources([{ tokenLookup: {} }, { header: { name: 'x-user-id' } }]), { context: store.context });
    const facts = makeFacts({ headers: { token: 'nobody', 'x-user-id': '7' } });
    await chain.resolve(facts);
    expect([facts.userId, facts.identitySource]).toEqual(['7', 'header:x-user-id']);
  });

  it('a failing store counts as no identity and never rejects', async () => {
    const store = storeReader({ TOKEN_abc: '1234' }, 'reject');
    const chain = buildIdentityChain(sources([{ tokenLookup: {} }]), { context: store.context });
    const facts = makeFacts({ headers: { token: 'abc' } });
    await expect(Promise.resolve(chain.resolve(facts))).resolves.toBeUndefined();
    expect([facts.userId, facts.numericUserId, facts.identitySource]).toEqual([undefined, undefined, undefined]);
  });

  it('a source that throws is reported and skipped; the next source answers', () => {
    const errors: [string, unknown][] = [];
    const context: IdentityContext = {
      readKey: () => {
        throw new Error('client closed');
      },
    };
    const chain = buildIdentityChain(sources([{ tokenLookup: {} }, { header: { name: 'x-user-id' } }]), {
      context,
      onError: (kind, error) => errors.push([kind, error]),
    });
    const facts = makeFacts({ headers: { token: 'abc', 'x-user-id': '7' } });
    expect(chain.resolve(facts)).toBeUndefined();
    expect([facts.userId, facts.identitySource]).toEqual(['7', 'header:x-user-id']);
    expect(errors.map(([kind]) => kind)).toEqual(['tokenLookup']);
  });

  it('refuses, with its path, a source that cannot work in this context', () => {
    let error: unknown;
    try {
      buildIdentityChain(sources([{ header: { name: 'x' } }, { tokenLookup: {} }]));
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues[0]).toMatch(/^identity\.sources\[1\]\.tokenLookup: /);
  });
});
