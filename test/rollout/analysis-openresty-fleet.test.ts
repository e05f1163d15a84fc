import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { fleetWindow, type FleetSample, type GatewaySample, type ServiceFigures } from '../../src/rollout/analysis/index.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { validateRouting } from '../store/validate.js';

// The rollout analysis's figures from a mixed fleet: a Node gateway and an OpenResty gateway
// (graygate + the nginx it runs, two workers counting in one shared dict) report through one real
// Redis. The fleet window over them is the exact sum of what was sent through each: requests and
// 5xx per version, fallbacks as candidate failures, one latency per request.

const STALE_MS = 3_000;

describe('per-version figures of a Node and an OpenResty gateway in one fleet', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let store: RedisStore;
  let node: GatewayProcess;
  let openresty: OpenRestyGateway;
  const namespace = `gg-or-fleet-${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([
      startRedis(),
      startBackend('stable'),
      // The candidate answers 503 to /fail: its errors must be counted as the candidate's.
      startBackend('candidate', (req, res) => {
        if (!req.url?.includes('/fail')) return false;
        req.resume();
        res.writeHead(503, { 'content-length': '0' });
        res.end();
        return true;
      }),
    ]);
    const config = {
      store: { kind: 'redis', url: redis.url, namespace },
      log: { level: 'info', access: { sample: 0 } },
      admin: { listen: '127.0.0.1:0' },
      upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] }, dead: { servers: [`http://127.0.0.1:${await deadPort()}`] } },
      services: [
        // A candidate nobody can reach: every request the rules send it is served by stable, a candidate failure.
        { name: 'down', match: { pathPrefix: '/down' }, stable: 'stable', release: { candidate: 'dead', state: 'canary', rules: [{ header: { name: 'x-canary', equals: '1' } }] } },
        { name: 'app', match: { pathPrefix: '/' }, stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ header: { name: 'x-canary', equals: '1' } }] } },
      ],
    };
    node = await startGatewayProcess({ config, workers: 1, readyWithinMs: 60_000 });
    openresty = await startOpenRestyGateway({ config, workers: 2 });
    store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url, namespace }), { validate: validateRouting });
  }, 180_000);

  afterAll(async () => {
    await Promise.allSettled([node?.stop(), openresty?.stop()]);
    await store?.close();
    await Promise.allSettled([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  const withFigures = (sample: FleetSample): GatewaySample[] => sample.gateways.filter((g) => g.figures !== undefined);
  const send = async (gateway: GatewayProcess, path: string, canary: boolean): Promise<number> => {
    // A new connection per request, so that nginx's two workers both count some.
    const response = await request(`${gateway.url}${path}`, { headers: { connection: 'close', ...(canary ? { 'x-canary': '1' } : {}) } });
    await response.body.dump();
    return response.statusCode;
  };
  const histogramTotal = (latency: Record<string, number>) => Object.values(latency).reduce((a, b) => a + b, 0);

  it('sums both gateways exactly: requests and 5xx per version, fallbacks as candidate failures, a latency per request', async () => {
    // nginx serves once graygate delivered the routing to it (until then it answers 503, for no
    // service). One request through each, and the start is a sample that shows both counted.
    await eventually(async () => expect(await send(openresty, '/ok', false)).toBe(200));
    expect(await send(node, '/ok', false)).toBe(200);
    const start = await eventually(async () => {
      const sample = await store.fleet.readFleetSample(STALE_MS);
      const counted = withFigures(sample).filter((g) => g.figures!.services.app?.stable.requests === 1);
      if (counted.length !== 2) throw new Error(`waiting for both gateways' reports of their first request: ${JSON.stringify(sample)}`);
      return sample;
    });
    const sent = new Map<GatewayProcess, { stable: number; candidate: number; candidateErrors: number; down: number }>();
    for (const [gateway, rounds] of [[node, 7], [openresty, 12]] as const) {
      const counts = { stable: 0, candidate: 0, candidateErrors: 0, down: 0 };
      for (let i = 0; i < rounds; i++) {
        expect(await send(gateway, `/ok/${i}`, false)).toBe(200);
        counts.stable++;
        const isFailing = i % 3 === 0;
        expect(await send(gateway, `${isFailing ? '/fail' : '/ok'}/${i}`, true)).toBe(isFailing ? 503 : 200);
        counts.candidate++;
        if (isFailing) counts.candidateErrors++;
        if (i % 2 === 0) {
          expect(await send(gateway, `/down/${i}`, true)).toBe(200);
          counts.down++;
        }
      }
      sent.set(gateway, counts);
    }
    const total = { stable: 0, candidate: 0, candidateErrors: 0, down: 0 };
    for (const counts of sent.values()) for (const key of Object.keys(total) as (keyof typeof total)[]) total[key] += counts[key];

    const window = await eventually(async () => {
      const w = fleetWindow(start, await store.fleet.readFleetSample(STALE_MS));
      const app = w.services.app;
      const down = w.services.down;
      if (app === undefined || down === undefined || app.stable.requests < total.stable || app.candidate.requests < total.candidate || down.stable.requests < total.down) {
        throw new Error(`not all counted yet: ${JSON.stringify(w)}`);
      }
      return w;
    });
    expect(window.excluded).toEqual([]);
    expect(window.resets).toEqual([]);
    expect([...window.gateways].sort()).toEqual(withFigures(start).map((g) => g.instanceId).sort());
    const app = window.services.app!;
    expect(app.stable).toMatchObject({ requests: total.stable, errors: 0, failures: 0 });
    expect(app.candidate).toMatchObject({ requests: total.candidate, errors: total.candidateErrors, failures: 0 });
    const down = window.services.down!;
    expect(down.stable).toMatchObject({ requests: total.down, errors: 0, failures: 0 });
    expect(down.candidate).toMatchObject({ requests: 0, errors: 0, failures: total.down });
    for (const figures of [app.stable, app.candidate, down.stable]) expect(histogramTotal(figures.latency)).toBe(figures.requests);

    // Each gateway's own share is exactly what went through it: nginx's figures are not a copy of Node's.
    const end = await store.fleet.readFleetSample(STALE_MS);
    const shares = end.gateways.map((gateway) => {
      const before = start.gateways.find((g) => g.instanceId === gateway.instanceId)!.figures!.services;
      const after = gateway.figures!.services;
      const delta = (name: string, pick: (s: ServiceFigures) => number) => pick(after[name]!) - (before[name] ? pick(before[name]) : 0);
      return {
        stable: delta('app', (s) => s.stable.requests),
        candidate: delta('app', (s) => s.candidate.requests),
        candidateErrors: delta('app', (s) => s.candidate.errors),
        down: delta('down', (s) => s.candidate.failures),
      };
    });
    expect(shares.sort((a, b) => a.stable - b.stable)).toEqual([sent.get(node), sent.get(openresty)]);
  });

  it('an OpenResty gateway whose nginx figures cannot be read is left out of the window and named, not counted as idle', async () => {
    const start = await store.fleet.readFleetSample(STALE_MS);
    // nginx's workers and master stopped (SIGSTOP): graygate can no longer read their dump.
    const pids = openresty.nginxPids();
    expect(pids.length).toBeGreaterThanOrEqual(3);
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    try {
      const window = await eventually(async () => {
        const w = fleetWindow(start, await store.fleet.readFleetSample(STALE_MS));
        if (w.excluded.length === 0) throw new Error(`not excluded yet: ${JSON.stringify(w)}`);
        return w;
      }, { withinMs: 60_000 });
      expect(window.excluded).toEqual([{ instanceId: expect.any(String), reason: expect.stringMatching(/no per-version figures/) }]);
      expect(window.gateways).toHaveLength(1);
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGCONT');
    }
    // Readable again: counted again (its counters did not go back).
    await eventually(async () => expect(withFigures(await store.fleet.readFleetSample(STALE_MS))).toHaveLength(2));
  });
});
