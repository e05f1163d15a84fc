import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting } from '../helpers/redis-routing.js';

// store.lastGoodPath in a directory that does not exist yet (e.g. state/routing.json, or
// /var/lib/graygate/routing.json on a fresh host): the copy is never written, only a warning per apply.
describe('store.lastGoodPath in a missing directory', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let dir: string;
  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    dir = mkdtempSync(path.join(tmpdir(), 'graygate-lastgood-dir-'));
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  it('creates the directory and writes the copy', async () => {
    gateway = await startGatewayProcess({
      dir,
      config: { store: { kind: 'redis', url: redis.url, lastGoodPath: 'state/routing.json' }, ...headerRangeRouting(stable, candidate, { from: 1, to: 5000 }) },
    });
    await eventually(() => expect(existsSync(path.join(dir, 'state/routing.json')), gateway.output()).toBe(true), { withinMs: 3_000 });
  });
});
