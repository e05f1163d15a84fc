import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { runCli, send, startOpenRestyGateway, startUserNginx, type NginxProcess, type OpenRestyGateway } from '../helpers/openresty.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { routingDocument, writeNext, writerStore } from '../helpers/redis-routing.js';
import type { RedisStore } from '../../src/store/redis/redis-store.js';

// One fleet on one Redis: a Node gateway, an OpenResty gateway (graygate + the nginx it runs), and
// a user's nginx with `graygate openresty conf`'s files and no graygate beside it (it reads the
// routing from Redis alone). Every caller gets the same version from each, before and after a
// rule change written to the store, and the nginx apply it without a reload.

const IDS = Array.from({ length: 120 }, (_, i) => String(1000 + i * 7));

describe('a fleet of a Node and an OpenResty gateway on one Redis', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let node: GatewayProcess;
  let openresty: OpenRestyGateway;
  let userNginx: NginxProcess;
  let writer: RedisStore;
  const namespace = `fleet-${Math.random().toString(36).slice(2, 8)}`;

  const routing = (percent: number) => ({
    upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [
      {
        name: 'app',
        stable: 'app-v1',
        release: {
          candidate: 'app-v2',
          state: 'canary',
          rules: [
            { name: 'staff', uidRange: { ranges: [{ from: 1000, to: 1050 }] } },
            { name: 'share', percentage: { percent } },
          ],
        },
      },
    ],
  });

  const answersOf = async (url: string) => {
    const answers: string[] = [];
    for (const id of IDS) answers.push(String((await send(url, { headers: { 'x-user-id': id } })).version));
    return answers;
  };

  beforeAll(async () => {
    redis = await startRedis();
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    const store = { kind: 'redis', url: redis.url, namespace, pollMs: 500 };
    const config = { log: { level: 'info', format: 'json' }, admin: { listen: '127.0.0.1:0' }, store, ...routing(30) };
    node = await startGatewayProcess({ config, workers: 1 });
    openresty = await startOpenRestyGateway({ config, workers: 2 });
    // The user's nginx: the conf from a config file naming the same store, no graygate beside it.
    const dir = mkdtempSync(path.join(tmpdir(), 'graygate-fleet-'));
    writeFileSync(path.join(dir, 'graygate.yaml'), stringify({ store }));
    const written = await runCli(['openresty', 'conf', '--config', path.join(dir, 'graygate.yaml'), '--out', path.join(dir, 'nginx')]);
    expect(written.code, written.stderr).toBe(0);
    userNginx = await startUserNginx(path.join(dir, 'nginx'));
    writer = writerStore(redis.url, namespace);
  });
  afterAll(async () => {
    await writer?.close();
    await Promise.all([node?.stop(), openresty?.stop(), userNginx?.stop()]);
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('gives every caller the same version on each gateway', async () => {
    const fromNode = await answersOf(node.url);
    expect(new Set(fromNode)).toEqual(new Set(['stable', 'candidate']));
    await eventually(async () => expect(await answersOf(openresty.url)).toEqual(fromNode));
    await eventually(async () => expect(await answersOf(userNginx.url)).toEqual(fromNode));
  });

  it('applies a rule change written to the store on each, the nginx without a reload', async () => {
    const workers = { openresty: openresty.workerPids().sort(), user: userNginx.workerPids().sort() };
    const before = await answersOf(node.url);
    const version = await writeNext(writer, routingDocument(routing(70)), 'raise the share');
    await eventually(async () => {
      const fleet = (await send(`http://127.0.0.1:${String(node.logs().find((l) => l.event === 'admin-listening')?.port)}`, { path: '/v1/fleet' })).json as { gateways: { servedVersion: number }[] };
      expect(fleet.gateways.map((g) => g.servedVersion)).toEqual([version, version]);
    });
    const after = await answersOf(node.url);
    // Raising a percentage only adds callers.
    expect(after.filter((v) => v === 'candidate').length).toBeGreaterThan(before.filter((v) => v === 'candidate').length);
    before.forEach((v, i) => v === 'candidate' && expect(after[i]).toBe('candidate'));
    await eventually(async () => expect(await answersOf(openresty.url)).toEqual(after));
    await eventually(async () => expect(await answersOf(userNginx.url)).toEqual(after));
    expect(openresty.workerPids().sort()).toEqual(workers.openresty);
    expect(userNginx.workerPids().sort()).toEqual(workers.user);
  });

  it('keeps routing through a Redis that stops answering, and follows the next change once it answers again', async () => {
    const before = await answersOf(userNginx.url);
    redis.pause();
    try {
      // The last good routing is in each nginx's shared dict: nothing changes, nothing fails.
      expect(await answersOf(userNginx.url)).toEqual(before);
      expect(await answersOf(openresty.url)).toEqual(before);
    } finally {
      redis.resume();
    }
    await writeNext(writer, routingDocument(routing(10)), 'lower the share', 30_000);
    const after = await answersOf(node.url);
    await eventually(async () => expect(await answersOf(userNginx.url)).toEqual(after));
    await eventually(async () => expect(await answersOf(openresty.url)).toEqual(after));
  });

  it('shows the OpenResty gateway in the fleet view with the version its nginx serves', async () => {
    const admin = `http://127.0.0.1:${String(openresty.logs().find((l) => l.event === 'admin-listening')?.port)}`;
    const fleet = (await send(admin, { path: '/v1/fleet' })).json as { store: { version: number }; gateways: { self: boolean; servedVersion: number; dataPlane?: string }[]; split: boolean };
    const self = fleet.gateways.find((g) => g.self);
    expect(self?.dataPlane).toBe('openresty');
    await eventually(async () => {
      const now = (await send(admin, { path: '/v1/fleet' })).json as typeof fleet;
      expect(now.gateways.find((g) => g.self)?.servedVersion).toBe(now.store.version);
      expect(now.gateways.length).toBe(2);
      expect(now.split).toBe(false);
    });
  });
});
