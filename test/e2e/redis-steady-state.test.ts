import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { runLoad, versionFor } from '../helpers/load.js';
import { commandCounts, startRedis, type RedisServer } from '../helpers/redis.js';
import { SEED_TOKEN, SEED_USER_ID } from '../helpers/redis-routing.js';

/**
 * In the steady state a request makes no Redis call. The token is cached (in each worker, once
 * every worker has seen it) and the range compiled into the snapshot, so N warm requests must cost the same Redis commands
 * as 10 N: none, apart from the subscriber's keep-alive PINGs, which follow the clock.
 */
describe('steady state: no Redis command per request', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;
  const PING_MS = 1_000;
  /** A bound on each load run (it ends at its request count long before, even on a loaded box). */
  const LOAD_CAP_MS = 240_000;

  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis(), startBackend('prod'), startBackend('gray')]);
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
    gateway = await startGatewayProcess({
      config: {
        // A poll longer than the test, so what is counted is the request path: polls would add
        // a few GETs a second.
        store: { kind: 'redis', url: redis.url, namespace: 'steady', pollMs: 3_600_000, pingMs: PING_MS },
        upstreams: { prod: { servers: [prod.url] }, gray: { servers: [gray.url] } },
        identity: { sources: [{ tokenLookup: { cacheTtlMs: 3_600_000 } }] },
        services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ uidRange: { fromKey: 'Grayscale_Range' } }] } }],
      },
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });

  /**
   * Commands the server ran, except PING (keep-alive, time-driven), INFO (this test's own reads)
   * and the gateway's load report: no write happens here, so every EVAL (and the TIME, HSET and
   * PEXPIRE it runs) is that report, which follows the clock (every 250 ms at most), not the
   * requests; bounded by time below.
   */
  const CLOCK_DRIVEN = new Set(['ping', 'info', 'eval', 'time', 'hset', 'pexpire']);
  const requestPathCommands = (counts: Record<string, number>) =>
    Object.entries(counts).reduce((sum, [name, calls]) => (CLOCK_DRIVEN.has(name) ? sum : sum + calls), 0);

  async function measure(requests: number) {
    const before = await commandCounts(redis.client);
    const startedAt = Date.now();
    // Bounded by the count: how long the requests take is the box's business, not the property's.
    const load = await runLoad({ url: gateway.url, headers: { TOKEN: SEED_TOKEN }, durationMs: LOAD_CAP_MS, maxRequests: requests, concurrency: 4, check: (v) => v === 'gray' });
    const elapsedMs = Date.now() - startedAt;
    const after = await commandCounts(redis.client);
    return {
      load,
      elapsedMs,
      commands: requestPathCommands(after) - requestPathCommands(before),
      gets: (after.get ?? 0) - (before.get ?? 0),
      pings: (after.ping ?? 0) - (before.ping ?? 0),
      reports: (after.eval ?? 0) - (before.eval ?? 0),
    };
  }

  it('N and 10 N warm requests cost the same Redis commands: none', async () => {
    // Warm: each worker keeps its own token cache, so each looks the token up once (one GET per
    // worker) and answers from its cache after that. A request on a connection of its own goes
    // to the next worker in turn, so such requests reach them all.
    const workers = gateway.workers;
    const gets = (await commandCounts(redis.client)).get ?? 0;
    await eventually(
      async () => {
        expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN, connection: 'close' })).toBe('gray');
        const looked = ((await commandCounts(redis.client)).get ?? 0) - gets;
        if (looked > workers) throw new Error(`${looked} token lookups by ${workers} workers: a warm worker looked the token up again`);
        expect(looked).toBe(workers);
      },
      { withinMs: 3_000 },
    );

    const small = await measure(200);
    const large = await measure(2_000);
    for (const run of [small, large]) {
      expect(run.load.failures).toEqual([]);
      expect(run.load.failed).toBe(0);
    }
    expect(small.load.sent).toBe(200);
    expect(large.load.sent).toBe(2_000);
    expect(small.commands).toBe(0);
    expect(large.commands).toBe(0);
    expect(large.gets).toBe(0);
    // PINGs follow time, not requests: at most one per pingMs per pinged connection (+1 at each edge).
    expect(large.pings).toBeLessThanOrEqual(2 * (Math.ceil(large.elapsedMs / PING_MS) + 1));
    // Load reports follow the clock: at most one per 250 ms, however many requests.
    expect(large.reports).toBeLessThanOrEqual(Math.ceil(large.elapsedMs / 250) + 2);
  }, 600_000);

  it('an unknown token costs one lookup, then is cached as unknown (no lookup per request)', async () => {
    const before = (await commandCounts(redis.client)).get ?? 0;
    const startedAt = Date.now();
    const load = await runLoad({ url: gateway.url, headers: { TOKEN: 'unknownButWellFormed' }, durationMs: LOAD_CAP_MS, maxRequests: 300, concurrency: 4, check: (v) => v === 'prod' });
    expect(load.failed).toBe(0);
    const elapsedMs = Date.now() - startedAt;
    const gets = ((await commandCounts(redis.client)).get ?? 0) - before;
    expect(load.sent).toBe(300);
    // Concurrent misses in one worker share one lookup; after that, one per negative-cache
    // lifetime (1 s) at most, in each worker (each has its own cache).
    expect(gets).toBeGreaterThanOrEqual(1);
    expect(gets).toBeLessThanOrEqual(gateway.workers * (1 + Math.ceil(elapsedMs / 1_000)));
  });
  it('oversized or malformed tokens are refused before any Redis call; a garbage user id routes to prod, never a 5xx', async () => {
    const before = (await commandCounts(redis.client)).get ?? 0;
    for (const token of ['x'.repeat(300), 'has space', 'semi;colon', 'ünïcode']) {
      const load = await runLoad({ url: gateway.url, headers: { TOKEN: token }, durationMs: LOAD_CAP_MS, maxRequests: 20, concurrency: 2, check: (v) => v === 'prod' });
      expect(load.failures).toEqual([]);
      expect(load.sent).toBe(20);
    }
    expect(((await commandCounts(redis.client)).get ?? 0) - before).toBe(0);
    await redis.client.set('TOKEN_garbageValue', '12 34');
    await redis.client.set('TOKEN_leadingZero', '01234');
    for (const token of ['garbageValue', 'leadingZero']) {
      const load = await runLoad({ url: gateway.url, headers: { TOKEN: token }, durationMs: LOAD_CAP_MS, maxRequests: 20, concurrency: 2, check: (v) => v === 'prod' });
      expect(load.failures).toEqual([]);
    }
    expect(gateway.output()).toMatch(/not a user id/);
  });
});
