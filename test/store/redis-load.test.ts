import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { createRedisStore, redisStoreKeys, type RedisStore } from '../../src/store/redis/redis-store.js';
import type { LoadReport } from '../../src/store/store.js';
import { eventually } from '../helpers/eventually.js';
import { startRedis, startRedisCluster, type RedisCluster, type RedisServer } from '../helpers/redis.js';
import { validateRouting } from './validate.js';

// The fleet's load reports in Redis: what the drain report sums (see gateway/load-reporter.ts).

const report = (inFlight: number, servedVersion: number | null = 3): LoadReport => ({
  servedVersion,
  servedEpoch: servedVersion === null ? null : 'epoch-a',
  servedForMs: 1_234,
  inFlightRequests: inFlight,
  openConnections: inFlight + 1,
  upstreams: { 'app-v1': { inFlightRequests: inFlight, openConnections: 1 }, 'app-v2': { inFlightRequests: 0, openConnections: inFlight } },
});

let redis: RedisServer;
let cluster: RedisCluster;
const stores: RedisStore[] = [];

beforeAll(async () => {
  [redis, cluster] = await Promise.all([startRedis(), startRedisCluster()]);
});
afterAll(async () => {
  await Promise.all(stores.map((store) => store.close()));
  await Promise.all([redis?.stop(), cluster?.stop()]);
});

function makeStore(url: string, namespace: string): RedisStore {
  const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url, namespace }), { validate: validateRouting });
  stores.push(store);
  return store;
}

async function serverMs(): Promise<number> {
  const [seconds, micros] = await redis.client.time();
  return Number(seconds) * 1_000 + Math.floor(Number(micros) / 1_000);
}

describe('redis store: load reports', () => {
  it('two gateways report; each reads both, stamped with the server\'s clock; a removed report is gone', async () => {
    const [a, b] = [makeStore(redis.url, 'load-1'), makeStore(redis.url, 'load-1')];
    const before = await serverMs();
    await eventually(() => a.fleet.reportLoad('gw-a', report(2)), { withinMs: 3_000 });
    await b.fleet.reportLoad('gw-b', report(0, 2));
    const after = await serverMs();
    const seen = (await b.fleet.readFleetLoad(3_000)).sort((x, y) => x.instanceId.localeCompare(y.instanceId));
    expect(seen.map((entry) => entry.instanceId)).toEqual(['gw-a', 'gw-b']);
    expect(seen[0]!.report).toEqual(report(2));
    expect(seen[1]!.report).toEqual(report(0, 2));
    for (const entry of seen) {
      expect(entry.at).toBeGreaterThanOrEqual(before);
      expect(entry.at).toBeLessThanOrEqual(after);
    }
    // One hash under the namespace's hash tag, with a lifetime (gone when the whole fleet is).
    const key = redisStoreKeys('load-1').load;
    expect(key).toBe('{load-1}:load');
    expect(await redis.client.pttl(key)).toBeGreaterThan(0);
    await a.fleet.removeLoad('gw-a');
    expect((await b.fleet.readFleetLoad(3_000)).map((entry) => entry.instanceId)).toEqual(['gw-b']);
  });

  it('leaves out, and deletes, reports older than the bound by the server\'s clock and malformed ones', async () => {
    const store = makeStore(redis.url, 'load-2');
    const key = redisStoreKeys('load-2').load;
    await eventually(() => store.fleet.reportLoad('fresh', report(1)), { withinMs: 3_000 });
    const old = (await serverMs()) - 10_000;
    await redis.client.hset(key, 'stale', JSON.stringify({ at: old, ...report(5) }), 'garbled', '{"at":', 'negative', JSON.stringify({ ...report(1), at: await serverMs(), inFlightRequests: -1 }));
    expect((await store.fleet.readFleetLoad(3_000)).map((entry) => entry.instanceId)).toEqual(['fresh']);
    await eventually(async () => expect(await redis.client.hkeys(key)).toEqual(['fresh']));
    // The bound is the caller's: with 10 ms, a report written 50 ms ago is out (and deleted).
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await store.fleet.readFleetLoad(10)).toEqual([]);
  });

  it('works on a Cluster: the load hash shares the document\'s slot', async () => {
    const [a, b] = [makeStore(cluster.url, 'graygate-load'), makeStore(cluster.url, 'graygate-load')];
    await eventually(() => a.fleet.reportLoad('gw-a', report(3)), { withinMs: 10_000 });
    await eventually(() => b.fleet.reportLoad('gw-b', report(0)), { withinMs: 10_000 });
    const seen = await a.fleet.readFleetLoad(3_000);
    expect(seen.map((entry) => entry.instanceId).sort()).toEqual(['gw-a', 'gw-b']);
    expect(seen.reduce((sum, entry) => sum + entry.report.upstreams['app-v1']!.inFlightRequests, 0)).toBe(3);
  });
});
