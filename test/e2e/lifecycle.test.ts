import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startLoad, versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { graygate } from '../control/cli-runner.js';

const TOKEN = 'ops-token-e2e-0123456789abcdef';

/**
 * A paced load loop for one caller: one request at a time with a short pause between them, each
 * answer checked against the versions allowed at that moment. `--wait-drained` reads stable's own
 * in-flight count over the fleet, so the load on the candidate never holds it up.
 */
function callerLoad(url: string, userId: string, allowed: () => ReadonlySet<string>) {
  return startLoad({ url, headers: { 'x-user-id': userId }, concurrency: 1, pauseMs: 5, allowed, label: `user ${userId}`, maxMs: 600_000, maxRequests: 100_000 });
}

describe('the whole release lifecycle through the CLI, against a gateway process on Redis, under load', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let stableNew: Backend;
  let gateway: GatewayProcess;
  let dir: string;
  let env: NodeJS.ProcessEnv;

  const routing = (stableUrl: string) => ({
    upstreams: { 'app-v1': { servers: [stableUrl] }, 'app-v2': { servers: [candidate.url] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'app-v1' }],
  });

  beforeAll(async () => {
    [redis, stable, candidate, stableNew] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate'), startBackend('stable-new')]);
    dir = mkdtempSync(path.join(tmpdir(), 'graygate-lifecycle-'));
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: redis.url, namespace: 'lifecycle', pollMs: 2_000 },
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_E2E_ADMIN_TOKEN' }] },
        ...routing(stable.url),
      },
      env: { GG_E2E_ADMIN_TOKEN: TOKEN },
    });
    const listening = await gateway.waitForLog((line) => line.event === 'admin-listening');
    env = { GRAYGATE_ADMIN_URL: `http://127.0.0.1:${String(listening.port)}`, GRAYGATE_ADMIN_TOKEN: TOKEN };
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close(), stableNew?.close()]);
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('canary on users 1–5000 → full → wait drained → stable replaced → finish → idle, zero failed requests', async () => {
    // Two callers throughout: user 42 (inside 1–5000) and user 9000 (outside).
    let inside = new Set(['stable']);
    let outside = new Set(['stable']);
    const loads = [callerLoad(gateway.url, '42', () => inside), callerLoad(gateway.url, '9000', () => outside)];
    /** After routing is seen to change, let every loop finish a request begun after it. */
    const settle = async () => {
      const marks = loads.map((load) => load.sent());
      await eventually(() => loads.forEach((load, i) => expect(load.sent()).toBeGreaterThan(marks[i]! + 1)));
    };
    const cli = async (...args: string[]) => {
      const result = await graygate(args, env);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      return result.stdout;
    };
    try {
      await settle();

      // idle → canary on users 1–5000
      inside = new Set(['stable', 'candidate']);
      expect(await cli('release', 'start', 'app', '--candidate', 'app-v2', '--uid-range', '1-5000', '--reason', 'canary on the first 5000 users')).toContain('app: idle → canary');
      await eventually(async () => expect(await versionFor(gateway.url, { 'x-user-id': '42' })).toBe('candidate'));
      await settle();
      inside = new Set(['candidate']);
      await settle();
      expect(await versionFor(gateway.url, { 'x-user-id': '5000' })).toBe('candidate');
      expect(await versionFor(gateway.url, { 'x-user-id': '5001' })).toBe('stable');
      expect(await cli('status')).toMatch(/app\s+canary\s+app-v1\s+app-v2\s+uid-range/);

      // canary → full, and wait until stable has drained
      outside = new Set(['stable', 'candidate']);
      const full = await cli('release', 'full', 'app', '--reason', 'candidate looks good', '--wait-drained', '--timeout', '120000');
      expect(full).toContain('app: canary → full');
      // On Redis the figures are the fleet's (here one gateway), per upstream.
      expect(full).toContain('stable of app has drained over the fleet (1 gateway): 0 requests in flight to app-v1');
      expect(full).toMatch(/app-v1 \(stable\)\s+0\s+\d+/);
      const drainReply = await request(`${env.GRAYGATE_ADMIN_URL}/v1/services/app/release/drain`, { headers: { authorization: `Bearer ${TOKEN}` } });
      const drain = (await drainReply.body.json()) as { scope: string; gateways: number; drained: boolean; upstreams: Record<string, unknown> };
      expect(drain).toMatchObject({ scope: 'fleet', gateways: 1, drained: true });
      expect(Object.keys(drain.upstreams).sort()).toEqual(['app-v1', 'app-v2']);
      // Drained means no request that could still reach stable is in flight: from here on the old
      // stable backend sees nothing.
      const stableSeenAtDrain = stable.seen.length;
      outside = new Set(['candidate']);
      await settle();

      // The stable backend is replaced by a new one, while everyone is on the candidate.
      const file = path.join(dir, 'routing.yaml');
      const current = JSON.parse(await cli('config', 'get', '--json')) as { document: { services: unknown[] } };
      writeFileSync(file, stringify({ ...routing(stableNew.url), services: current.document.services }));
      const applied = await cli('config', 'apply', file, '--yes', '--reason', 'stable updated to the new build');
      expect(applied).toContain(`~ upstreams.app-v1.servers[0]: "${stable.url}" → "${stableNew.url}"`);
      await stable.close();
      await settle();

      // full → finish → idle: everyone on the new stable.
      inside = new Set(['candidate', 'stable-new']);
      outside = new Set(['candidate', 'stable-new']);
      expect(await cli('release', 'finish', 'app', '--reason', 'release done')).toContain('app: full → idle');
      await eventually(async () => expect(await versionFor(gateway.url, { 'x-user-id': '42' })).toBe('stable-new'));
      await settle();
      inside = new Set(['stable-new']);
      outside = new Set(['stable-new']);
      await settle();
      const status = await cli('status');
      expect(status).toMatch(/app\s+idle\s+app-v1\s+-\s+-/);
      expect(status).toContain('fleet: 1 gateway reporting');
      expect(stable.seen.length).toBe(stableSeenAtDrain);

      const history = JSON.parse(await cli('history', '--json', '-n', '10')) as { versions: { actor: string; reason: string }[] };
      expect(history.versions.slice(0, 4).map((entry) => [entry.actor, entry.reason])).toEqual([
        ['ops', 'release done'],
        ['ops', 'stable updated to the new build'],
        ['ops', 'candidate looks good'],
        ['ops', 'canary on the first 5000 users'],
      ]);
    } finally {
      const results = await Promise.all(loads.map((load) => load.stop()));
      for (const result of results) {
        expect(result.failures).toEqual([]);
        expect(result.failed).toBe(0);
      }
      // Every phase was seen by the load: the candidate, the old and the new stable.
      expect(results[0]!.byVersion.candidate).toBeGreaterThan(0);
      expect(results[1]!.byVersion.stable).toBeGreaterThan(0);
      expect(results[1]!.byVersion['stable-new']).toBeGreaterThan(0);
    }
  }, 600_000);
});
