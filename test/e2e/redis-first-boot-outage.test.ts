import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../../src/store/redis/redis-store.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, writerStore, writeNext } from '../helpers/redis-routing.js';

/**
 * A gateway's very first start, with its Redis down and no last good copy on disk: rather than
 * not starting (a node out of the pool), it serves its config file's routing, says so, and hands
 * over to the store as soon as it answers — seeding it when it comes back empty.
 */
describe('first boot with Redis down and no last good copy', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let writer: RedisStore;
  const inRange = { 'x-user-id': '7' };

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    await redis.kill('SIGKILL');
    gateway = await startGatewayProcess({
      config: { store: { kind: 'redis', url: redis.url, namespace: 'boot', pollMs: 300 }, ...headerRangeRouting(stable, candidate, { from: 1, to: 10 }) },
      readyWithinMs: 20_000,
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await writer?.close();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it("starts, serves the config file's routing, and says why", async () => {
    expect(await versionFor(gateway.url, inRange)).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-user-id': '11' })).toBe('stable');
    const line = gateway.logs().find((l) => l.event === 'boot-fallback');
    expect(String(line?.msg)).toMatch(/no last good copy exists; serving the routing in .*graygate\.yaml/);
  });

  it('seeds Redis when it comes back empty, then follows its writes', async () => {
    await redis.restart();
    await eventually(async () => expect(JSON.parse((await redis.client.get('{boot}:doc')) ?? 'null')?.version).toBe(1), { withinMs: 5_000 });
    writer = writerStore(redis.url, 'boot');
    expect(await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 100, to: 200 })), 'narrow')).toBe(2);
    await eventually(async () => expect(await versionFor(gateway.url, inRange)).toBe('stable'), { withinMs: 3_000 });
  });
});
