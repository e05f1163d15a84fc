import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf, deriveSeed } from '../../src/rules/hash.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { graygate } from '../control/cli-runner.js';

const TOKEN = 'impact-token-0123456789abcdef';
/** Every id sent starts with this: none of it may appear in any answer, log line, metric or store key. */
const ID_PREFIX = 'qzimpact-';
const USERS = 1_000;
const ids = Array.from({ length: USERS }, (_, i) => `${ID_PREFIX}${String(i).padStart(4, '0')}`);

const upstreams = (stable: Backend, candidate: Backend) => ({ 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } });
const serviceAt = (percent: number) => ({
  name: 'app',
  stable: 'app-v1',
  release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'percentage', percentage: { percent } }] },
  rollout: { steps: [{ percent: 20, holdMs: 600_000 }] },
});

/**
 * The impact of a change, counted through a real gateway (two workers, Redis store) on the callers
 * it served: exact against a known population, summed over the workers, shown by the API and the
 * CLI surfaces, and with no raw id anywhere outside the workers' memory.
 */
describe('graygate diff --impact on a gateway with two workers', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let env: NodeJS.ProcessEnv;
  let dir: string;
  /** Every API answer the test read, searched for ids at the end. */
  const answers: string[] = [];

  const api = async (method: 'GET' | 'POST', url: string, body?: unknown) => {
    const response = await request(`${env.GRAYGATE_ADMIN_URL}${url}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.body.text();
    answers.push(text);
    return { status: response.statusCode, text, json: JSON.parse(text) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'graygate-impact-'));
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    gateway = await startGatewayProcess({
      config: {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_IMPACT_TOKEN' }] },
        store: { kind: 'redis', url: redis.url, namespace: 'impact-e2e', pollMs: 1_000 },
        upstreams: upstreams(stable, candidate),
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
        services: [serviceAt(10)],
      },
      env: { GG_IMPACT_TOKEN: TOKEN, GRAYGATE_WORKERS: '2' },
      readyWithinMs: 60_000,
    });
    expect(gateway.workers).toBe(2);
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    env = { GRAYGATE_ADMIN_URL: `http://127.0.0.1:${String(line.port)}`, GRAYGATE_ADMIN_TOKEN: TOKEN };
    // Each caller once, on a connection of its own, so the primary spreads them over both workers.
    for (let i = 0; i < USERS; i += 25) {
      await Promise.all(ids.slice(i, i + 25).map((id) => versionFor(gateway.url, { 'x-user-id': id, connection: 'close' })));
    }
  }, 300_000);

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close(), redis?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const seed = deriveSeed('app');
  // Computed independently of the gateway: a 10 → 20 % change moves exactly the callers whose bucket is in [1000, 2000).
  const moving = ids.filter((id) => {
    const bucket = bucketOf(id, seed);
    return bucket >= 1_000 && bucket < 2_000;
  });

  it('counts exactly the callers whose bucket is in [10 %, 20 %), summed over both workers, with no raw id in the answer', async () => {
    expect(moving.length).toBeGreaterThan(50);
    const document = (await api('GET', '/v1/config')).json.document;
    const proposed = { ...document, services: [{ ...document.services[0], release: { ...document.services[0].release, rules: [{ name: 'percentage', percentage: { percent: 20 } }] } }] };
    // Workers report as they serve: wait until both have sampled every caller.
    const impact = await eventually(
      async () => {
        const reply = await api('POST', '/v1/impact', { document: proposed });
        expect(reply.status).toBe(200);
        expect(reply.json.services[0].sampled).toBe(USERS);
        return reply.json;
      },
      { withinMs: 20_000 },
    );
    expect(impact).toMatchObject({ processes: 2, scope: 'gateway', enabled: true, windowMs: 15 * 60_000, to: 'proposed' });
    expect(impact.services).toEqual([
      {
        service: 'app',
        sampled: USERS,
        full: false,
        notSampled: 0,
        stableToCandidate: moving.length,
        candidateToStable: 0,
        candidateToCandidate: 0,
        unchanged: USERS - moving.length,
        moves: [{ from: 'stable', to: 'app-v2', count: moving.length }],
        unobserved: [],
      },
    ]);
  }, 120_000);

  it('the reverse change moves the same callers back; the CLI says the same through diff --impact --file, release set --dry-run and rollout start --dry-run', async () => {
    const current = (await api('GET', '/v1/config')).json;
    const at20 = { upstreams: current.document.upstreams, identity: current.document.identity, services: [serviceAt(20)] };
    const file = path.join(dir, 'proposed.yaml');
    writeFileSync(file, stringify(at20));
    const viaFile = await graygate(['diff', '--impact', '--file', file, '--json'], env);
    expect(viaFile.stderr).toBe('');
    expect(JSON.parse(viaFile.stdout).impact.services[0]).toMatchObject({ sampled: USERS, stableToCandidate: moving.length, unchanged: USERS - moving.length });
    answers.push(viaFile.stdout);

    const text = await graygate(['diff', '--impact', '--file', file], env);
    expect(text.stdout).toContain(`impact on app: ${moving.length} of ${USERS} caller(s) seen in the last 15 min would change version`);
    expect(text.stdout).toContain(`stable → app-v2: ${moving.length}`);
    answers.push(text.stdout);

    const dryRun = await graygate(['release', 'set', 'app', '--percent', '20', '--dry-run', '--json'], env);
    expect(dryRun.stderr).toBe('');
    expect(JSON.parse(dryRun.stdout).services[0]).toMatchObject({ stableToCandidate: moving.length, candidateToStable: 0 });
    answers.push(dryRun.stdout);

    // The plan's first step is 20 %: a dry run of the rollout's start counts the same callers, and writes nothing.
    const rolloutDry = await graygate(['rollout', 'start', 'app', '--dry-run', '--json'], env);
    expect(rolloutDry.stderr).toBe('');
    expect(JSON.parse(rolloutDry.stdout).services[0]).toMatchObject({ stableToCandidate: moving.length });
    expect((await api('GET', '/v1/config')).json.version).toBe(current.version);

    // Apply 20 % for real, then the impact of going back to the earlier version is the same callers reversed.
    const applied = await graygate(['release', 'set', 'app', '--percent', '20', '--reason', 'wider'], env);
    expect(applied.code).toBe(0);
    // No request through the gateway here: a caller seen again by the other worker would be counted by both.
    const back = await graygate(['diff', '--impact', String(current.version + 1), String(current.version), '--json'], env);
    expect(back.stderr).toBe('');
    const reverse = JSON.parse(back.stdout);
    expect(reverse.impact.services[0]).toMatchObject({ sampled: USERS, stableToCandidate: 0, candidateToStable: moving.length, moves: [{ from: 'app-v2', to: 'stable', count: moving.length }] });
    answers.push(back.stdout);
  }, 180_000);

  it('names a bad proposal\'s field (400) and refuses a body with two changes', async () => {
    const bad = await api('POST', '/v1/impact', { document: { upstreams: {}, services: [{ name: 'app', stable: 'nope' }] } });
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('GG_CONFIG_INVALID');
    expect(bad.text).toContain('services[0].stable');
    const two = await api('POST', '/v1/impact', { to: 1, release: { service: 'app', action: 'rollback' } });
    expect(two.status).toBe(400);
    expect(two.json.error.message).toContain('exactly one of to, document, release, rollout');
  }, 60_000);

  it('keeps every raw id inside the workers: none in any API answer, log line, metric or store key or value', async () => {
    answers.push((await api('GET', '/v1/metrics')).text);
    const metrics = await request(`${env.GRAYGATE_ADMIN_URL}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    answers.push(await metrics.body.text());
    answers.push((await api('GET', '/v1/status')).text);
    answers.push((await api('GET', '/v1/history')).text);
    // The candidate is a backend; the gateway's own output is what is searched.
    for (const answer of answers) expect(answer).not.toContain(ID_PREFIX);
    expect(gateway.output()).not.toContain(ID_PREFIX);
    const keys = await redis.client.keys('*');
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      expect(key).not.toContain(ID_PREFIX);
      const type = await redis.client.type(key);
      const value =
        type === 'string' ? await redis.client.get(key)
        : type === 'hash' ? JSON.stringify(await redis.client.hgetall(key))
        : type === 'list' ? JSON.stringify(await redis.client.lrange(key, 0, -1))
        : type === 'zset' ? JSON.stringify(await redis.client.zrange(key, 0, -1, 'WITHSCORES'))
        : type === 'set' ? JSON.stringify(await redis.client.smembers(key))
        : type === 'stream' ? JSON.stringify(await redis.client.xrange(key, '-', '+'))
        : '';
      expect(value ?? '').not.toContain(ID_PREFIX);
    }
  }, 60_000);
});
