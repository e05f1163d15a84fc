import { describe, expect, it } from 'vitest';
import { AggregatorRegistry } from 'prom-client';
import { Registry, RequestMetrics } from '../../src/observe/metrics.js';
import type { ExchangeRecord } from '../../src/observe/request-observer.js';
import type { Decision } from '../../src/rules/snapshot.js';
import { parsePrometheusText, value } from './prometheus-text.js';

const decision = (version: 'stable' | 'candidate', upstream: string, reason: string): Decision =>
  Object.freeze({ service: 'shop', version, upstream, candidate: version === 'candidate' ? upstream : undefined, reason, dependsOnCaller: true, vary: undefined, cachePrivate: false });

const record = (d: Decision | undefined, upstreamName: string | undefined, status: number, durationMs = 2): ExchangeRecord => ({
  method: 'GET',
  path: '/',
  identitySource: undefined,
  decision: d,
  upstreamName,
  serverOrigin: undefined,
  status,
  bytesSent: 0,
  durationMs,
  aborted: false,
});

describe('RequestMetrics (graygate-held cells, exposed through prom-client)', () => {
  it('merges decisions with the same labels into one series, credits a fail-safe to stable, and buckets durations', async () => {
    const registry = new Registry();
    const metrics = new RequestMetrics(registry);
    const testers = decision('candidate', 'shop-v2', 'testers');
    const firstUsers = decision('candidate', 'shop-v2', 'first-users');
    const none = decision('stable', 'shop-v1', 'no rule matched');
    metrics.requestClosed(record(testers, 'shop-v2', 200, 0.5));
    metrics.requestClosed(record(firstUsers, 'shop-v2', 201, 30));
    metrics.requestClosed(record(firstUsers, 'shop-v1', 200, 3)); // the candidate could not take it: stable served
    metrics.requestClosed(record(none, 'shop-v1', 503, 20_000));
    metrics.requestClosed(record(none, 'shop-v1', 499));
    metrics.requestClosed(record(undefined, undefined, 404));

    const text = await registry.metrics();
    const samples = parsePrometheusText(text);
    // One line per label set, however many decisions share it.
    expect(text.match(/graygate_requests_total\{service="shop",version="candidate",status_class="2xx",upstream="shop-v2"\}/g)).toHaveLength(1);
    expect(value(samples, 'graygate_requests_total', { version: 'candidate', status_class: '2xx', upstream: 'shop-v2' })).toBe(2);
    expect(value(samples, 'graygate_requests_total', { version: 'stable', status_class: '2xx', upstream: 'shop-v1' })).toBe(1);
    expect(value(samples, 'graygate_requests_total', { version: 'stable', status_class: '5xx' })).toBe(1);
    expect(value(samples, 'graygate_requests_total', { version: 'stable', status_class: '4xx' })).toBe(1);
    expect(value(samples, 'graygate_requests_total', { service: '', status_class: '4xx' })).toBe(1);

    const bucket = (version: string, le: string) => value(samples, 'graygate_request_duration_seconds_bucket', { service: 'shop', version, le });
    expect([bucket('candidate', '0.001'), bucket('candidate', '0.025'), bucket('candidate', '0.05'), bucket('candidate', '+Inf')]).toEqual([1, 1, 2, 2]);
    expect([bucket('stable', '0.0025'), bucket('stable', '0.005'), bucket('stable', '10'), bucket('stable', '+Inf')]).toEqual([1, 2, 2, 3]);
    expect(value(samples, 'graygate_request_duration_seconds_sum', { service: 'shop', version: 'candidate' })).toBeCloseTo(0.0305, 6);
    expect(value(samples, 'graygate_request_duration_seconds_count', { service: 'shop', version: 'stable' })).toBe(3);

    // Two processes' registries sum as prom-client's aggregator does for its own metrics.
    const other = new Registry();
    new RequestMetrics(other).requestClosed(record(testers, 'shop-v2', 200, 0.5));
    const summed = parsePrometheusText(await AggregatorRegistry.aggregate([await registry.getMetricsAsJSON(), await other.getMetricsAsJSON()]).metrics());
    expect(value(summed, 'graygate_requests_total', { version: 'candidate', status_class: '2xx' })).toBe(3);
    expect(value(summed, 'graygate_request_duration_seconds_bucket', { version: 'candidate', le: '0.001' })).toBe(2);

    registry.resetMetrics();
    expect(value(parsePrometheusText(await registry.metrics()), 'graygate_requests_total')).toBe(0);
  });
});
