import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../../src/store/redis/redis-store.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, writerStore, writeNext } from '../helpers/redis-routing.js';

/** A fleet of real gateway processes on one Redis agrees on every change. */
describe('three gateway processes on one Redis', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let writer: RedisStore;
  const gateways: GatewayProcess[] = [];
  const user = { 'x-user-id': '1234' };

  const gatewayConfig = (range: { from: number; to: number }) => ({
    store: { kind: 'redis', url: redis.url, namespace: 'fleet', pollMs: 2_000 },
    ...headerRangeRouting(stable, candidate, range),
  });

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    writer = writerStore(redis.url, 'fleet');
    // The first gateway seeds Redis from its file; the others find a document there already.
    gateways.push(await startGatewayProcess({ config: gatewayConfig({ from: 1, to: 5000 }) }));
    // Their files say something else: Redis wins, and each says the file's routing is ignored.
    gateways.push(...(await Promise.all([1, 2].map(() => startGatewayProcess({ config: gatewayConfig({ from: 1, to: 10 }) })))));
  });

  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await writer?.close();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  const versionsOfFleet = () => Promise.all(gateways.map((gateway) => versionFor(gateway.url, user)));

  it('all three serve the document Redis holds; the later two log that their file\'s routing is ignored', async () => {
    expect(await versionsOfFleet()).toEqual(['candidate', 'candidate', 'candidate']);
    const stored = JSON.parse((await redis.client.get('{fleet}:doc')) ?? 'null') as { version: number };
    expect(stored.version).toBe(1);
    for (const gateway of gateways.slice(1)) {
      expect(gateway.logs().some((line) => line.level === 40 && /ignor/i.test(String(line.msg)))).toBe(true);
    }
    expect(gateways[0]!.logs().some((line) => /ignor/i.test(String(line.msg)))).toBe(false);
  });

  it('a compare-and-set write is applied on all three, and the next one too', async () => {
    const v2 = await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 100 })), 'shrink to 1..100');
    expect(v2).toBe(2);
    await eventually(async () => expect(await versionsOfFleet()).toEqual(['stable', 'stable', 'stable']), { withinMs: 3_000 });
    const v3 = await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1000, to: 2000 })), 'move to 1000..2000');
    expect(v3).toBe(3);
    await eventually(async () => expect(await versionsOfFleet()).toEqual(['candidate', 'candidate', 'candidate']), { withinMs: 3_000 });
    // Every gateway logged applying each version exactly once.
    for (const gateway of gateways) {
      for (const version of [2, 3]) {
        await gateway.waitForLog((line) => line.version === version && /applied/.test(String(line.msg)));
        expect(gateway.logs().filter((line) => line.version === version && /applied/.test(String(line.msg)))).toHaveLength(1);
      }
    }
  });

  it('a stale write is refused and changes nothing on the fleet', async () => {
    const before = await versionsOfFleet();
    await expect(
      writer.write(routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 1 })), { expectedVersion: 1, actor: 'test', reason: 'stale' }),
    ).rejects.toMatchObject({ code: 'GG_VERSION_CONFLICT' });
    expect(await versionsOfFleet()).toEqual(before);
  });
});

describe('three gateways started at once on an empty Redis', () => {
  it('seed exactly one version 1 between them and all serve it', async () => {
    const [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    const gateways: GatewayProcess[] = [];
    try {
      const started = await Promise.allSettled(
        [1, 2, 3].map(() =>
          startGatewayProcess({ config: { store: { kind: 'redis', url: redis.url, namespace: 'race' }, ...headerRangeRouting(stable, candidate, { from: 1, to: 5000 }) } }),
        ),
      );
      for (const result of started) if (result.status === 'fulfilled') gateways.push(result.value);
      expect(started.map((result) => (result.status === 'rejected' ? String(result.reason).slice(0, 500) : 'started'))).toEqual(['started', 'started', 'started']);
      const history = await redis.client.zrange('{race}:history', 0, -1, 'WITHSCORES');
      expect(history.filter((_, i) => i % 2 === 1)).toEqual(['1']);
      for (const gateway of gateways) expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('candidate');
    } finally {
      await Promise.all(gateways.map((gateway) => gateway.stop()));
      await Promise.all([stable.close(), candidate.close()]);
      await redis.stop();
    }
  });
});
