import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startBackgroundLoad } from '../helpers/background-load.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { get, versionFor, type LoadResult } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { parsePrometheusText, value } from '../observe/prometheus-text.js';

/**
 * A known gray user never flips to stable because the store is slow or gone: token lookups serve
 * the last known id while they refresh it in the background. Through the real gateway process
 * and a real redis-server: Redis hung (SIGSTOP), Redis killed, and a loaded box (CPU burners
 * beside the gateway), each under a load loop of one known user whose every answer must be the
 * candidate. A token never seen during the outage goes to stable; a changed or deleted token
 * takes effect once Redis answers. Also: a refused Grayscale_Range value counts as a refused
 * reload, and an over-long header id is counted.
 */

const TTL_MS = 300;
const RANGE_KEY = 'Grayscale_Range';
const IN_RANGE = '{"idStart":1,"idEnd":5000}';

/** Busy loops in child processes, each ending by itself after `maxMs` even if this process dies hard. */
function startCpuBurners(count: number, maxMs: number): { stop(): void } {
  const children: ChildProcess[] = Array.from({ length: count }, () =>
    spawn(process.execPath, ['-e', `const end = Date.now() + ${maxMs}; while (Date.now() < end) {}`], { stdio: 'ignore' }),
  );
  const stop = () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', stop);
  return { stop };
}

function routing(redisUrl: string, prod: Backend, gray: Backend) {
  return {
    admin: { listen: '127.0.0.1:0' },
    store: { kind: 'redis', url: redisUrl, pollMs: 1_000, commandTimeoutMs: 500, pingMs: 500 },
    upstreams: { prod: { servers: [prod.url] }, gray: { servers: [gray.url] } },
    identity: { sources: [{ tokenLookup: { cacheTtlMs: TTL_MS, negativeTtlMs: TTL_MS } }, { header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', state: 'canary', rules: [{ name: 'range', uidRange: { fromKey: RANGE_KEY } }] } }],
  };
}

async function adminUrlOf(gateway: GatewayProcess): Promise<string> {
  const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening', { withinMs: 30_000 });
  return `http://127.0.0.1:${String(line.port)}`;
}

async function scrape(adminUrl: string) {
  const response = await request(`${adminUrl}/metrics`);
  return parsePrometheusText(await response.body.text());
}

/** Token lookups that ended in a failure (an error or a timeout), read from the gateway's metrics. */
async function lookupFailures(adminUrl: string): Promise<number> {
  const samples = await scrape(adminUrl);
  return value(samples, 'graygate_identity_lookups_total', { source: 'tokenLookup', result: 'error' }) + value(samples, 'graygate_identity_lookups_total', { source: 'tokenLookup', result: 'timeout' });
}

/** Token lookups the store answered (misses and background refreshes). */
async function lookupsAnswered(adminUrl: string): Promise<number> {
  return value(await scrape(adminUrl), 'graygate_identity_lookups_total', { source: 'tokenLookup', result: 'miss' });
}

/**
 * Runs a load loop of the known user (every answer must be the candidate) across `fault`:
 * starts the loop, applies the fault, runs `during`, then `recover` (always). Resolves with the
 * loop's counts; `byVersion.prod` is the number of version flips.
 */
async function acrossFault(
  gateway: GatewayProcess,
  token: string,
  steps: { fault: () => Promise<void> | void; during: () => Promise<void>; recover: () => Promise<void> | void },
): Promise<LoadResult> {
  const load = startBackgroundLoad({ url: gateway.url, headers: { TOKEN: token }, concurrency: 2, maxMs: 90_000, maxRequests: 200_000, check: (version) => version === 'gray' });
  let result: LoadResult;
  try {
    await eventually(() => expect(load.sent()).toBeGreaterThan(20), { withinMs: 20_000 });
    await steps.fault();
    await steps.during();
  } finally {
    try {
      await steps.recover();
    } finally {
      result = await load.stop();
    }
  }
  return result;
}

function faultSuite(workers: string) {
  describe(`token identity through Redis faults (${workers === '1' ? 'one process' : `--workers ${workers}`})`, () => {
    let redis: RedisServer;
    let prod: Backend;
    let gray: Backend;
    let gateway: GatewayProcess;
    let adminUrl: string;
    const flips: Record<string, number> = {};

    beforeAll(async () => {
      // Persistent, so a killed Redis comes back with the document and the tokens.
      [redis, prod, gray] = await Promise.all([startRedis({ persist: true }), startBackend('prod'), startBackend('gray')]);
      await redis.client.set(RANGE_KEY, IN_RANGE);
      await redis.client.mset('TOKEN_known', '1234', 'TOKEN_seenDuringHang', '1234', 'TOKEN_seenWhileDown', '1234', 'TOKEN_seenUnderLoad', '1234');
      gateway = await startGatewayProcess({ config: routing(redis.url, prod, gray), env: { GRAYGATE_WORKERS: workers }, readyWithinMs: 60_000 });
      adminUrl = await adminUrlOf(gateway);
      await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: 'known' })).toBe('gray'), { withinMs: 10_000 });
    });

    afterAll(async () => {
      redis?.resume();
      await gateway?.stop();
      await Promise.all([prod?.close(), gray?.close()]);
      await redis?.stop();
      console.log(`token identity (${workers} worker(s)): version flips of a known user per fault ${JSON.stringify(flips)}`);
    });

    it('Redis hung (SIGSTOP): the known user stays on the candidate; a never-seen token goes to stable, then to the candidate once Redis answers', async () => {
      const failuresBefore = await lookupFailures(adminUrl);
      const result = await acrossFault(gateway, 'known', {
        fault: () => redis.pause(),
        during: async () => {
          // At least two background refreshes timed out: the known entry was past its TTL, and kept.
          await eventually(async () => expect((await lookupFailures(adminUrl)) - failuresBefore).toBeGreaterThanOrEqual(2), { withinMs: 30_000, everyMs: 200 });
          const response = await get(gateway.url, { TOKEN: 'seenDuringHang' });
          expect([response.status, response.json?.version]).toEqual([200, 'prod']);
        },
        recover: () => redis.resume(),
      });
      flips.sigstop = result.byVersion.prod ?? 0;
      expect(result.failures).toEqual([]);
      expect(result.byVersion.prod ?? 0).toBe(0);
      expect(result.byVersion.gray).toBeGreaterThan(0);
      // A failed lookup is not cached as unknown.
      await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: 'seenDuringHang' })).toBe('gray'), { withinMs: 10_000 });
    });

    it('Redis killed, then restarted: the known user stays on the candidate; a never-seen token goes to stable meanwhile', async () => {
      const failuresBefore = await lookupFailures(adminUrl);
      const result = await acrossFault(gateway, 'known', {
        fault: () => redis.kill(),
        during: async () => {
          await eventually(async () => expect((await lookupFailures(adminUrl)) - failuresBefore).toBeGreaterThanOrEqual(2), { withinMs: 30_000, everyMs: 200 });
          const response = await get(gateway.url, { TOKEN: 'seenWhileDown' });
          expect([response.status, response.json?.version]).toEqual([200, 'prod']);
        },
        recover: () => redis.restart(),
      });
      flips.killed = result.byVersion.prod ?? 0;
      expect(result.failures).toEqual([]);
      expect(result.byVersion.prod ?? 0).toBe(0);
      await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: 'seenWhileDown' })).toBe('gray'), { withinMs: 20_000 });
    });

    it('a loaded box (CPU burners beside the gateway): the known user stays on the candidate through many refreshes', async () => {
      const answeredBefore = await lookupsAnswered(adminUrl);
      let burners: { stop(): void } | undefined;
      const result = await acrossFault(gateway, 'known', {
        fault: () => {
          burners = startCpuBurners(4, 60_000);
        },
        during: async () => {
          // Ten refreshes of the known token (each after a TTL) answered while the box was busy.
          await eventually(async () => expect((await lookupsAnswered(adminUrl)) - answeredBefore).toBeGreaterThanOrEqual(10), { withinMs: 50_000, everyMs: 250 });
        },
        recover: () => burners?.stop(),
      });
      flips.cpuLoad = result.byVersion.prod ?? 0;
      expect(result.failures).toEqual([]);
      expect(result.byVersion.prod ?? 0).toBe(0);
    });
  });
}

faultSuite('1');
faultSuite('2');

describe('changes once Redis answers; refused range values; over-long ids', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;

  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis(), startBackend('prod'), startBackend('gray')]);
    await redis.client.set(RANGE_KEY, IN_RANGE);
    await redis.client.mset('TOKEN_changes', '1234', 'TOKEN_deleted', '1234', 'TOKEN_steady', '1234');
    gateway = await startGatewayProcess({ config: routing(redis.url, prod, gray), readyWithinMs: 60_000 });
    adminUrl = await adminUrlOf(gateway);
    for (const token of ['changes', 'deleted', 'steady']) {
      await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: token })).toBe('gray'), { withinMs: 10_000 });
    }
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });

  /**
   * Asks for `token` until `version` answers in every worker; then every later answer is `version`
   * too. Each worker caches tokens itself, so a change takes effect in each when its own entry is
   * refreshed (a stale entry answers once more while it is refreshed): requests on connections of
   * their own are spread over the workers, and a run of five per worker in a row with no other
   * answer asks each of them. Resolves with the time it took.
   */
  async function takesEffect(token: string, version: string): Promise<number> {
    const ask = () => versionFor(gateway.url, { TOKEN: token, connection: 'close' });
    const startedAt = performance.now();
    await eventually(
      async () => {
        for (let i = 0; i < 5 * gateway.workers; i++) expect(await ask()).toBe(version);
      },
      { withinMs: 20_000, everyMs: 20 },
    );
    const tookMs = performance.now() - startedAt;
    for (let i = 0; i < 20; i++) expect(await ask()).toBe(version);
    return tookMs;
  }

  it('a changed token (new user id) and a deleted one take effect, and stay', async () => {
    await redis.client.set('TOKEN_changes', '9999');
    await redis.client.del('TOKEN_deleted');
    const changedMs = await takesEffect('changes', 'prod');
    const deletedMs = await takesEffect('deleted', 'prod');
    await redis.client.set('TOKEN_changes', '42');
    const backMs = await takesEffect('changes', 'gray');
    console.log(`token identity: cacheTtlMs ${TTL_MS}; changed token in force after ${Math.round(changedMs)} ms, deleted after ${Math.round(deletedMs)} ms, changed back after ${Math.round(backMs)} ms`);
    expect(await versionFor(gateway.url, { TOKEN: 'steady' })).toBe('gray');
  });

  it('a malformed Grayscale_Range value is refused, counted as a refused reload, and the last good range stays', async () => {
    const before = value(await scrape(adminUrl), 'graygate_config_reloads_total', { result: 'refused' });
    const since = gateway.logs().length;
    await redis.client.set(RANGE_KEY, '{"idStart":"one"}');
    await gateway.waitForLog((line) => line.event === 'store-key-refused', { since, withinMs: 20_000 });
    await eventually(async () => expect(value(await scrape(adminUrl), 'graygate_config_reloads_total', { result: 'refused' }) - before).toBe(1), { withinMs: 10_000 });
    expect(await versionFor(gateway.url, { TOKEN: 'steady' })).toBe('gray');
    // Another malformed value is another refusal.
    await redis.client.set(RANGE_KEY, 'not json');
    await eventually(async () => expect(value(await scrape(adminUrl), 'graygate_config_reloads_total', { result: 'refused' }) - before).toBe(2), { withinMs: 20_000 });
    expect(value(await scrape(adminUrl), 'graygate_config_reloads_total', { result: 'applied' })).toBe(1);
    await redis.client.set(RANGE_KEY, IN_RANGE);
  });

  it('a header id over 256 characters is no id (stable) and is counted', async () => {
    const invalid = async () => value(await scrape(adminUrl), 'graygate_identity_lookups_total', { source: 'header', result: 'invalid' });
    const before = await invalid();
    expect(await versionFor(gateway.url, { 'x-user-id': '1'.repeat(257) })).toBe('prod');
    expect(await versionFor(gateway.url, { 'x-user-id': '12' })).toBe('gray');
    await eventually(async () => expect((await invalid()) - before).toBe(1), { withinMs: 10_000 });
  });
});
