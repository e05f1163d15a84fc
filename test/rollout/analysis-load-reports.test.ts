import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { fleetWindow, type FleetSample, type GatewaySample } from '../../src/rollout/analysis/index.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { validateRouting } from '../store/validate.js';

// Per-version figures across a fleet: two real gateways (one with two workers, whose primary sums
// them) report through one Redis; the fleet window over them is the exact sum of what was sent,
// and a gateway that stops reporting is left out and named.

const STALE_MS = 3_000;

describe('per-version figures in the fleet\'s load reports', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let store: RedisStore;
  let two: GatewayProcess;
  let one: GatewayProcess;
  const namespace = `gg-analysis-${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([
      startRedis(),
      startBackend('stable'),
      // The candidate answers 503 to /fail: its errors must be counted as the candidate's.
      startBackend('candidate', (req, res) => {
        if (!req.url?.startsWith('/fail')) return false;
        req.resume();
        res.writeHead(503, { 'content-length': '0' });
        res.end();
        return true;
      }),
    ]);
    const config = {
      store: { kind: 'redis', url: redis.url, namespace },
      log: { level: 'info', access: { sample: 0 } },
      upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] } },
      services: [{ name: 'app', match: { pathPrefix: '/' }, stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ header: { name: 'x-canary', equals: '1' } }] } }],
    };
    // Two workers: the primary sums them (the path under test); one process: the plain path.
    two = await startGatewayProcess({ config, workers: 2, readyWithinMs: 60_000 });
    one = await startGatewayProcess({ config, workers: 1, readyWithinMs: 60_000 });
    store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url, namespace }), { validate: validateRouting });
  }, 180_000);

  afterAll(async () => {
    await Promise.allSettled([two?.kill(), one?.kill()]);
    await store?.close();
    await Promise.allSettled([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  const withFigures = (sample: FleetSample): GatewaySample[] => sample.gateways.filter((g) => g.figures !== undefined);
  const send = async (gateway: GatewayProcess, path: string, canary: boolean): Promise<number> => {
    const response = await request(`${gateway.url}${path}`, { headers: canary ? { 'x-canary': '1' } : {} });
    await response.body.dump();
    return response.statusCode;
  };

  it('sums the requests, 5xx and latencies of every gateway per version, and names a gateway that stops reporting', async () => {
    const start = await eventually(async () => {
      const sample = await store.fleet.readFleetSample(STALE_MS);
      if (withFigures(sample).length !== 2) throw new Error(`waiting for both gateways' reports: ${JSON.stringify(sample)}`);
      return sample;
    });
    const sent = { stable: 0, candidate: 0, candidateErrors: 0 };
    for (const [gateway, rounds] of [[two, 12], [one, 7]] as const) {
      for (let i = 0; i < rounds; i++) {
        expect(await send(gateway, `/ok/${i}`, false)).toBe(200);
        sent.stable++;
        const isFailing = i % 3 === 0;
        expect(await send(gateway, `${isFailing ? '/fail' : '/ok'}/${i}`, true)).toBe(isFailing ? 503 : 200);
        sent.candidate++;
        if (isFailing) sent.candidateErrors++;
      }
    }
    const window = await eventually(async () => {
      const w = fleetWindow(start, await store.fleet.readFleetSample(STALE_MS));
      const app = w.services.app;
      if (app === undefined || app.stable.requests < sent.stable || app.candidate.requests < sent.candidate) throw new Error(`not all counted yet: ${JSON.stringify(w)}`);
      return w;
    });
    const app = window.services.app!;
    expect(app.stable).toMatchObject({ requests: sent.stable, errors: 0, failures: 0 });
    expect(app.candidate).toMatchObject({ requests: sent.candidate, errors: sent.candidateErrors, failures: 0 });
    const histogramTotal = (latency: Record<string, number>) => Object.values(latency).reduce((a, b) => a + b, 0);
    expect(histogramTotal(app.stable.latency)).toBe(sent.stable);
    expect(histogramTotal(app.candidate.latency)).toBe(sent.candidate);
    expect([...window.gateways].sort()).toEqual(withFigures(start).map((g) => g.instanceId).sort());
    expect(window.excluded).toEqual([]);
    expect(window.resets).toEqual([]);

    // A gateway killed (its report left behind) goes stale: left out of the sum, and named.
    const oneId = (await eventually(async () => {
      const sample = await store.fleet.readFleetSample(STALE_MS);
      // The one-process gateway's figures hold exactly the 7 + 7 requests sent through it.
      const found = withFigures(sample).find((g) => g.figures!.services.app?.stable.requests === 7);
      if (!found) throw new Error('the one-process gateway has not reported its figures yet');
      return found;
    })).instanceId;
    await one.kill();
    const afterKill = await eventually(async () => {
      const sample = await store.fleet.readFleetSample(STALE_MS);
      if (!sample.stale.some((s) => s.instanceId === oneId)) throw new Error('not stale yet');
      return sample;
    });
    const stale = afterKill.stale.find((s) => s.instanceId === oneId)!;
    expect(stale.ageMs).toBeGreaterThan(STALE_MS);
    const later = fleetWindow(start, afterKill);
    expect(later.gateways).not.toContain(oneId);
    expect(later.excluded).toEqual([{ instanceId: oneId, reason: expect.stringMatching(/stale/) }]);
    // What is left is the two-worker gateway's own: 12 + 12.
    expect(later.services.app!.stable.requests).toBe(12);
    expect(later.services.app!.candidate).toMatchObject({ requests: 12, errors: 4 });
  }, 120_000);
});
