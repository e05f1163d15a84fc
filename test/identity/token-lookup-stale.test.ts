import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import type { IdentityContext, IdentityResolver } from '../../src/identity/source.js';
import { tokenLookupIdentity, tokenLookupStats } from '../../src/identity/token-lookup.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { eventually } from '../helpers/eventually.js';
import { LiteralFacts } from '../helpers/facts.js';
import { commandCounts, startRedis, type RedisServer } from '../helpers/redis.js';
import { validateRouting } from '../store/validate.js';

/**
 * Stale-while-revalidate of token lookups against a private redis-server that the tests hang
 * (SIGSTOP) and kill: a token once known is answered synchronously from the cache, through
 * failed and slow refreshes, until maxStaleMs runs out; a refresh the store answers replaces it.
 */

let redis: RedisServer;
let store: RedisStore;
let context: IdentityContext;
let prefixes = 0;

async function connect(): Promise<void> {
  store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url }), { validate: validateRouting });
  context = { readKey: (key, deadlineMs) => store.keyReader.readKey(key, deadlineMs) };
  await eventually(async () => expect(await store.keyReader.readKey('ping-probe', 500)).toBeUndefined(), { withinMs: 10_000 });
}

beforeAll(async () => {
  redis = await startRedis();
  await connect();
});
afterEach(() => redis.resume());
afterAll(async () => {
  redis?.resume();
  await store?.close();
  await redis?.stop();
});

function resolverFor(config: Record<string, unknown>): { resolve: IdentityResolver; key: (token: string) => string } {
  const prefix = `S${++prefixes}_`;
  const parsed = tokenLookupIdentity.schema.parse({ keyTemplate: `${prefix}{token}`, deadlineMs: 2_000, ...config });
  return { resolve: tokenLookupIdentity.create(parsed, context), key: (token) => `${prefix}${token}` };
}

const request = (token: string) => new LiteralFacts({ headers: { TOKEN: token } });
const gets = async () => (await commandCounts(redis.client)).get ?? 0;

/** An answer that must come from the cache: synchronous, never a Promise. */
function cachedAnswer(resolve: IdentityResolver, token: string): string | undefined {
  const answer = resolve(request(token));
  if (answer instanceof Promise) throw new Error(`token ${token} waited for the store; a known token never does`);
  return answer;
}

describe('tokenLookup: stale-while-revalidate', () => {
  it('defaults: 5 minutes of staleness past the TTL', () => {
    expect(tokenLookupIdentity.schema.parse({}).maxStaleMs).toBe(300_000);
    expect(tokenLookupIdentity.schema.safeParse({ maxStaleMs: -1 }).error?.issues[0]?.path).toEqual(['maxStaleMs']);
  });

  it('past its TTL a known token is answered at once while one lookup refreshes it; a changed id takes effect', async () => {
    const { resolve, key } = resolverFor({ cacheTtlMs: 100 });
    await redis.client.set(key('alice'), '1');
    expect(await resolve(request('alice'))).toBe('1');
    await redis.client.set(key('alice'), '2');
    const seen = new Set<string | undefined>();
    await eventually(
      () => {
        const answer = cachedAnswer(resolve, 'alice');
        seen.add(answer);
        expect(answer).toBe('2');
      },
      { withinMs: 5_000, everyMs: 10 },
    );
    expect(seen).toEqual(new Set(['1', '2']));
  });

  it('single flight: many stale answers start one refresh', async () => {
    const { resolve, key } = resolverFor({ cacheTtlMs: 50 });
    await redis.client.set(key('crowd'), '7');
    expect(await resolve(request('crowd'))).toBe('7');
    // Wait for the entry to be stale: a first stale answer starts the refresh.
    const refreshesBefore = tokenLookupStats(context).refreshes;
    const before = await gets();
    await eventually(
      () => {
        for (let i = 0; i < 200; i++) expect(cachedAnswer(resolve, 'crowd')).toBe('7');
        expect(tokenLookupStats(context).refreshes - refreshesBefore).toBeGreaterThan(0);
      },
      { withinMs: 5_000, everyMs: 10 },
    );
    expect(tokenLookupStats(context).refreshes - refreshesBefore).toBe(1);
    await eventually(async () => expect((await gets()) - before).toBe(1));
  });

  it('a deleted token becomes unknown after a refresh, and a known-unknown token found again after one', async () => {
    const { resolve, key } = resolverFor({ cacheTtlMs: 100, negativeTtlMs: 100 });
    await redis.client.set(key('bob'), '5');
    expect(await resolve(request('bob'))).toBe('5');
    await redis.client.del(key('bob'));
    await eventually(() => expect(cachedAnswer(resolve, 'bob')).toBeUndefined(), { withinMs: 5_000, everyMs: 10 });
    await redis.client.set(key('bob'), '6');
    // The known-unknown entry is refreshed the same way: no request waits for it.
    await eventually(() => expect(cachedAnswer(resolve, 'bob')).toBe('6'), { withinMs: 5_000, everyMs: 10 });
  });

  it('maxStaleMs 0: an expired entry waits for its lookup', async () => {
    const { resolve, key } = resolverFor({ cacheTtlMs: 50, maxStaleMs: 0 });
    await redis.client.set(key('carol'), '8');
    expect(await resolve(request('carol'))).toBe('8');
    const answer = await eventually(
      () => {
        const next = resolve(request('carol'));
        expect(next).toBeInstanceOf(Promise);
        return next;
      },
      { withinMs: 5_000, everyMs: 10 },
    );
    expect(await answer).toBe('8');
  });

  it('Redis hung: a known token keeps its id through refreshes that time out; a never-seen one gets no id at its deadline', async () => {
    // The deadline stays long (2 s): a warm-up lookup on a loaded box must not miss it.
    const { resolve, key } = resolverFor({ cacheTtlMs: 100 });
    await redis.client.set(key('dave'), '11');
    await redis.client.set(key('erin'), '12');
    expect(await resolve(request('dave'))).toBe('11');
    const failuresBefore = tokenLookupStats(context).failures;
    redis.pause();
    try {
      // Until at least two refreshes have timed out (each gives up after its deadline).
      await eventually(
        () => {
          expect(cachedAnswer(resolve, 'dave')).toBe('11');
          expect(tokenLookupStats(context).failures - failuresBefore).toBeGreaterThanOrEqual(2);
        },
        { withinMs: 20_000, everyMs: 10 },
      );
      expect(await resolve(request('erin'))).toBeUndefined();
    } finally {
      redis.resume();
    }
    await redis.client.set(key('dave'), '13');
    await eventually(() => expect(cachedAnswer(resolve, 'dave')).toBe('13'), { withinMs: 10_000, everyMs: 10 });
  });

  it('Redis down: known and known-unknown tokens keep their answer, refreshes are paced, and past maxStaleMs the token waits like a new one', async () => {
    const ttlMs = 100;
    const maxStaleMs = 1_500;
    const { resolve, key } = resolverFor({ cacheTtlMs: ttlMs, negativeTtlMs: ttlMs, maxStaleMs });
    await redis.client.set(key('frank'), '21');
    expect(await resolve(request('nobody'))).toBeUndefined();
    const confirmedAt = performance.now();
    expect(await resolve(request('frank'))).toBe('21');
    const before = tokenLookupStats(context);
    await redis.kill();
    const downAt = performance.now();
    try {
      // Served from the cache until the entry is dropped; then the request waits (and gets no id).
      const forgotten = await eventually(
        () => {
          const answer = resolve(request('frank'));
          if (answer instanceof Promise) return answer;
          expect(answer).toBe('21');
          expect(cachedAnswer(resolve, 'nobody')).toBeUndefined();
          throw new Error('still cached');
        },
        { withinMs: 20_000, everyMs: 5 },
      );
      const forgottenAfterMs = performance.now() - confirmedAt;
      expect(await forgotten).toBeUndefined();
      // Never dropped before its TTL plus maxStaleMs (lru-cache's clock has a 1 ms resolution).
      expect(forgottenAfterMs).toBeGreaterThanOrEqual(ttlMs + maxStaleMs - 2);
      const after = tokenLookupStats(context);
      expect(after.failures - before.failures).toBeGreaterThan(0);
      // Paced: after a failure no refresh starts for a second, so at most one per token (two here)
      // per second of outage, not one per request (hundreds were answered).
      const downSeconds = (performance.now() - downAt) / 1_000;
      expect(after.refreshes - before.refreshes).toBeLessThanOrEqual(2 * (Math.ceil(downSeconds) + 1));
      expect(after.hits + after.negativeHits - before.hits - before.negativeHits).toBeGreaterThan(4 * (Math.ceil(downSeconds) + 1));
    } finally {
      await store.close();
      await redis.restart();
      await connect();
    }
  });
});
