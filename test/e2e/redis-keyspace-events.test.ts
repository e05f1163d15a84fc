import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { SEED_TOKEN, SEED_USER_ID } from '../helpers/redis-routing.js';

// SET is a `$` keyspace event, DEL a `g` one and expiry an `x` one: with the K$gx the store
// recommends, all three reach the gateway at once, long before the (10 s) poll.
describe('notify-keyspace-events K$gx (what the store log recommends)', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;
  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis({ args: ['--notify-keyspace-events', 'K$gx'] }), startBackend('prod'), startBackend('gray')]);
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: redis.url, pollMs: 10_000 },
        upstreams: { prod: { servers: [prod.url] }, gray: { servers: [gray.url] } },
        identity: { sources: [{ tokenLookup: {} }] },
        services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ uidRange: { fromKey: 'Grayscale_Range' } }] } }],
      },
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });
  it('says SET-only flags leave DEL and expiry to the poll', async () => {
    await redis.client.config('SET', 'notify-keyspace-events', 'K$');
    const { createRedisStore } = await import('../../src/store/redis/redis-store.js');
    const { RedisStoreSettings } = await import('../../src/config/schema.js');
    const { parseRoutingDocument } = await import('../../src/config/load.js');
    const lines: string[] = [];
    const { pino } = await import('pino');
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url }), { validate: parseRoutingDocument, logger });
    try {
      const stop = store.keyReader.watchKeys(['Grayscale_Range'], () => {});
      await eventually(() => expect(lines.join('')).toMatch(/cover SET only.*K\$gx/));
      stop();
    } finally {
      await store.close();
      await redis.client.config('SET', 'notify-keyspace-events', 'K$gx');
    }
  });
  it('a DEL of the range key is picked up at once, like a SET', async () => {
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('gray'), { withinMs: 3_000 });
    expect(gateway.output()).toMatch(/keyspace notifications are on/);
    await redis.client.del('Grayscale_Range');
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('prod'), { withinMs: 2_000 });
  });
  it('an expiring range key is picked up at once when it expires', async () => {
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('gray'), { withinMs: 2_000 });
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}', 'PX', 300);
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('prod'), { withinMs: 2_000 });
  });
});
