import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, writerStore, writeNext } from '../helpers/redis-routing.js';

/** `--redis URL` with `--config`: the file's store is replaced, its other Redis settings kept. */
describe('start --config FILE --redis URL', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  const gateways: GatewayProcess[] = [];

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
  });

  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('a file-store config file: routing moves to Redis (seeded from the file), changes come from Redis', async () => {
    const gateway = await startGatewayProcess({ config: headerRangeRouting(stable, candidate, { from: 1, to: 5000 }), args: ['--redis', redis.url] });
    gateways.push(gateway);
    expect(gateway.logs().find((line) => line.event === 'listening')?.store).toBe('redis');
    const stored = JSON.parse((await redis.client.get('{graygate}:doc')) ?? 'null') as { version: number };
    expect(stored.version).toBe(1);
    expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('candidate');
    const writer = writerStore(redis.url);
    try {
      await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 100 })), 'via redis');
      await eventually(async () => expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('stable'), { withinMs: 3_000 });
    } finally {
      await writer.close();
    }
  });

  it('a redis-store config file: the address is replaced, its namespace kept', async () => {
    const gateway = await startGatewayProcess({
      config: { store: { kind: 'redis', url: `redis://127.0.0.1:${await deadPort()}`, namespace: 'flagged' }, ...headerRangeRouting(stable, candidate, { from: 1, to: 5000 }) },
      args: ['--redis', redis.url],
    });
    gateways.push(gateway);
    expect(JSON.parse((await redis.client.get('{flagged}:doc')) ?? 'null')).toMatchObject({ version: 1 });
    expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('candidate');
  });

  it('the drop-in flags without --redis, or only half of them, are refused with exit code 2 and a reason', async () => {
    await expect(startGatewayProcess({ args: ['--listen', '127.0.0.1:0', '--stable', stable.url, '--candidate', candidate.url] })).rejects.toThrow(
      /exited \(2\)[\s\S]*--redis/,
    );
    await expect(startGatewayProcess({ args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', stable.url] })).rejects.toThrow(
      /exited \(2\)[\s\S]*--candidate/,
    );
  });
});
