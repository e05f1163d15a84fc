import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bucketUpperMs, fleetWindow, LATENCY_BOUNDS_MS, latencyBucket, parseGatewayFigures, type FleetSample, type GatewayFigures, type VersionFigures } from '../../src/rollout/analysis/index.js';

// The fleet window: per gateway end minus start, summed; never negative; restarts and stale
// gateways are named, never summed as bogus figures.

const version = (requests: number, errors = 0, latency: Record<string, number> = { 10: requests }): VersionFigures => ({ requests, errors, failures: 0, latency });
const gatewayFigures = (countersId: string, startedAt: number, stable: number, candidate: number, candidateErrors = 0): GatewayFigures => ({
  countersId,
  startedAt,
  services: { app: { stable: version(stable), candidate: version(candidate, candidateErrors) } },
});
const sample = (at: number, gateways: [string, GatewayFigures | undefined][], stale: string[] = []): FleetSample => ({
  at,
  gateways: gateways.map(([instanceId, figures]) => ({ instanceId, at, figures })),
  stale: stale.map((instanceId) => ({ instanceId, ageMs: 4_000 })),
});

describe('fleet window', () => {
  it('sums each gateway\'s growth over the window', () => {
    const start = sample(1_000, [['a', gatewayFigures('x', 0, 100, 10)], ['b', gatewayFigures('y', 0, 50, 5)]]);
    const end = sample(2_000, [['a', gatewayFigures('x', 0, 160, 20, 3)], ['b', gatewayFigures('y', 0, 80, 9)]]);
    const window = fleetWindow(start, end);
    expect(window.services.app).toEqual({ stable: version(90), candidate: version(14, 3) });
    expect(window.gateways).toEqual(['a', 'b']);
    expect(window).toMatchObject({ fromMs: 1_000, toMs: 2_000, excluded: [], resets: [] });
  });

  it('a restarted gateway contributes only what it counted since, and is named; never negative', () => {
    fc.assert(
      // At least one request before: a restart under the same id shows as fewer (never a negative count).
      fc.property(fc.integer({ min: 1, max: 10_000 }), fc.nat(10_000), fc.nat(10_000), fc.boolean(), (before, since, other, sameId) => {
        const start = sample(1_000, [['a', gatewayFigures('x', 0, before, before)], ['b', gatewayFigures('y', 0, 0, 0)]]);
        // Counters began again (a new id, or the same one with lower counts).
        const restarted = gatewayFigures(sameId ? 'x' : 'x2', 1_500, sameId ? Math.min(since, before - 1) : since, 0);
        const end = sample(2_000, [['a', restarted], ['b', gatewayFigures('y', 0, other, 0)]]);
        const window = fleetWindow(start, end);
        const app = window.services.app!;
        for (const figures of [app.stable, app.candidate]) {
          expect(figures.requests).toBeGreaterThanOrEqual(0);
          for (const count of Object.values(figures.latency)) expect(count).toBeGreaterThanOrEqual(0);
        }
        if (!sameId || restarted.services.app!.stable.requests < before) {
          expect(window.resets.map((r) => r.instanceId)).toEqual(['a']);
          expect(app.stable.requests).toBe(restarted.services.app!.stable.requests + other);
        }
      }),
    );
  });

  it('leaves out and names a stale gateway, one that stopped reporting, one without figures, and one with no start figure', () => {
    const start = sample(1_000, [['a', gatewayFigures('x', 0, 10, 1)], ['gone', gatewayFigures('g', 0, 5, 5)], ['late', gatewayFigures('l', 0, 1, 1)]]);
    const end = sample(5_000, [['a', gatewayFigures('x', 0, 20, 2)], ['old', undefined], ['new', gatewayFigures('n', 2_000, 7, 0)], ['joined', gatewayFigures('j', 500, 9, 0)]], ['late']);
    const window = fleetWindow(start, end);
    expect(window.gateways).toEqual(['a', 'new']);
    expect(window.services.app!.stable.requests).toBe(10 + 7);
    const excluded = Object.fromEntries(window.excluded.map((e) => [e.instanceId, e.reason]));
    expect(Object.keys(excluded).sort()).toEqual(['gone', 'joined', 'late', 'old']);
    expect(excluded.late).toMatch(/stale/);
    expect(excluded.gone).toMatch(/stopped reporting/);
    expect(excluded.old).toMatch(/no per-version figures/);
    expect(excluded.joined).toMatch(/no report of it at the start/);
  });

  it('parses only well-formed figures', () => {
    expect(parseGatewayFigures(gatewayFigures('x', 1, 2, 3))).toEqual(gatewayFigures('x', 1, 2, 3));
    expect(parseGatewayFigures({ countersId: 'x', startedAt: 1, services: { app: { stable: version(1), candidate: { ...version(1), requests: -1 } } } })).toBeUndefined();
    expect(parseGatewayFigures({ countersId: 'x', startedAt: 1, services: { app: { stable: version(1), candidate: { ...version(1), latency: { 9999: 1 } } } } })).toBeUndefined();
    expect(parseGatewayFigures(null)).toBeUndefined();
  });
});

describe('latency buckets', () => {
  it('put every latency in the bucket whose bounds hold it', () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 200_000, noNaN: true }), (ms) => {
        const bucket = latencyBucket(ms);
        expect(ms).toBeLessThanOrEqual(bucketUpperMs(bucket));
        if (bucket > 0) expect(ms).toBeGreaterThan(bucketUpperMs(bucket - 1));
      }),
      { numRuns: 2_000 },
    );
    for (const bound of LATENCY_BOUNDS_MS) expect(bucketUpperMs(latencyBucket(bound))).toBe(bound);
  });
});
