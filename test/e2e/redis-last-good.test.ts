import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../../src/store/redis/redis-store.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { runLoad, versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, writerStore, writeNext } from '../helpers/redis-routing.js';

/**
 * Fail static across restarts: a gateway started while Redis is down boots from the
 * last-known-good copy on disk (by default `<config file>.last-good.json`), says so in its log,
 * and serves the last rules it applied — not the config file's, which Redis had overridden.
 */
describe('boot with Redis down', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let writer: RedisStore;
  let dir: string;
  const gateways: GatewayProcess[] = [];

  const config = () => ({
    store: { kind: 'redis', url: redis.url, namespace: 'lastgood', pollMs: 500, commandTimeoutMs: 500 },
    // The file says 1..5000; version 2 in Redis says 1..100. Only version 2 may be served.
    ...headerRangeRouting(stable, candidate, { from: 1, to: 5000 }),
  });

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis({ persist: true }), startBackend('stable'), startBackend('candidate')]);
    writer = writerStore(redis.url, 'lastgood');
    dir = mkdtempSync(path.join(tmpdir(), 'graygate-lastgood-'));
  });

  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await writer?.close();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('starts from the last good copy on disk, logs it, serves the last rules, and follows Redis once it is back', async () => {
    const lastGoodPath = path.join(dir, 'graygate.yaml.last-good.json');
    const first = await startGatewayProcess({ dir, config: config() });
    gateways.push(first);
    expect(await versionFor(first.url, { 'x-user-id': '1234' })).toBe('candidate');
    await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 100 })), 'shrink to 1..100');
    await eventually(async () => expect(await versionFor(first.url, { 'x-user-id': '1234' })).toBe('stable'), { withinMs: 3_000 });
    await eventually(() => expect((JSON.parse(readFileSync(lastGoodPath, 'utf8')) as { version: number }).version).toBe(2), { withinMs: 3_000 });
    expect(await first.stop()).toBe(0);

    await redis.kill('SIGKILL');
    const second = await startGatewayProcess({ dir, config: config(), });
    gateways.push(second);
    const said = second.logs().find((line) => String(line.msg).includes('last good') && String(line.msg).includes('version 2'));
    expect(said, second.output()).toBeDefined();
    expect(said!.path).toBe(lastGoodPath);
    // Version 2's rules, not the file's: 1234 is out, 50 is in; every request succeeds.
    const load = await runLoad({ url: second.url, headers: { 'x-user-id': '1234' }, durationMs: 120_000, maxRequests: 200, concurrency: 2, check: (v) => v === 'stable' });
    expect(load.failures).toEqual([]);
    expect(load.sent).toBe(200);
    expect(await versionFor(second.url, { 'x-user-id': '50' })).toBe('candidate');

    // Redis is back (with its data): the gateway resyncs, and a later change applies.
    await redis.restart();
    await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1000, to: 2000 })), 'move to 1000..2000');
    await eventually(async () => expect(await versionFor(second.url, { 'x-user-id': '1234' })).toBe('candidate'), { withinMs: 5_000 });
    expect(await versionFor(second.url, { 'x-user-id': '50' })).toBe('stable');
    await eventually(() => expect((JSON.parse(readFileSync(lastGoodPath, 'utf8')) as { version: number }).version).toBe(3), { withinMs: 3_000 });
  });

  it('a store.lastGoodPath relative to the config file is where the copy goes', async () => {
    const sub = mkdtempSync(path.join(dir, 'rel-'));
    mkdirSync(path.join(sub, 'state'));
    const gateway = await startGatewayProcess({ dir: sub, config: { ...config(), store: { ...config().store, lastGoodPath: 'state/routing.json' } } });
    gateways.push(gateway);
    await eventually(() => expect(existsSync(path.join(sub, 'state/routing.json')), gateway.output()).toBe(true), { withinMs: 3_000 });
  });
});
