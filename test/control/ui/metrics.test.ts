import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { LiveFigures, quantileBetween, sampleOf, WINDOW_MS, type MetricJson } from '../../../src/control/ui/src/metrics.js';
import { RequestMetrics } from '../../../src/observe/metrics.js';
import type { Decision } from '../../../src/rules/snapshot.js';

/**
 * The dashboard's live figures from what `GET /v1/metrics` returns: a real prom-client registry
 * with the gateway's two metrics, read with getMetricsAsJSON() as the endpoint does.
 */
function gatewayRegistry() {
  const registry = new Registry();
  const requests = new Counter({
    name: 'graygate_requests_total',
    help: 'requests',
    labelNames: ['service', 'version', 'status_class', 'upstream'] as const,
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'graygate_request_duration_seconds',
    help: 'duration',
    labelNames: ['service', 'version'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
  });
  const serve = (service: string, version: 'stable' | 'candidate', count: number, seconds: number, statusClass = '2xx') => {
    const upstream = version === 'stable' ? `${service}-v1` : `${service}-v2`;
    requests.inc({ service, version, status_class: statusClass, upstream }, count);
    for (let i = 0; i < count; i++) duration.observe({ service, version }, seconds);
  };
  const read = async () => (await registry.getMetricsAsJSON()) as unknown as MetricJson[];
  return { serve, read };
}

describe('live figures from the metrics endpoint', () => {
  it('turns counter deltas between polls into requests/s per version, for one service only', async () => {
    const gateway = gatewayRegistry();
    const figures = new LiveFigures();
    gateway.serve('shop', 'stable', 500, 0.003);
    gateway.serve('other', 'stable', 999, 0.003);
    figures.add(sampleOf(await gateway.read(), 10_000));
    expect(figures.figures('shop')).toBeNull();

    gateway.serve('shop', 'stable', 40, 0.003);
    gateway.serve('shop', 'candidate', 10, 0.003);
    gateway.serve('other', 'candidate', 777, 0.003);
    figures.add(sampleOf(await gateway.read(), 12_000));
    const shop = figures.figures('shop')!;
    expect(shop.stable.rps).toBeCloseTo(20);
    expect(shop.candidate.rps).toBeCloseTo(5);
    expect(figures.figures('absent')).toEqual({
      stable: { rps: 0, errorRate: null, p99: null, upstreamErrors: null, ejections: null, fallback: null },
      candidate: { rps: 0, errorRate: null, p99: null, upstreamErrors: null, ejections: null, fallback: 0 },
    });
  });

  it('gives the 5xx share per version over the window', async () => {
    const gateway = gatewayRegistry();
    const figures = new LiveFigures();
    gateway.serve('shop', 'candidate', 100, 0.003, '5xx');
    figures.add(sampleOf(await gateway.read(), 0));
    gateway.serve('shop', 'candidate', 90, 0.003);
    gateway.serve('shop', 'candidate', 10, 0.003, '5xx');
    gateway.serve('shop', 'candidate', 5, 0.003, '4xx');
    gateway.serve('shop', 'stable', 50, 0.003);
    figures.add(sampleOf(await gateway.read(), 1_000));
    const shop = figures.figures('shop')!;
    // The 100 errors before the first poll are history, not the current rate.
    expect(shop.candidate.errorRate).toBeCloseTo(10 / 105);
    expect(shop.stable.errorRate).toBe(0);
  });

  it('gives p99 per version from histogram bucket deltas, interpolated in the bucket', async () => {
    const gateway = gatewayRegistry();
    const figures = new LiveFigures();
    // Old slow requests, before the window: they must not count.
    gateway.serve('shop', 'candidate', 100, 0.9);
    figures.add(sampleOf(await gateway.read(), 0));
    gateway.serve('shop', 'stable', 1000, 0.004);
    gateway.serve('shop', 'candidate', 980, 0.004);
    gateway.serve('shop', 'candidate', 20, 0.2);
    figures.add(sampleOf(await gateway.read(), 1_000));
    const shop = figures.figures('shop')!;
    // All of stable in the first bucket (0..5 ms): p99 at 99 % of it.
    expect(shop.stable.p99).toBeCloseTo(0.005 * 0.99);
    // Candidate: rank 990 of 1000 falls among the 20 in (0.1, 0.25]: half way through them.
    expect(shop.candidate.p99).toBeCloseTo(0.1 + 0.15 * (10 / 20));
  });

  it('keeps a window: error rate and p99 forget what is older than WINDOW_MS, requests/s uses the last two polls', async () => {
    const gateway = gatewayRegistry();
    const figures = new LiveFigures();
    figures.add(sampleOf(await gateway.read(), 0));
    gateway.serve('shop', 'stable', 10, 0.5, '5xx');
    figures.add(sampleOf(await gateway.read(), 1_000));
    expect(figures.figures('shop')!.stable.errorRate).toBe(1);
    for (let t = 2_000; t <= WINDOW_MS + 3_000; t += 1_000) {
      gateway.serve('shop', 'stable', 10, 0.004);
      figures.add(sampleOf(await gateway.read(), t));
    }
    const shop = figures.figures('shop')!;
    expect(shop.stable.errorRate).toBe(0);
    expect(shop.stable.p99).toBeLessThanOrEqual(0.005);
    expect(shop.stable.rps).toBeCloseTo(10);
  });

  it('treats a counter that went down as a restarted gateway: the new count is all new', async () => {
    const before = gatewayRegistry();
    const figures = new LiveFigures();
    before.serve('shop', 'stable', 1_000, 0.004);
    figures.add(sampleOf(await before.read(), 0));
    const restarted = gatewayRegistry();
    restarted.serve('shop', 'stable', 30, 0.004);
    figures.add(sampleOf(await restarted.read(), 1_000));
    expect(figures.figures('shop')!.stable.rps).toBeCloseTo(30);
  });

  it('quantileBetween: null without requests, the highest finite bound when the rank is in +Inf', () => {
    expect(quantileBetween(0.99, new Map([[0.1, 0], [Infinity, 0]]), undefined)).toBeNull();
    expect(quantileBetween(0.99, new Map([[0.1, 1], [1, 1], [Infinity, 100]]), undefined)).toBe(1);
  });

  it('gives upstream errors and ejections per version (by its upstreams) and the candidate\'s fallbacks to stable, over the window', async () => {
    // The gateway's own RequestMetrics, fed as the data plane feeds it.
    const registry = new Registry();
    const metrics = new RequestMetrics(registry);
    const decision = (version: 'stable' | 'candidate', upstream: string): Decision =>
      Object.freeze({ service: 'shop', version, upstream, candidate: version === 'candidate' ? upstream : undefined, reason: 'rule 1', dependsOnCaller: true, vary: undefined, cachePrivate: false });
    const toCandidate = decision('candidate', 'shop-v2');
    const read = async () => (await registry.getMetricsAsJSON()) as unknown as MetricJson[];
    const figures = new LiveFigures();
    // Before the window: history.
    metrics.upstreamFailed('shop-v2', 'GG_UPSTREAM_CONNECT', true);
    metrics.fellBack(toCandidate, 'shop-v1', 'connect_failure');
    figures.add(sampleOf(await read(), 0));
    for (let i = 0; i < 3; i++) metrics.upstreamFailed('shop-v2', 'GG_UPSTREAM_CONNECT', true);
    metrics.upstreamFailed('shop-v2', 'GG_UPSTREAM_TIMEOUT', false);
    metrics.serverEjected('shop-v2');
    metrics.upstreamFailed('shop-v1', 'GG_UPSTREAM_RESET', false);
    metrics.upstreamFailed('other-v1', 'GG_UPSTREAM_RESET', false);
    for (let i = 0; i < 2; i++) metrics.fellBack(toCandidate, 'shop-v1', 'connect_failure');
    for (let i = 0; i < 5; i++) metrics.fellBack(toCandidate, 'shop-v1', 'unhealthy');
    figures.add(sampleOf(await read(), 1_000));
    const shop = figures.figures('shop', { stable: ['shop-v1'], candidate: ['shop-v2'] })!;
    expect(shop.candidate).toMatchObject({ upstreamErrors: 4, ejections: 1, fallback: 7 });
    expect(shop.stable).toMatchObject({ upstreamErrors: 1, ejections: 0, fallback: null });
    // Without the upstream names the version's errors are unknown, not zero.
    expect(figures.figures('shop')!.candidate.upstreamErrors).toBeNull();
  });
});
