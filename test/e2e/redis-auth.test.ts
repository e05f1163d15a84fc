import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, SEED_TOKEN, SEED_USER_ID, writerStore, writeNext } from '../helpers/redis-routing.js';

/** A Redis with requirepass, as in production: everything works, and no log line shows the password. */
const PASSWORD = 'pw-Zq7xK2-never-logged';

describe('Redis with a password', () => {
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  const gateways: GatewayProcess[] = [];

  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis({ password: PASSWORD }), startBackend('prod'), startBackend('gray')]);
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
  });

  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
  });

  it('the drop-in and a config-file gateway work with redis://:password@host:port', async () => {
    expect(redis.url).toContain(PASSWORD);
    const dropIn = await startGatewayProcess({ args: ['--listen', '127.0.0.1:0', '--log-level', 'debug', '--redis', redis.url, '--stable', prod.url, '--candidate', gray.url] });
    gateways.push(dropIn);
    await eventually(async () => expect(await versionFor(dropIn.url, { TOKEN: SEED_TOKEN })).toBe('gray'), { withinMs: 3_000 });
    const configured = await startGatewayProcess({
      config: { log: { level: 'debug' }, store: { kind: 'redis', url: redis.url, namespace: 'auth' }, ...headerRangeRouting(prod, gray, { from: 1, to: 5000 }) },
    });
    gateways.push(configured);
    expect(await versionFor(configured.url, { 'x-user-id': '1234' })).toBe('gray');
    const writer = writerStore(redis.url, 'auth');
    try {
      await writeNext(writer, routingDocument(headerRangeRouting(prod, gray, { from: 1, to: 100 })), 'with auth');
    } finally {
      await writer.close();
    }
    await eventually(async () => expect(await versionFor(configured.url, { 'x-user-id': '1234' })).toBe('prod'), { withinMs: 3_000 });
    for (const gateway of [dropIn, configured]) expect(gateway.output()).not.toContain(PASSWORD);
  });

  it('a wrong password: the drop-in still answers (fail safe to prod) and logs neither password', async () => {
    const wrong = 'wrong-Pw-4471-never-logged';
    const url = redis.url.replace(encodeURIComponent(PASSWORD), wrong);
    const dropIn = await startGatewayProcess({ args: ['--listen', '127.0.0.1:0', '--log-level', 'debug', '--redis', url, '--stable', prod.url, '--candidate', gray.url], readyWithinMs: 15_000 });
    gateways.push(dropIn);
    expect(await versionFor(dropIn.url, { TOKEN: SEED_TOKEN })).toBe('prod');
    // The refusal is logged (debug), with the address masked.
    const refused = await dropIn.waitForLog((line) => /WRONGPASS/.test(String(line.err)), { withinMs: 5_000 });
    expect(refused.store).toMatch(/^redis:\/\/:\*\*\*@127\.0\.0\.1:\d+$/);
    expect(dropIn.output()).not.toContain(wrong);
    expect(dropIn.output()).not.toContain(PASSWORD);
  });
});
