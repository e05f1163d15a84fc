import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../../src/store/redis/redis-store.js';
import { graygate } from '../control/cli-runner.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, writerStore, writeNext } from '../helpers/redis-routing.js';

const TOKEN = 'restore-token-0123456789abcdef';
const POLL_MS = 500;
const COMMAND_TIMEOUT_MS = 1_500;

interface Fleet {
  scope: string;
  store: { version: number; epoch: string | null } | null;
  gateways: { instanceId: string; self: boolean; servedVersion: number | null; servedEpoch: string | null; behind: boolean }[];
  versions: { version: number | null; epoch: string | null; gateways: number }[];
  split: boolean;
}

/**
 * A fleet on a Redis that goes back in time within its epoch: restarted from an RDB snapshot
 * taken before the last write (what a restore from backup, or a failover that lost writes,
 * looks like). The running gateways serve the newer version, a gateway started afterwards reads
 * the older one: without care the fleet splits until the next write. The running gateways
 * write what they serve back to the store, and every gateway, running or started, follows it.
 */
describe('a fleet on a Redis restored from an older snapshot', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let writer: RedisStore;
  const gateways: GatewayProcess[] = [];
  const admins = new Map<GatewayProcess, string>();
  const user = { 'x-user-id': '1234' };
  const config = () => ({
    store: { kind: 'redis', url: redis.url, namespace: 'restore', pollMs: POLL_MS, commandTimeoutMs: COMMAND_TIMEOUT_MS },
    admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_RESTORE_TOKEN' }] },
    // Every config file says "users 1..10 on the candidate": user 1234 goes to stable.
    ...headerRangeRouting(stable, candidate, { from: 1, to: 10 }),
  });
  const start = async () => {
    const gateway = await startGatewayProcess({ dir: mkdtempSync(path.join(tmpdir(), 'graygate-restore-')), config: config(), env: { GG_RESTORE_TOKEN: TOKEN }, readyWithinMs: 30_000 });
    gateways.push(gateway);
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening', { withinMs: 20_000 });
    admins.set(gateway, `http://127.0.0.1:${String(line.port)}`);
    return gateway;
  };
  const api = async (gateway: GatewayProcess, method: 'GET' | 'PUT', url: string, body?: unknown) => {
    const response = await request(`${admins.get(gateway)!}${url}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
  };
  const fleetOf = async (gateway: GatewayProcess) => (await api(gateway, 'GET', '/v1/fleet')).body as unknown as Fleet;
  const storedVersion = async () => (JSON.parse((await redis.client.get('{restore}:doc')) ?? 'null') as { version: number } | null)?.version;
  const served = () => Promise.all(gateways.map((gateway) => versionFor(gateway.url, user)));
  const metric = async (gateway: GatewayProcess, name: string) => {
    const text = await (await request(`${admins.get(gateway)!}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).body.text();
    const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
    return match ? Number(match[1]) : undefined;
  };

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    writer = writerStore(redis.url, 'restore');
  });
  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop('SIGKILL')));
    await writer?.close();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('running gateways write the lost version back; they and a gateway started on the older store converge on it', async () => {
    const [first, second] = [await start(), await start()];
    // Version 2: still stable for user 1234. Snapshot it, then version 3 moves the user.
    await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 100 })), 'widen');
    expect(await redis.client.save()).toBe('OK');
    const lost = await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 2_000 })), 'the write the snapshot lacks');
    expect(lost).toBe(3);
    await eventually(async () => expect(await served()).toEqual(['candidate', 'candidate']));
    const epoch = (await fleetOf(first)).store!.epoch;

    // Hold the running gateways while Redis comes back from the snapshot and a third one starts
    // on it: the third serves version 2 — the split that used to last until the next write.
    first.child.kill('SIGSTOP');
    second.child.kill('SIGSTOP');
    let third: GatewayProcess;
    let resumedAt: number;
    try {
      await redis.restart();
      expect(await storedVersion()).toBe(2);
      expect(await redis.client.get('{restore}:epoch')).toBe(epoch);
      third = await start();
      expect(await versionFor(third.url, user)).toBe('stable');
    } finally {
      first.child.kill('SIGCONT');
      second.child.kill('SIGCONT');
      resumedAt = Date.now();
    }
    // Converged: every gateway serves the lost write's routing, which the store holds again.
    await eventually(async () => expect(await served()).toEqual(['candidate', 'candidate', 'candidate']), { withinMs: 30_000, everyMs: 25 });
    const convergedMs = Date.now() - resumedAt;
    console.log(`restored-snapshot split converged ${convergedMs} ms after the running gateways resumed (store poll every ${POLL_MS} ms)`);
    const stored = JSON.parse((await redis.client.get('{restore}:doc'))!) as { version: number; meta: { reason: string } };
    expect(stored.version).toBe(3);
    expect(stored.meta.reason).toMatch(/written back after the store went back to version 2/);
    // The gateway that wrote it back logs that after its write returns: the line may still be on
    // its way when the store already shows the write.
    await eventually(() => expect(gateways.some((gateway) => gateway.logs().some((line) => line.event === 'republished'))).toBe(true));

    // The fleet view from the gateway started last: one version, the store's, nobody behind.
    const fleet = await eventually(async () => {
      const view = await fleetOf(third!);
      expect(view.gateways).toHaveLength(3);
      expect(view.split).toBe(false);
      return view;
    });
    expect(fleet.store).toEqual({ version: 3, epoch });
    expect(fleet.gateways.every((g) => g.servedVersion === 3 && g.servedEpoch === epoch && !g.behind)).toBe(true);
    await eventually(async () => expect(await metric(third!, 'graygate_fleet_split')).toBe(0));
    expect(await metric(third!, 'graygate_store_up')).toBe(1);

    // And the next write is applied everywhere: nobody is stuck on a number of its own.
    await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 5 })), 'after the restore');
    await eventually(async () => expect(await served()).toEqual(['stable', 'stable', 'stable']));
  }, 180_000);

  it('a gateway that serves another version shows as behind and the fleet as split, in the view, the metric and `graygate status`', async () => {
    const [first] = gateways as [GatewayProcess];
    // The fleet has settled on the last write first: a gateway confirms a version in its next load
    // report, once every one of its workers serves it, which may follow the requests that saw it.
    const settled = await eventually(async () => {
      const view = await fleetOf(first);
      expect(view.gateways.filter((g) => g.behind)).toEqual([]);
      return view;
    });
    const current = settled.store!;
    // A gateway of the fleet that still serves an older version: its reports, written to the real
    // store as often as a gateway writes them (they go stale after 3 s otherwise).
    const lagging = () => writer.fleet.reportLoad('laggard:1:abc', { servedVersion: current.version - 1, servedEpoch: current.epoch, servedForMs: 10_000, inFlightRequests: 0, openConnections: 0, upstreams: {} });
    await lagging();
    const reporting = setInterval(() => void lagging().catch(() => undefined), 500);
    try {
      await checkSplit(current);
    } finally {
      clearInterval(reporting);
    }
    await writer.fleet.removeLoad('laggard:1:abc');
    expect((await fleetOf(first)).split).toBe(false);
    const calm = await graygate(['status', '--url', admins.get(first)!, '--token', TOKEN]);
    expect(calm.stdout).toMatch(/fleet: every gateway serves version/);
  }, 180_000);

  const checkSplit = async (current: { version: number }) => {
    const [first] = gateways as [GatewayProcess];
    // Eventually: a gateway may still be catching up with the store's version from the test before.
    await eventually(async () => {
      const view = await fleetOf(first);
      expect(view.split).toBe(true);
      expect(view.gateways.find((g) => g.instanceId === 'laggard:1:abc')).toMatchObject({ behind: true, servedVersion: current.version - 1 });
      expect(view.gateways.filter((g) => g.behind)).toHaveLength(1);
    });
    await eventually(async () => expect(await metric(first, 'graygate_fleet_split')).toBe(1));
    expect(await metric(first, 'graygate_fleet_versions')).toBe(2);
    const status = await graygate(['status', '--url', admins.get(first)!, '--token', TOKEN]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/FLEET SPLIT/);
    expect(status.stdout).toMatch(/laggard:1:abc/);
  };

  it('a write during a store pause answers within the documented deadline and is not applied when the store resumes', async () => {
    const [first] = gateways as [GatewayProcess];
    const before = await storedVersion();
    const document = (await api(first, 'GET', '/v1/config')).body;
    redis.pause();
    let elapsed: number;
    let answer: { status: number; body: Record<string, unknown> };
    try {
      const startedAt = Date.now();
      answer = await api(first, 'PUT', '/v1/config', { version: before, reason: 'during the pause', document: { ...(document.document as object) } });
      elapsed = Date.now() - startedAt;
      // A read answers within one deadline too (the store and the fleet's reports are read side by
      // side), so the CLI gives up within a few seconds, with the store's error.
      const statusStartedAt = Date.now();
      const statusAnswer = await api(first, 'GET', '/v1/status');
      const statusElapsed = Date.now() - statusStartedAt;
      expect(statusAnswer.body).toMatchObject({ version: null, storeUp: expect.any(Boolean), loadError: { code: 'GG_STORE_UNAVAILABLE' } });
      expect(statusElapsed).toBeLessThan(COMMAND_TIMEOUT_MS + 1_000);
      const cliStartedAt = Date.now();
      const status = await graygate(['status', '--url', admins.get(first)!, '--token', TOKEN]);
      const cliElapsed = Date.now() - cliStartedAt;
      console.log(`during a store pause: a write answered ${answer.status} after ${elapsed} ms, GET /v1/status after ${statusElapsed} ms, graygate status (a new node process) finished after ${cliElapsed} ms (commandTimeoutMs ${COMMAND_TIMEOUT_MS})`);
      expect(status.stdout).toMatch(/routing version unknown/);
    } finally {
      redis.resume();
    }
    expect(answer.status).toBe(503);
    expect((answer.body.error as { code: string }).code).toBe('GG_STORE_UNAVAILABLE');
    // One deadline for the read and the write together (it was a read deadline plus a write
    // deadline); the margin is for a loaded machine's timers, well under a second deadline.
    expect(elapsed).toBeLessThan(COMMAND_TIMEOUT_MS + 1_000);
    // Reported as failed, so never applied: three polls after the store answers, still the old version.
    await eventually(async () => expect(await metric(first, 'graygate_store_up')).toBe(1), { withinMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, POLL_MS * 3));
    expect(await storedVersion()).toBe(before);
  }, 180_000);

  it('a write just before a store pause reaches every gateway within two polls after the store answers again', async () => {
    const [first] = gateways as [GatewayProcess];
    const before = (await storedVersion())!;
    const written = await api(first, 'PUT', '/v1/config', {
      version: before,
      reason: 'just before the pause',
      document: routingDocument(headerRangeRouting(stable, candidate, { from: 1_000, to: 1_500 })),
    });
    expect(written.status).toBe(200);
    redis.pause();
    let resumedAt: number;
    try {
      await new Promise((resolve) => setTimeout(resolve, COMMAND_TIMEOUT_MS));
    } finally {
      redis.resume();
      resumedAt = Date.now();
    }
    await eventually(async () => expect(await served()).toEqual(['candidate', 'candidate', 'candidate']), { withinMs: 30_000, everyMs: 25 });
    console.log(`after a store pause, every gateway served the write made just before it ${Date.now() - resumedAt} ms after the store resumed (poll every ${POLL_MS} ms)`);
    const fleet = await eventually(async () => {
      const view = await fleetOf(first);
      expect(view.split).toBe(false);
      expect(view.gateways).toHaveLength(3);
      return view;
    });
    expect(fleet.gateways.every((g) => g.servedVersion === before + 1 && !g.behind)).toBe(true);
  }, 180_000);
});

/**
 * A store that cannot be reached at start (a mistyped address): the gateway starts and routes on
 * the config file's routing (fail static), but says so loudly and repeatedly, and is not ready.
 */
describe('a gateway whose store is never reached', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess | undefined;
  let dropIn: GatewayProcess | undefined;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  });
  afterAll(async () => {
    await Promise.all([gateway?.stop('SIGKILL'), dropIn?.stop('SIGKILL')]);
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('warns at a bounded rate, says not ready and store down, and still routes', async () => {
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: 'redis://127.0.0.1:1', namespace: 'never', commandTimeoutMs: 500 },
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_NEVER_TOKEN' }] },
        ...headerRangeRouting(stable, candidate, { from: 1, to: 10 }),
      },
      env: { GG_NEVER_TOKEN: TOKEN },
      readyWithinMs: 30_000,
    });
    const admin = `http://127.0.0.1:${String((await gateway.waitForLog((entry) => entry.event === 'admin-listening', { withinMs: 20_000 })).port)}`;
    const ready = await request(`${admin}/readyz`);
    expect(ready.statusCode).toBe(503);
    expect(await ready.body.json()).toMatchObject({ ready: false, storeReached: false, reason: expect.stringMatching(/not been reached/) });
    // Fail static: the config file's routing serves.
    expect(await versionFor(gateway.url, { 'x-user-id': '5' })).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-user-id': '1234' })).toBe('stable');
    const metrics = await (await request(`${admin}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).body.text();
    expect(metrics).toMatch(/^graygate_store_up 0$/m);
    // Loud (an error naming the address) and repeated, at most once per 10 s.
    const first = await gateway.waitForLog((line) => line.event === 'store-never-reached', { withinMs: 15_000 });
    expect(first.level).toBe(50);
    expect(String(first.msg)).toMatch(/127\.0\.0\.1:1/);
    const startedAt = Date.now();
    await gateway.waitForLog((line) => line.event === 'store-never-reached' && line !== first && Number(line.seconds) > Number(first.seconds), { withinMs: 30_000 });
    const count = gateway.logs().filter((line) => line.event === 'store-never-reached').length;
    expect(count).toBeLessThanOrEqual(2 + Math.floor((Date.now() - startedAt) / 10_000));
  }, 180_000);

  it('in the drop-in mode too', async () => {
    dropIn = await startGatewayProcess({
      args: ['--listen', '127.0.0.1:0', '--redis', 'redis://127.0.0.1:1', '--stable', stable.url, '--candidate', candidate.url],
      readyWithinMs: 30_000,
    });
    const line = await dropIn.waitForLog((entry) => entry.event === 'store-never-reached', { withinMs: 15_000 });
    expect(String(line.msg)).toMatch(/not been reached/);
    // Stable for everyone meanwhile (the range key cannot be read).
    expect(await versionFor(dropIn.url, { 'x-user-id': '5' })).toBe('stable');
  }, 180_000);
});
