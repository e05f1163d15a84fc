import { performance } from 'node:perf_hooks';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startBackgroundLoad } from '../helpers/background-load.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { get, versionFor, type LoadResult } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { SEED_TOKEN, SEED_USER_ID } from '../helpers/redis-routing.js';

/**
 * Token identity when Redis hangs (SIGSTOP: connections stay open, nothing answers): a
 * cached token keeps its route; an uncached one goes to prod within the lookup deadline (50 ms by
 * default) with a 200, never a 5xx or a multi-second wait; once Redis answers it goes to gray.
 */
describe('token lookups while Redis hangs (drop-in gateway)', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;

  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis(), startBackend('prod'), startBackend('gray')]);
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
    await redis.client.set('TOKEN_notYetLookedUp', '77');
    gateway = await startGatewayProcess({ args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', prod.url, '--candidate', gray.url] });
  });

  afterAll(async () => {
    redis?.resume();
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });

  it('cached token: unchanged; uncached token: prod within the deadline, 200s under load; gray once Redis answers', async () => {
    // Each worker keeps its own token cache: warm every one, each request on a new connection (the
    // primary hands connections to the workers in turn), so the token is cached wherever it lands.
    for (let i = 0; i < 4 * gateway.workers; i++) {
      await eventually(async () => {
        const response = await request(gateway.url, { headers: { TOKEN: SEED_TOKEN }, reset: true });
        expect(((await response.body.json()) as { version?: string }).version).toBe('gray');
      }, { withinMs: 3_000 });
    }
    let result: LoadResult;
    redis.pause();
    const load = startBackgroundLoad({ url: gateway.url, headers: { TOKEN: 'notYetLookedUp' }, concurrency: 4, maxMs: 120_000, maxRequests: 5_000, check: (v) => v === 'prod' });
    try {
      expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('gray');
      // Redis stays paused until the end of this block: "prod" means the lookup gave up at its
      // deadline instead of waiting for the store.
      for (let i = 0; i < 5; i++) {
        const response = await get(gateway.url, { TOKEN: `neverSeen${i}` });
        expect(response.status).toBe(200);
        expect(response.json?.version).toBe('prod');
      }
      // Enough requests through the outage to call it load; how fast they come is the box's business.
      await eventually(() => expect(load.sent()).toBeGreaterThan(200), { withinMs: 90_000 });
    } finally {
      result = await load.stop();
      redis.resume();
    }
    expect(result.failures).toEqual([]);
    expect(result.failed).toBe(0);
    // Failures are not cached as "unknown": the token reaches gray as soon as Redis answers.
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: 'notYetLookedUp' })).toBe('gray'), { withinMs: 5_000 });
    expect(gateway.child.exitCode).toBeNull();
  });
});
