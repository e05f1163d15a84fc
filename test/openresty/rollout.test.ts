import type http from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startLoad, versionFor, type Load } from '../helpers/load.js';
import { startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

/**
 * A progressive rollout over a fleet of one Node gateway and one OpenResty gateway on one real
 * Redis, where the candidate fails only for the traffic behind the OpenResty gateway (its callers
 * send a header the candidate answers 500 to). The Node gateway sees a healthy candidate; only
 * nginx's figures, in the OpenResty gateway's load reports, show the failure: the rollout is
 * rolled back on them, whichever gateway drives it.
 */
describe('a rollout judged on the figures nginx counted', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let node: GatewayProcess;
  let openresty: OpenRestyGateway;
  const loads: Load[] = [];
  const admin: Record<'node' | 'openresty', string> = { node: '', openresty: '' };

  // Few samples make short steps; latency bounds are wide, as two loopback backends on a loaded
  // box differ in latency by noise alone.
  const few = { candidate: 20, stable: 20 };
  const analysis = { minSamples: few, errors: { minSamples: few }, latency: { p50Ratio: 1000, p99Ratio: 1000, minSamples: few } };

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([
      startRedis(),
      startBackend('stable'),
      startBackend('candidate', (req: http.IncomingMessage, res: http.ServerResponse) => {
        if (req.headers['x-break'] === undefined) return false;
        req.resume();
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ version: 'candidate', error: 'injected' }));
        return true;
      }),
    ]);
    const config = {
      store: { kind: 'redis', url: redis.url, namespace: `or-rollout-${Math.random().toString(36).slice(2, 8)}`, pollMs: 1_000 },
      admin: { listen: '127.0.0.1:0' },
      upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
      identity: { sources: [{ header: { name: 'x-user-id' } }] },
      services: [{ name: 'app', match: { pathPrefix: '/' }, stable: 'app-v1' }],
    };
    node = await startGatewayProcess({ config, workers: 1 });
    openresty = await startOpenRestyGateway({ config, workers: 2 });
    for (const [name, gateway] of [['node', node], ['openresty', openresty]] as const) {
      const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
      admin[name] = `http://127.0.0.1:${String(line.port)}`;
    }
  }, 180_000);

  afterAll(async () => {
    await Promise.all(loads.map((load) => load.stop()));
    await Promise.allSettled([node?.stop(), openresty?.stop()]);
    await Promise.allSettled([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  const api = async (base: string, method: string, path: string, body?: unknown) => {
    const response = await request(`${base}${path}`, {
      method: method as 'GET',
      headers: body !== undefined ? { 'content-type': 'application/json' } : {},
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.body.text();
    return { status: response.statusCode, body: (text.startsWith('{') ? JSON.parse(text) : text) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const randomUser = () => ({ 'x-user-id': String(1 + Math.floor(Math.random() * 1_000_000)) });

  it('rolls back a candidate that fails only behind the OpenResty gateway', async () => {
    // nginx serves once graygate delivered the routing to it.
    await eventually(async () => expect(await versionFor(openresty.url, randomUser())).toBe('stable'));
    // Healthy traffic through Node, failing traffic through nginx.
    const healthy = startLoad({ url: node.url, maxMs: 120_000, concurrency: 2, pauseMs: 5, headers: randomUser });
    const breaking = startLoad({ url: openresty.url, maxMs: 120_000, concurrency: 2, pauseMs: 5, headers: () => ({ ...randomUser(), 'x-break': '1' }) });
    loads.push(healthy, breaking);
    // A long hold: only a fail can end this step within the test.
    const plan = { steps: [{ percent: 50, holdMs: 600_000 }], analysis };
    const started = await api(admin.node, 'POST', '/v1/services/app/rollout/start', { reason: 'ship v2', candidate: 'app-v2', plan });
    expect(started.status).toBe(200);
    const ended = await eventually(async () => {
      const status = await api(admin.node, 'GET', '/v1/services/app/rollout');
      expect(status.body.run.status).toBe('rolled-back');
      return status.body;
    }, { withinMs: 90_000 });
    const nodeResult = await healthy.stop();
    await breaking.stop();
    // Node's callers never saw the candidate fail.
    expect(nodeResult.failures).toEqual([]);
    expect(nodeResult.byVersion.candidate).toBeGreaterThan(0);
    expect(ended.state).toBe('idle');
    expect(ended.run.reason).toContain('errors failed');
    const record = ended.run.records.at(-1);
    expect(record.event).toBe('rollback');
    const errors = record.evidence.find((e: { metric: string }) => e.metric === 'errors');
    expect(errors.outcome).toBe('fail');
    expect(errors.candidate).toBeGreaterThan(errors.bound);
    expect(errors.samples.candidate).toBeGreaterThan(0);
    // Whichever gateway drove it, the other follows: stable for everyone on both.
    for (const gateway of [node, openresty]) await eventually(async () => expect(await versionFor(gateway.url, randomUser())).toBe('stable'));
  });
});
