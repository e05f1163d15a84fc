import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../../src/store/redis/redis-store.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startBackgroundLoad } from '../helpers/background-load.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor, type LoadResult } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, writerStore, writeNext } from '../helpers/redis-routing.js';

/**
 * Faults under a bounded load loop against a real gateway process.
 * Fail static: while Redis is gone the gateway keeps its last good rules and every request
 * succeeds; once Redis is back, later changes apply. A killed subscriber connection loses no
 * change: it resubscribes and rereads, and the poll is the backstop.
 */
const POLL_MS = 1_000;

describe('Redis faults under load', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let writer: RedisStore;
  const user = { 'x-user-id': '1234' };

  beforeAll(async () => {
    // Persistent (appendfsync always), so a SIGKILLed Redis comes back with the document.
    [redis, stable, candidate] = await Promise.all([startRedis({ persist: true }), startBackend('stable'), startBackend('candidate')]);
    writer = writerStore(redis.url, 'faults');
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: redis.url, namespace: 'faults', pollMs: POLL_MS, commandTimeoutMs: 500, pingMs: 500 },
        ...headerRangeRouting(stable, candidate, { from: 1, to: 5000 }),
      },
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await writer?.close();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('Redis killed and restarted mid-run: no failed request, routing unchanged while down, later changes applied', async () => {
    expect(await versionFor(gateway.url, user)).toBe('candidate');
    let changeWritten = false;
    let result: LoadResult;
    const load = startBackgroundLoad({
      url: gateway.url,
      headers: user,
      concurrency: 4,
      maxMs: 300_000,
      maxRequests: 200_000,
      // Candidate until the change is written; after it, either (requests in flight) then stable.
      check: (version) => version === 'candidate' || (changeWritten && version === 'stable'),
    });
    try {
      await eventually(() => expect(load.sent()).toBeGreaterThan(100), { withinMs: 5_000 });
      const mark = gateway.logs().length;
      await redis.kill('SIGKILL');
      // The gateway notices (poll or subscriber), and keeps serving while Redis stays down.
      await gateway.waitForLog((line) => /unreachable|unavailable/i.test(String(line.msg)), { since: mark, withinMs: 5_000 });
      const sentWhileDown = load.sent();
      await eventually(() => expect(load.sent()).toBeGreaterThan(sentWhileDown + 200), { withinMs: 90_000 });
      expect(await versionFor(gateway.url, user)).toBe('candidate');
      expect(await versionFor(gateway.url, { 'x-user-id': '6000' })).toBe('stable');

      await redis.restart();
      changeWritten = true;
      await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 100 })), 'after the restart');
      await eventually(async () => expect(await versionFor(gateway.url, user)).toBe('stable'), { withinMs: POLL_MS + 2_000 });
      expect(load.isRunning()).toBe(true); // the whole fault happened under load
    } finally {
      result = await load.stop();
    }
    expect(result.failures).toEqual([]);
    expect(result.failed).toBe(0);
    expect(result.byVersion.candidate).toBeGreaterThan(0);
    expect(result.byVersion.stable).toBeGreaterThan(0);
    expect(gateway.child.exitCode).toBeNull();
  });

  it('the subscriber connection killed (CLIENT KILL TYPE pubsub): the next change still arrives within the poll interval', async () => {
    const before = await versionFor(gateway.url, user);
    const flip = before === 'stable' ? { from: 1, to: 5000 } : { from: 1, to: 100 };
    const expected = before === 'stable' ? 'candidate' : 'stable';
    let result: LoadResult;
    const load = startBackgroundLoad({ url: gateway.url, headers: user, concurrency: 2, maxMs: 300_000, maxRequests: 200_000 });
    try {
      await eventually(async () => {
        const subscribers = (await redis.client.call('CLIENT', 'LIST', 'TYPE', 'pubsub')) as string;
        expect(subscribers).toMatch(/sub=1|psub=1/);
      });
      const killed = (await redis.client.call('CLIENT', 'KILL', 'TYPE', 'pubsub')) as number;
      expect(killed).toBeGreaterThanOrEqual(1);
      // Written at once, before the subscriber can be back: pub/sub alone would miss it.
      await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, flip)), 'after the subscriber was killed');
      await eventually(async () => expect(await versionFor(gateway.url, user)).toBe(expected), { withinMs: POLL_MS + 1_000, everyMs: 10 });
      // And the change subscriber is back (reconnected and subscribed again).
      await eventually(async () => {
        const subscribers = (await redis.client.call('CLIENT', 'LIST', 'TYPE', 'pubsub')) as string;
        expect(subscribers).toMatch(/name=graygate-subscriber .*sub=1/);
      });
    } finally {
      result = await load.stop();
    }
    expect(result.failures).toEqual([]);
    expect(result.failed).toBe(0);
  });
});
