import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { GraygateError } from '../../src/errors.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { eventually } from '../helpers/eventually.js';
import { rawCommand, startRedisCluster, type RedisCluster } from '../helpers/redis.js';
import { contractDocument } from './contract.js';
import { validateRouting } from './validate.js';

let cluster: RedisCluster;
const stores: RedisStore[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster();
});
afterAll(async () => {
  await Promise.all(stores.map((store) => store.close()));
  await cluster?.stop();
});

function makeStore(namespace: string, pollMs = 500, pingMs = 1_000): RedisStore {
  const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: cluster.url, namespace, pollMs, pingMs }), { validate: validateRouting });
  stores.push(store);
  return store;
}

describe('redis store on a 3-master Cluster', () => {
  it("keeps one document's keys in one slot, so CAS, history and notification work", async () => {
    // b polls once a minute: what it hears within 2 s came by pub/sub through the cluster bus.
    const [a, b] = [makeStore('graygate'), makeStore('graygate', 60_000)];
    let heard = 0;
    const stop = b.watch(() => heard++);
    try {
      await eventually(() => a.write(contractDocument(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' }), { withinMs: 10_000 });
      for (let round = 1; round <= 5; round++) {
        const results = await Promise.allSettled([
          a.write(contractDocument(round), { expectedVersion: round, actor: 'a', reason: `round ${round}` }),
          b.write(contractDocument(50 + round), { expectedVersion: round, actor: 'b', reason: `round ${round}` }),
        ]);
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
        expect((lost.reason as GraygateError).code).toBe('GG_VERSION_CONFLICT');
      }
      expect((await b.current()).version).toBe(6);
      expect((await a.history()).map((h) => h.version)).toEqual([6, 5, 4, 3, 2, 1]);
      expect((await b.version(3)).meta.reason).toBe('round 2');
      const before = heard;
      await a.write(contractDocument(99), { expectedVersion: 6, actor: 'a', reason: 'notify' });
      await eventually(() => expect(heard).toBeGreaterThan(before), { withinMs: 2_000 });
      expect((await b.current()).document).toEqual(contractDocument(99));

      // The keys really are in one slot, and the cluster really has three masters.
      const slots = await Promise.all(['doc', 'version', 'history'].map((k) => cluster.client.cluster('KEYSLOT', `{graygate}:${k}`)));
      expect(new Set(slots).size).toBe(1);
      const masters = ((await cluster.client.cluster('NODES')) as string).split('\n').filter((line) => line.includes('master'));
      expect(masters).toHaveLength(3);
    } finally {
      stop();
    }
  });

  it('all nodes paused (half-open subscriber): the PING deadline replaces the subscription connection, which resubscribes and reports', async () => {
    const writer = makeStore('paused');
    const watcher = makeStore('paused', 60_000, 100);
    await eventually(() => writer.write(contractDocument(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' }), { withinMs: 10_000 });
    let heard = 0;
    const stop = watcher.watch(() => heard++);
    const subscriberIds = async () => {
      const ids: string[] = [];
      for (const port of cluster.ports) {
        const list = await rawCommand(port, 'CLIENT LIST TYPE pubsub', 2_000);
        for (const match of list.matchAll(/id=(\d+) addr=\S+ laddr=\S+ fd=\d+ name=\S*subscriber/g)) ids.push(`${port}/${match[1]}`);
      }
      return ids;
    };
    try {
      await eventually(async () => expect(await subscriberIds()).toHaveLength(1), { withinMs: 5_000 });
      await eventually(() => expect(heard).toBeGreaterThan(0));
      const [before] = await subscriberIds();
      await Promise.all(cluster.ports.map((port) => rawCommand(port, 'CLIENT PAUSE 800 ALL')));
      const heardBefore = heard;
      await eventually(async () => {
        const ids = await subscriberIds();
        expect(ids).toHaveLength(1);
        expect(ids).not.toContain(before);
      }, { withinMs: 10_000, everyMs: 100 });
      await eventually(() => expect(heard).toBeGreaterThan(heardBefore), { withinMs: 5_000 });
      const beforeWrite = heard;
      await writer.write(contractDocument(1), { expectedVersion: 1, actor: 'w', reason: 'after pause' });
      await eventually(() => expect(heard).toBeGreaterThan(beforeWrite), { withinMs: 2_000 });
    } finally {
      stop();
    }
  });

  it('identity lookups reach keys in any slot', async () => {
    const store = makeStore('lookups');
    const tokens = Array.from({ length: 30 }, (_, i) => `tok${i}`);
    for (const [i, token] of tokens.entries()) await cluster.client.set(`TOKEN_${token}`, String(1000 + i));
    await eventually(async () => expect(await store.keyReader.readKey('TOKEN_tok0', 500)).toBe('1000'), { withinMs: 10_000 });
    const values = await Promise.all(tokens.map((token) => store.keyReader.readKey(`TOKEN_${token}`, 500)));
    expect(values).toEqual(tokens.map((_, i) => String(1000 + i)));
  });
});
