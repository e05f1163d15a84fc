import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { SEED_TOKEN, SEED_USER_ID } from '../helpers/redis-routing.js';

/**
 * Delivery that depends on server state: keyspace subscriptions die with the server.
 * After Redis restarts (same notify-keyspace-events), the gateway's keyspace subscriber is back
 * and a SET Grayscale_Range is picked up at once again, not at the next poll.
 */
describe('keyspace events after a Redis restart', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;
  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis({ persist: true, args: ['--notify-keyspace-events', 'KA'] }), startBackend('prod'), startBackend('gray')]);
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: redis.url, pollMs: 10_000 },
        upstreams: { prod: { servers: [prod.url] }, gray: { servers: [gray.url] } },
        identity: { sources: [{ tokenLookup: { cacheTtlMs: 60_000 } }] },
        services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ uidRange: { fromKey: 'Grayscale_Range' } }] } }],
      },
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });
  it('a SET Grayscale_Range after the restart is picked up at once', async () => {
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('gray'), { withinMs: 3_000 });
    await redis.restart();
    await eventually(async () => {
      const list = (await redis.client.call('CLIENT', 'LIST', 'TYPE', 'pubsub')) as string;
      expect(list).toMatch(/name=graygate-keyspace .*sub=1/);
    }, { withinMs: 5_000 });
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":100}');
    // The poll is 10 s: a pickup within 2 s came through the resubscribed keyspace channel.
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('prod'), { withinMs: 2_000 });
  });
});
