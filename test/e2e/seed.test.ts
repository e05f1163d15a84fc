import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { SEED_TOKEN, SEED_USER_ID } from '../helpers/redis-routing.js';

/**
 * The OpenResty + Redis recipe's own keys, unchanged, against a real
 * gateway process. Backends are named as in the recipe: `prod` (stable) and `gray` (candidate).
 */

function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.env.REDIS_CLI ?? 'redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5_000 }, (error, stdout) =>
      error ? reject(error) : resolve(stdout.trim()),
    );
  });
}

const seedToken = { TOKEN: SEED_TOKEN };

/** The walkthrough both suites share; `pickupMs` bounds how long a SET takes to reach routing. */
function seedScenario(context: () => { gateway: GatewayProcess; redis: RedisServer; pickupMs: number }) {
  it('a TOKEN whose user id is in Grayscale_Range reaches gray; no TOKEN or an unknown one reaches prod', async () => {
    const { gateway } = context();
    // A cold lookup may pass its 50 ms deadline on a busy box (fail safe: prod, not cached).
    await eventually(async () => expect(await versionFor(gateway.url, seedToken)).toBe('gray'), { withinMs: 3_000 });
    expect(await versionFor(gateway.url)).toBe('prod');
    expect(await versionFor(gateway.url, { TOKEN: 'noSuchTokenAnywhere' })).toBe('prod');
    // Header names are case-insensitive; the recipe's clients send `TOKEN`, others `token`. Each
    // worker has its own token cache: this request may reach one whose first lookup is still cold.
    await eventually(async () => expect(await versionFor(gateway.url, { token: SEED_TOKEN })).toBe('gray'), { withinMs: 3_000 });
  });

  it('SET Grayscale_Range in redis-cli moves the same caller to prod, with no restart', async () => {
    const { gateway, redis, pickupMs } = context();
    const pid = gateway.pid;
    expect(await redisCli(redis.port, 'SET', 'Grayscale_Range', '{"idStart":1,"idEnd":100}')).toBe('OK');
    await eventually(async () => expect(await versionFor(gateway.url, seedToken)).toBe('prod'), { withinMs: pickupMs });
    expect(gateway.pid).toBe(pid);
    expect(gateway.child.exitCode).toBeNull();
    // Bounds are inclusive: user 100 is in, 101 is out.
    await redis.client.set('TOKEN_edgeIn', '100');
    await redis.client.set('TOKEN_edgeOut', '101');
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: 'edgeIn' })).toBe('gray'), { withinMs: 3_000 });
    expect(await versionFor(gateway.url, { TOKEN: 'edgeOut' })).toBe('prod');
  });

  it('a malformed Grayscale_Range is refused with a log line and the last good range stays', async () => {
    const { gateway, redis, pickupMs } = context();
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await eventually(async () => expect(await versionFor(gateway.url, seedToken)).toBe('gray'), { withinMs: pickupMs });
    const refusal = (since: number, text: string) =>
      gateway.waitForLog((line) => line.event === 'store-key-refused' && String(line.msg).includes('Grayscale_Range') && String(line.msg).includes(text), {
        since,
        withinMs: pickupMs,
      });
    let mark = gateway.logs().length;
    expect(await redisCli(redis.port, 'SET', 'Grayscale_Range', 'garbage')).toBe('OK');
    await refusal(mark, 'garbage');
    expect(await versionFor(gateway.url, seedToken)).toBe('gray');
    // An inverted range is malformed too: still the last good one.
    await redis.client.set('TOKEN_probe5001', '5001');
    mark = gateway.logs().length;
    await redis.client.set('Grayscale_Range', '{"idStart":5000,"idEnd":1}');
    await refusal(mark, 'idStart');
    expect(await versionFor(gateway.url, seedToken)).toBe('gray');
    expect(await versionFor(gateway.url, { TOKEN: 'probe5001' })).toBe('prod');
    // A good value after the garbage applies.
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":100}');
    await eventually(async () => expect(await versionFor(gateway.url, seedToken)).toBe('prod'), { withinMs: pickupMs });
    expect(gateway.child.exitCode).toBeNull();
  });

  it('with Grayscale_Range deleted nobody matches, and setting it again brings gray back', async () => {
    const { gateway, redis, pickupMs } = context();
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await eventually(async () => expect(await versionFor(gateway.url, seedToken)).toBe('gray'), { withinMs: pickupMs });
    await redis.client.del('Grayscale_Range');
    await eventually(async () => expect(await versionFor(gateway.url, seedToken)).toBe('prod'), { withinMs: pickupMs });
    await redis.client.set('Grayscale_Range', '{"idStart":1234,"idEnd":1234}');
    await eventually(async () => expect(await versionFor(gateway.url, seedToken)).toBe('gray'), { withinMs: pickupMs });
  });
}

async function seedKeys(redis: RedisServer): Promise<void> {
  await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
  await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
}

describe('the seed scenario through a config file with the redis store (keyspace notifications on)', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;

  beforeAll(async () => {
    // The recipe's Redis with keyspace events enabled: a SET is picked up at once, not by the poll.
    // KA, not K$: DEL is a generic event (g) and expiry is x, which K$ does not send.
    [redis, prod, gray] = await Promise.all([startRedis({ args: ['--notify-keyspace-events', 'KA'] }), startBackend('prod'), startBackend('gray')]);
    await seedKeys(redis);
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: redis.url, namespace: 'seedtest', pollMs: 5_000 },
        upstreams: { prod: { servers: [prod.url] }, gray: { servers: [gray.url] } },
        identity: { sources: [{ tokenLookup: {} }] },
        services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ name: 'gray-range', uidRange: { fromKey: 'Grayscale_Range' } }] } }],
      },
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });

  // Keyspace events are on and the poll is 5 s: a pickup within 2 s came from the notification.
  seedScenario(() => ({ gateway, redis, pickupMs: 2_000 }));

  it('seeded Redis with the file\'s routing as version 1 under {namespace}:doc', async () => {
    const stored = JSON.parse((await redis.client.get('{seedtest}:doc')) ?? 'null') as { version: number; document: { services: { name: string }[] } };
    expect(stored.version).toBe(1);
    expect(stored.document.services.map((s) => s.name)).toEqual(['app']);
  });
});

describe('the seed scenario through the drop-in command line (no config file)', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;

  beforeAll(async () => {
    // Debian's default Redis: keyspace events off, so the range key is polled (store.pollMs, 2 s).
    [redis, prod, gray] = await Promise.all([startRedis(), startBackend('prod'), startBackend('gray')]);
    await seedKeys(redis);
    gateway = await startGatewayProcess({
      args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', prod.url, '--candidate', gray.url],
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });

  seedScenario(() => ({ gateway, redis, pickupMs: 5_000 }));

  it('--token-header, --token-key and --range-key rename the recipe\'s keys', async () => {
    await redis.client.set('sess:abc123', '42');
    await redis.client.set('gray:range', '{"idStart":40,"idEnd":50}');
    const renamed = await startGatewayProcess({
      args: [
        '--listen', '127.0.0.1:0',
        '--redis', redis.url,
        '--stable', prod.url,
        '--candidate', gray.url,
        '--token-header', 'x-session',
        '--token-key', 'sess:{token}',
        '--range-key', 'gray:range',
      ],
    });
    try {
      await eventually(async () => expect(await versionFor(renamed.url, { 'x-session': 'abc123' })).toBe('gray'), { withinMs: 3_000 });
      expect(await versionFor(renamed.url, { TOKEN: 'abc123' })).toBe('prod');
      await redis.client.set('gray:range', '{"idStart":1,"idEnd":41}');
      await eventually(async () => expect(await versionFor(renamed.url, { 'x-session': 'abc123' })).toBe('prod'), { withinMs: 5_000 });
    } finally {
      await renamed.stop();
    }
  });
});
