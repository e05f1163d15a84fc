import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../../src/store/redis/redis-store.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, writerStore, writeNext } from '../helpers/redis-routing.js';

/**
 * Redis loses its data (FLUSHALL, a restart without persistence) while a fleet runs on it. The
 * version numbers start over, so "newer" means nothing across the loss: without care, a gateway
 * that starts next seeds version 1 from its config file and serves it while the running ones keep
 * their version 3, and the same caller gets different versions on different gateways. The store's
 * epoch tells the two lines apart; every gateway follows the store, and a running gateway seeds
 * the emptied store again with what it serves.
 */
describe('a fleet on a Redis that loses its data', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let writer: RedisStore;
  const gateways: GatewayProcess[] = [];
  const user = { 'x-user-id': '1234' };
  // Every config file seeds "users 1..10 on the candidate": user 1234 goes to stable.
  const gatewayConfig = () => ({
    store: { kind: 'redis', url: redis.url, namespace: 'loss', pollMs: 300 },
    ...headerRangeRouting(stable, candidate, { from: 1, to: 10 }),
  });
  const start = async () => {
    const gateway = await startGatewayProcess({ dir: mkdtempSync(path.join(tmpdir(), 'graygate-loss-')), config: gatewayConfig(), readyWithinMs: 30_000 });
    gateways.push(gateway);
    return gateway;
  };
  const storedVersion = async () => (JSON.parse((await redis.client.get('{loss}:doc')) ?? 'null') as { version: number } | null)?.version;

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    writer = writerStore(redis.url, 'loss');
  });
  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop('SIGKILL')));
    await writer?.close();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('a running gateway seeds the emptied store again with what it serves, and a new gateway follows it', async () => {
    const first = await start();
    // Live changes the config file does not know: user 1234 is now on the candidate (version 3).
    await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 100 })), 'widen');
    await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1000, to: 2000 })), 'move');
    await eventually(async () => expect(await versionFor(first.url, user)).toBe('candidate'));

    await redis.client.flushall();
    // The running gateway notices at its next poll and writes what it serves as a new epoch.
    await eventually(async () => expect(await storedVersion()).toBe(1), { withinMs: 5_000 });
    const stored = JSON.parse((await redis.client.get('{loss}:doc'))!) as { meta: { reason: string } };
    expect(stored.meta.reason).toMatch(/lost its routing document/);
    expect(await versionFor(first.url, user)).toBe('candidate');

    const second = await start();
    expect(second.logs().some((line) => /ignored/.test(String(line.msg)))).toBe(true);
    expect(await Promise.all(gateways.map((gateway) => versionFor(gateway.url, user)))).toEqual(['candidate', 'candidate']);
  }, 120_000);

  it('when a new gateway seeds first, the running ones follow the new epoch instead of keeping a higher version', async () => {
    const [first, second] = gateways as [GatewayProcess, GatewayProcess];
    // Versions 2..4 of the current epoch, so the running gateways serve a number higher than 1.
    for (const [from, to] of [[1, 50], [1, 60], [1000, 3000]] as const) {
      await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from, to })), 'edit');
    }
    await eventually(async () => expect(await storedVersion()).toBe(4));
    // The running gateways cannot reseed while stopped: the new one seeds version 1 from its file.
    first.child.kill('SIGSTOP');
    second.child.kill('SIGSTOP');
    try {
      await redis.client.flushall();
      const third = await start();
      expect(await storedVersion()).toBe(1);
      expect(await versionFor(third.url, user)).toBe('stable');
    } finally {
      first.child.kill('SIGCONT');
      second.child.kill('SIGCONT');
    }
    // Version 1 < 4, but of a new epoch: they follow the store, so the fleet agrees again.
    await eventually(async () => expect(await Promise.all(gateways.map((gateway) => versionFor(gateway.url, user)))).toEqual(['stable', 'stable', 'stable']), { withinMs: 5_000 });
    expect(first.logs().some((line) => line.event === 'store-epoch-changed')).toBe(true);
  }, 120_000);

  it('the next write after the loss is applied everywhere (versions compare within the new epoch)', async () => {
    await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1200, to: 1300 })), 'after the loss');
    await eventually(async () => expect(await Promise.all(gateways.map((gateway) => versionFor(gateway.url, user)))).toEqual(['candidate', 'candidate', 'candidate']), { withinMs: 3_000 });
  }, 120_000);

  it('a write lost in a failover is written back by the fleet as the next version, which every gateway follows', async () => {
    const before = (await storedVersion())!;
    // What a replica promoted without the last write holds: the version before it, and its entry.
    const [previous] = await redis.client.zrangebyscore('{loss}:history', before - 1, before - 1);
    await redis.client.multi().set('{loss}:version', String(before - 1)).set('{loss}:doc', previous!).zremrangebyscore('{loss}:history', before, before).exec();
    // The fleet keeps serving the lost write (an older number is not followed within an epoch)
    // and writes it back, so a gateway started now reads it too.
    await eventually(
      async () => {
        const stored = JSON.parse((await redis.client.get('{loss}:doc'))!) as { version: number; meta: { reason: string } };
        expect(stored).toMatchObject({ version: before, meta: { reason: expect.stringMatching(/written back after the store went back/) } });
      },
      { withinMs: 5_000 },
    );
    expect(await Promise.all(gateways.map((gateway) => versionFor(gateway.url, user)))).toEqual(['candidate', 'candidate', 'candidate']);
    // The writer logs it once its write is acknowledged, which may be after the store shows it.
    await eventually(() => expect(gateways.some((gateway) => gateway.logs().some((line) => line.event === 'republished'))).toBe(true));
    // The same number now names another write (the write-back): every gateway takes it as such.
    await eventually(() => expect(gateways.every((gateway) => gateway.logs().some((line) => line.event === 'store-version-rewritten' || line.event === 'republished'))).toBe(true));
    // The next write goes on from it and is applied everywhere.
    expect(await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 5 })), 'after the write-back')).toBe(before + 1);
    await eventually(async () => expect(await Promise.all(gateways.map((gateway) => versionFor(gateway.url, user)))).toEqual(['stable', 'stable', 'stable']), { withinMs: 3_000 });
  }, 120_000);
});
