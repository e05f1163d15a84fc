import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import { RedisStoreSettings } from '../../src/config/schema.js';
import type { IdentityContext } from '../../src/identity/source.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileRouting } from '../../src/rules/compile.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { eventually } from '../helpers/eventually.js';
import { LiteralFacts } from '../helpers/facts.js';
import { commandCounts, startRedis, type RedisServer } from '../helpers/redis.js';

/**
 * The seed's scenario at the rules level, through the real schema, compiler and identity chain:
 * TOKEN header → TOKEN_<token> in Redis → user id → uid range 1..5000 → candidate.
 */
let redis: RedisServer;
let store: RedisStore;
let context: IdentityContext;

beforeAll(async () => {
  redis = await startRedis();
  store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url }), { validate: parseRoutingDocument });
  context = { readKey: (key, deadlineMs) => store.keyReader.readKey(key, deadlineMs) };
  await eventually(async () => expect(await store.keyReader.readKey('probe', 500)).toBeUndefined());
});
afterAll(async () => {
  await store?.close();
  await redis?.stop();
});

function seedDocument(to: number) {
  return parseRoutingDocument(
    {
      upstreams: { prod: { servers: ['http://127.0.0.1:8080'] }, gray: { servers: ['http://127.0.0.1:9090'] } },
      services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ name: 'gray-range', uidRange: { ranges: [{ from: 1, to }] } }] } }],
      // Generous deadline: the point here is the routing, not the deadline (tested elsewhere).
      identity: { sources: [{ tokenLookup: { deadlineMs: 2_000 } }] },
    },
    'seed test',
  );
}

async function versionFor(snapshot: ReturnType<typeof compileRouting>, headers: Record<string, string>): Promise<string> {
  const facts = new LiteralFacts({ headers });
  const service = snapshot.matchService('', '/')!;
  await service.resolveIdentity(facts);
  return service.decide(facts).version;
}

describe('tokenLookup in a compiled snapshot (the seed scenario)', () => {
  it('a token whose user id is in range goes to the candidate; no token or an unknown one to stable; the cache survives a new snapshot', async () => {
    await redis.client.set('TOKEN_HGdsakGDKSFGkgcshalGF', '1234');
    const first = compileRouting(seedDocument(5000), 1, { identity: identityCompiler({ context }) });
    expect(await versionFor(first, { TOKEN: 'HGdsakGDKSFGkgcshalGF' })).toBe('candidate');
    expect(await versionFor(first, {})).toBe('stable');
    expect(await versionFor(first, { TOKEN: 'unknownToken' })).toBe('stable');

    // The range shrinks (a new version): same caller now stable, with no store lookup for the token.
    const gets = (await commandCounts(redis.client)).get ?? 0;
    const second = compileRouting(seedDocument(100), 2, { identity: identityCompiler({ context }) });
    expect(await versionFor(second, { TOKEN: 'HGdsakGDKSFGkgcshalGF' })).toBe('stable');
    expect(await versionFor(second, { TOKEN: 'unknownToken' })).toBe('stable');
    expect((await commandCounts(redis.client)).get ?? 0).toBe(gets);
  });
});
