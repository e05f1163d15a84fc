import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { SEED_TOKEN, SEED_USER_ID } from '../helpers/redis-routing.js';

/**
 * The drop-in gateway started while its Redis is down: fail safe (everyone to prod, every request
 * answered), then the recipe's keys are picked up once Redis is back — without anyone having to
 * touch Grayscale_Range again.
 */
describe('drop-in gateway started while Redis is down', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess;

  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis({ persist: true }), startBackend('prod'), startBackend('gray')]);
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
    await redis.kill('SIGKILL');
    gateway = await startGatewayProcess({
      args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', prod.url, '--candidate', gray.url],
      readyWithinMs: 20_000,
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });

  it('answers every request from prod while Redis is down', async () => {
    expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('prod');
    expect(await versionFor(gateway.url)).toBe('prod');
  });

  it('routes the seed token to gray once Redis is back with its keys unchanged', async () => {
    await redis.restart();
    expect(await redis.client.get('Grayscale_Range')).toBe('{"idStart":1,"idEnd":5000}');
    // The drop-in polls every 500 ms; the negative cache of the token lookup is 1 s.
    await eventually(async () => expect(await versionFor(gateway.url, { TOKEN: SEED_TOKEN })).toBe('gray'), { withinMs: 5_000 });
  });
});
