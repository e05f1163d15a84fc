import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings, RoutingDocument } from '../../src/config/schema.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { expectCode } from './contract.js';
import { validateRouting } from './validate.js';

/** A valid routing document, distinct per `n`. */
function doc(n: number): RoutingDocument {
  return RoutingDocument.parse({
    upstreams: { stable: { servers: [`http://127.0.0.1:${10_000 + n}`] } },
    services: [{ name: 'shop', stable: 'stable' }],
  });
}

let redis: RedisServer;
let namespaces = 0;
const open: RedisStore[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await Promise.all(open.map((store) => store.close()));
  await redis?.stop();
});

/** `count` stores (gateways) sharing a fresh namespace, seeded with version 1. */
async function fleet(count: number): Promise<RedisStore[]> {
  const namespace = `lease${++namespaces}`;
  const stores = Array.from({ length: count }, () => {
    const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url, namespace }), { validate: validateRouting });
    open.push(store);
    return store;
  });
  await stores[0]!.write(doc(1), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
  return stores;
}

describe('redis store: leases with fencing tokens', () => {
  it('one holder at a time; a new holder gets a higher token; a write under a lost lease is refused and changes nothing', async () => {
    const [a, b] = await fleet(2);
    const first = await a!.leases.hold('rollout', 'gw-a', 300);
    expect(first).toBeGreaterThan(0);
    expect(await b!.leases.hold('rollout', 'gw-b', 300)).toBeUndefined();
    // Renewing keeps the token.
    expect(await a!.leases.hold('rollout', 'gw-a', 300)).toBe(first);
    expect(await b!.leases.holder('rollout')).toEqual({ holder: 'gw-a', token: first });
    // a's write under its lease goes through.
    const v2 = await a!.write(doc(2), { expectedVersion: 1, actor: 'driver a', reason: 'step', lease: { name: 'rollout', holder: 'gw-a', token: first! } });
    expect(v2.version).toBe(2);
    // a stops renewing (killed, partitioned): b takes over once it runs out, with a higher token.
    let second: number | undefined;
    while (second === undefined) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      second = await b!.leases.hold('rollout', 'gw-b', 5_000);
    }
    expect(second).toBeGreaterThan(first!);
    // a, not knowing, writes on the version it read: refused by the lease, even though the version is current.
    await expectCode(a!.write(doc(3), { expectedVersion: 2, actor: 'driver a', reason: 'stale step', lease: { name: 'rollout', holder: 'gw-a', token: first! } }), 'GG_LEASE_LOST');
    expect((await b!.current()).version).toBe(2);
    expect(await a!.leases.hold('rollout', 'gw-a', 300)).toBeUndefined();
    // Releasing by a non-holder does nothing; by the holder frees it at once.
    await a!.leases.release('rollout', 'gw-a', first!);
    expect((await a!.leases.holder('rollout'))?.holder).toBe('gw-b');
    await b!.leases.release('rollout', 'gw-b', second);
    expect(await a!.leases.holder('rollout')).toBeUndefined();
    expect(await a!.leases.hold('rollout', 'gw-a', 300)).toBeGreaterThan(second);
  });

  it('two drivers racing on the same versions: every write that lands was made by the lease holder of its time, never both', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.record({ who: fc.integer({ min: 0, max: 1 }), expire: fc.boolean() }), { minLength: 1, maxLength: 12 }), async (turns) => {
        const stores = await fleet(2);
        const names = ['gw-0', 'gw-1'];
        const tokens: (number | undefined)[] = [undefined, undefined];
        let version = 1;
        for (const turn of turns) {
          const store = stores[turn.who]!;
          if (turn.expire) {
            const held = await store.leases.holder('rollout');
            if (held) await store.leases.release('rollout', held.holder, held.token);
          }
          tokens[turn.who] = (await store.leases.hold('rollout', names[turn.who]!, 10_000)) ?? tokens[turn.who];
          // Both try to write on the same version with whatever token they last had.
          const results = await Promise.allSettled(
            [0, 1].map((i) =>
              tokens[i] === undefined
                ? Promise.reject(new Error('never held'))
                : stores[i]!.write(doc(version + 1), { expectedVersion: version, actor: names[i]!, reason: 'step', lease: { name: 'rollout', holder: names[i]!, token: tokens[i]! } }),
            ),
          );
          const landed = results.filter((result) => result.status === 'fulfilled');
          expect(landed.length).toBeLessThanOrEqual(1);
          const holder = await stores[0]!.leases.holder('rollout');
          if (landed.length === 1) {
            expect((landed[0] as PromiseFulfilledResult<{ meta: { actor: string } }>).value.meta.actor).toBe(holder?.holder);
            version++;
          }
        }
      }),
      { numRuns: 15 },
    );
  });
});
