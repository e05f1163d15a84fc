import fc from 'fast-check';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LATENCY_BOUNDS_MS, LATENCY_BUCKET_COUNT, latencyBucket } from '../../src/rollout/analysis/histogram.js';
import { AdminSettings } from '../../src/config/schema.js';
import type { AdminContext } from '../../src/control/api/context.js';
import { buildAdminApp } from '../../src/control/api/server.js';
import { Registry, RequestMetrics, type MetricsJson } from '../../src/observe/metrics.js';
import type { ExchangeRecord } from '../../src/observe/request-observer.js';
import { openrestyMetricsSource, pollOpenrestyLoad, readOpenrestyDump } from '../../src/openresty/metrics.js';
import type { Decision } from '../../src/rules/snapshot.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startObserveNginx, type ObserveNginx } from './observe-nginx.js';

/**
 * metrics.lua inside a real nginx (two workers, real backends, real Redis for the tokens): after
 * a known number of requests per version, graygate's /metrics (the admin API's own route, fed
 * by the nginx dump) shows exactly those figures, in the series, labels and buckets the Node
 * data plane records; in-flight per upstream is what the drain report reads; the access log line
 * names service, version and rule.
 */

let redis: RedisServer;
let stable: Backend;
let candidate: Backend;
let nginx: ObserveNginx;
let releaseSlow: (() => void) | undefined;

const GRAY = 'gray-tok-Zr81'; // uid 1234: the candidate
const PROD = 'prod-tok-Lm04'; // uid 9999: stable
const COUNTS = { gray: 37, prod: 23, anonymous: 11, unmatched: 5 };

/**
 * What the balancer reports when the candidate cannot take a request: the rules chose the
 * candidate, its server refused the connection (an upstream error, an ejection), and stable
 * served it instead. Reported through metrics.lua's balancer-side calls, as the balancer makes them.
 */
const FALLBACK_LOCATION = `
    location = /fallback {
      set $gg_service ""; set $gg_version ""; set $gg_upstream ""; set $gg_rule ""; set $gg_identity "";
      access_by_lua_block {
        local metrics = require "graygate.metrics"
        local d = DECISIONS.candidate
        local var = ngx.var
        var.gg_service = d.service; var.gg_version = d.version; var.gg_rule = d.reason; var.gg_identity = "tokenLookup"
        var.gg_upstream = d.upstream
        local g = {}
        ngx.ctx.graygate = g
        metrics.started(d.upstream, g, d)
        -- What the balancer reports: the refused attempt, the ejection, the fallback, the move.
        metrics.upstream_failed("shop-v2", "connect")
        metrics.ejected("shop-v2")
        metrics.fallback(d.service, d.upstream, "shop-v1", "connect_failure")
        var.gg_upstream = "shop-v1"
        metrics.moved("shop-v1", g)
      }
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://shop-v1;
      log_by_lua_block { require("graygate.metrics").log_vars(ngx.ctx.graygate) }
    }`;
const FALLBACKS = 3;

/**
 * The variables path (metrics.started / log_vars), which the data plane's phases use because
 * nginx variables survive the internal redirect to an error page where ngx.ctx does not: a
 * candidate whose connection failed, answered 502 by the error location.
 */
const VARS_LOCATIONS = `
    location = /vars-error {
      set $gg_service ""; set $gg_version ""; set $gg_rule ""; set $gg_upstream ""; set $gg_fallback "";
      set $gg_ejected ""; set $gg_error "";
      access_by_lua_block {
        local var = ngx.var
        var.gg_service = "vars"; var.gg_version = "candidate"; var.gg_rule = "r"; var.gg_upstream = "vars-v2"
        require("graygate.metrics").started("vars-v2", {}, { service = "vars", version = "candidate", upstream = "vars-v2" })
        -- What the balancer reports for the failed attempt.
        require("graygate.metrics").upstream_failed("vars-v2", "connect")
      }
      error_page 502 = @gg_error;
      proxy_connect_timeout 1s;
      proxy_pass http://127.0.0.1:1;
    }
    location @gg_error {
      content_by_lua_block { ngx.status = 502; ngx.say("error page") }
      log_by_lua_block { require("graygate.metrics").log_vars(ngx.ctx.graygate) }
    }
    location = /vars-fast {
      set $gg_service ""; set $gg_version ""; set $gg_rule ""; set $gg_upstream ""; set $gg_fallback "";
      set $gg_target shop-v2;
      access_by_lua_block {
        local metrics = require "graygate.metrics"
        local g = {}
        ngx.ctx.graygate = g
        metrics.started("shop-v2", g, DECISIONS.candidate)
        if ngx.var.arg_fallback then
          -- The balancer's fallback to stable.
          metrics.fallback("shop", "shop-v2", "shop-v1", "unhealthy")
          metrics.moved("shop-v1", g)
          ngx.var.gg_target = "shop-v1"
        end
      }
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_pass http://$gg_target;
      log_by_lua_block { require("graygate.metrics").log_vars(ngx.ctx.graygate) }
    }`;
const VARS_ERRORS = 4;

/** metrics.lua's rollout latency bucket of each number in the body (one per line), one per line. */
const BUCKET_LOCATION = `
    location = /latency-buckets {
      client_max_body_size 1m; client_body_buffer_size 1m;
      content_by_lua_block {
        ngx.req.read_body()
        local bucket = require("graygate.metrics").latency_bucket
        local out = {}
        for line in (ngx.req.get_body_data() or ""):gmatch("[^\\n]+") do out[#out + 1] = bucket(tonumber(line)) end
        ngx.print(table.concat(out, "\\n"))
      }
    }`;

beforeAll(async () => {
  redis = await startRedis();
  await redis.client.set(`TOKEN_${GRAY}`, '1234');
  await redis.client.set(`TOKEN_${PROD}`, '9999');
  stable = await startBackend('shop-v1');
  candidate = await startBackend('shop-v2', (req, res) => {
    if (req.url !== '/slow') return false;
    // Held until the test releases it: a request in flight to the candidate.
    releaseSlow = () => res.end('slow');
    return true;
  });
  nginx = await startObserveNginx({ redisPort: redis.port, workers: 2, stablePort: stable.port, candidatePort: candidate.port, extraLocations: FALLBACK_LOCATION + VARS_LOCATIONS + BUCKET_LOCATION });
  // Sequential, so each token is looked up exactly once (a concurrent first wave could make one lookup per worker).
  for (let i = 0; i < COUNTS.gray; i++) expect(JSON.parse((await nginx.get('/', GRAY)).body).version).toBe('shop-v2');
  for (let i = 0; i < COUNTS.prod; i++) expect(JSON.parse((await nginx.get('/', PROD)).body).version).toBe('shop-v1');
  for (let i = 0; i < COUNTS.anonymous; i++) expect(JSON.parse((await nginx.get('/')).body).version).toBe('shop-v1');
  for (let i = 0; i < COUNTS.unmatched; i++) expect((await nginx.get('/nomatch')).status).toBe(404);
  for (let i = 0; i < FALLBACKS; i++) expect(JSON.parse((await nginx.get('/fallback')).body).version).toBe('shop-v1');
});
afterAll(async () => {
  releaseSlow?.();
  await nginx?.stop();
  await Promise.all([stable?.close(), candidate?.close()]);
  await redis?.stop();
});

type Value = { labels: Record<string, string | number>; value: number; metricName?: string };
const valuesOf = (json: MetricsJson, name: string) => (json.find((metric) => metric.name === name)?.values ?? []) as unknown as Value[];
const find = (values: Value[], labels: Record<string, string | number>, metricName?: string) =>
  values.find((v) => (metricName === undefined || v.metricName === metricName) && Object.keys(labels).length === Object.keys(v.labels).length && Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;

/** The admin API's /metrics route with a context whose metrics are the OpenResty source (the rest is not read by it). */
async function scrape(registry: Registry, path: '/metrics' | '/v1/metrics'): Promise<string> {
  const context = { metrics: openrestyMetricsSource(registry, nginx.dumpUrl) } as unknown as AdminContext;
  const app = buildAdminApp({ settings: AdminSettings.parse({}), context });
  try {
    const response = await app.inject({ method: 'GET', url: path });
    expect(response.statusCode).toBe(200);
    return response.body;
  } finally {
    await app.close();
  }
}

const decision = (version: 'stable' | 'candidate', upstream: string): Decision => ({
  service: 'shop',
  version,
  upstream,
  candidate: version === 'candidate' ? upstream : undefined,
  reason: 'r',
  dependsOnCaller: true,
  vary: undefined,
  cachePrivate: false,
});
const record = (d: Decision | undefined, status: number): ExchangeRecord => ({
  method: 'GET',
  path: '/',
  identitySource: undefined,
  decision: d,
  upstreamName: d?.upstream,
  serverOrigin: undefined,
  status,
  bytesSent: 10,
  durationMs: 0.5,
  aborted: false,
});

describe('metrics.lua', () => {
  it("graygate's /metrics shows exactly the requests per version, status class and upstream, and their durations", async () => {
    const gray = COUNTS.gray;
    // A candidate decision that stable served counts as stable (the version that served it).
    const stableCount = COUNTS.prod + COUNTS.anonymous + FALLBACKS;
    const text = await eventually(async () => {
      const body = await scrape(new Registry(), '/metrics');
      // Each worker adds its request and token lookup counts to the dict on its next flush.
      expect(body).toContain('graygate_identity_lookups_total{source="tokenLookup",result="miss"} 2');
      expect(body).toContain(`graygate_requests_total{service="shop",version="candidate",status_class="2xx",upstream="shop-v2"} ${gray}`);
      expect(body).toContain(`graygate_requests_total{service="shop",version="stable",status_class="2xx",upstream="shop-v1"} ${stableCount}`);
      expect(body).toContain(`graygate_requests_total{service="",version="",status_class="4xx",upstream=""} ${COUNTS.unmatched}`);
      return body;
    });
    expect(text).toContain(`graygate_request_duration_seconds_count{service="shop",version="candidate"} ${gray}`);
    expect(text).toContain(`graygate_request_duration_seconds_bucket{service="shop",version="stable",le="+Inf"} ${stableCount}`);
    // Every lookup after the first of each token answered from a cache.
    expect(text).toContain(`graygate_identity_lookups_total{source="tokenLookup",result="hit"} ${gray + COUNTS.prod - 2}`);
    expect(text).toMatch(/# HELP graygate_requests_total Requests answered, by service/);
    expect(text).toContain(`graygate_fallback_total{service="shop",from="shop-v2",to="shop-v1",reason="connect_failure"} ${FALLBACKS}`);
    expect(text).toContain(`graygate_upstream_errors_total{upstream="shop-v2",kind="connect"} ${FALLBACKS}`);
    expect(text).toContain(`graygate_upstream_ejections_total{upstream="shop-v2"} ${FALLBACKS}`);
    expect(text).toMatch(/# TYPE graygate_request_duration_seconds histogram/);
    // Buckets are cumulative and end at the count.
    const json = JSON.parse(await scrape(new Registry(), '/v1/metrics')) as MetricsJson;
    const buckets = valuesOf(json, 'graygate_request_duration_seconds').filter((v) => v.metricName?.endsWith('_bucket') && v.labels.version === 'candidate');
    expect(buckets).toHaveLength(14);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
    expect(buckets.at(-1)!.value).toBe(gray);
  });

  it("nginx's series are the Node data plane's own: summed with a Node registry that saw the same requests, every figure doubles and no series stands alone", async () => {
    const registry = new Registry();
    const node = new RequestMetrics(registry);
    const candidateDecision = decision('candidate', 'shop-v2');
    const stableDecision = decision('stable', 'shop-v1');
    for (let i = 0; i < COUNTS.gray; i++) node.requestClosed(record(candidateDecision, 200));
    for (let i = 0; i < COUNTS.prod + COUNTS.anonymous; i++) node.requestClosed(record(stableDecision, 200));
    for (let i = 0; i < COUNTS.unmatched; i++) node.requestClosed(record(undefined, 404));
    for (let i = 0; i < FALLBACKS; i++) {
      node.upstreamFailed('shop-v2', 'GG_UPSTREAM_CONNECT', true);
      node.serverEjected('shop-v2');
      node.fellBack(candidateDecision, 'shop-v1', 'connect_failure');
      // Node's stable decision here is the service's (reason differs, which no series carries).
      node.requestClosed({ ...record(candidateDecision, 200), upstreamName: 'shop-v1' });
    }
    const nodeJson = (await registry.getMetricsAsJSON()) as unknown as MetricsJson;
    const nginxJson = (await readOpenrestyDump(nginx.dumpUrl)).metrics;
    const summed = JSON.parse(await scrape(registry, '/v1/metrics')) as MetricsJson;

    const requests = valuesOf(summed, 'graygate_requests_total');
    expect(requests.filter((v) => v.value > 0)).toHaveLength(3);
    for (const name of ['graygate_requests_total', 'graygate_fallback_total', 'graygate_upstream_errors_total', 'graygate_upstream_ejections_total']) {
      const nginxValues = valuesOf(nginxJson, name);
      expect(nginxValues.length).toBeGreaterThan(0);
      for (const v of nginxValues) expect(find(valuesOf(summed, name), v.labels)).toBe(2 * v.value);
      expect(valuesOf(summed, name).filter((v) => v.value > 0)).toHaveLength(nginxValues.length);
    }
    // Histograms: the same label sets and bucket bounds on both sides, so counts double.
    const duration = valuesOf(summed, 'graygate_request_duration_seconds');
    for (const v of valuesOf(nginxJson, 'graygate_request_duration_seconds').filter((x) => x.metricName?.endsWith('_count'))) {
      expect(find(valuesOf(nodeJson, 'graygate_request_duration_seconds'), v.labels, v.metricName)).toBe(v.value);
      expect(find(duration, v.labels, v.metricName)).toBe(2 * v.value);
    }
    const bucketLabels = (json: MetricsJson) =>
      valuesOf(json, 'graygate_request_duration_seconds')
        .filter((v) => v.metricName?.endsWith('_bucket') && v.labels.service === 'shop')
        .map((v) => JSON.stringify(Object.entries(v.labels).sort(([a], [b]) => a.localeCompare(b))))
        .sort();
    expect(bucketLabels(nginxJson)).toEqual(bucketLabels(nodeJson));
  });

  it('gives the rollout analysis exact per-version figures: requests, 5xx, fallbacks as candidate failures, a latency per request', async () => {
    const dump = await readOpenrestyDump(nginx.dumpUrl);
    const shop = dump.figures?.shop;
    expect(shop).toBeDefined();
    expect(shop!.candidate).toMatchObject({ requests: COUNTS.gray, errors: 0, failures: FALLBACKS });
    // A candidate decision that stable served counts for stable, as on Node.
    expect(shop!.stable).toMatchObject({ requests: COUNTS.prod + COUNTS.anonymous + FALLBACKS, errors: 0, failures: 0 });
    const total = (latency: Record<string, number>) => Object.values(latency).reduce((a, b) => a + b, 0);
    expect(total(shop!.candidate.latency)).toBe(COUNTS.gray);
    expect(total(shop!.stable.latency)).toBe(shop!.stable.requests);
    for (const key of Object.keys({ ...shop!.stable.latency, ...shop!.candidate.latency })) expect(Number(key)).toBeLessThan(LATENCY_BUCKET_COUNT);
    // Unmatched requests are in no service's figures.
    expect(Object.keys(dump.figures!)).toEqual(['shop']);
  });

  it("puts a latency in the same bucket as graygate's latencyBucket (the bounds come from graygate's table)", async () => {
    const buckets = async (values: number[]) => {
      const response = await request(`${nginx.url}/latency-buckets`, { method: 'POST', body: values.map((v) => String(v)).join('\n') });
      return (await response.body.text()).split('\n').map(Number);
    };
    // Every bound, and the doubles just around it, where an off-by-one would show.
    const edges = LATENCY_BOUNDS_MS.flatMap((bound) => [bound, bound * (1 - 1e-15), bound * (1 + 1e-15), bound + 1e-9, bound - 1e-9]);
    const fixed = [0, -1, 1e-9, 0.25, 1_000_000, ...edges];
    expect(await buckets(fixed)).toEqual(fixed.map(latencyBucket));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.double({ min: 0, max: 200_000, noNaN: true }), { minLength: 1, maxLength: 200 }), async (values) => {
        expect(await buckets(values)).toEqual(values.map(latencyBucket));
      }),
      { numRuns: 30 },
    );
  });

  it('counts a request in flight per upstream while it is (the drain figure), and none once it closed', async () => {
    const poller = pollOpenrestyLoad(nginx.dumpUrl, { everyMs: 50 });
    try {
      await eventually(() => expect(poller.lastReadAt).toBeGreaterThan(0));
      expect(poller.stats().upstreams['shop-v2']?.inFlightRequests ?? 0).toBe(0);
      const slow = nginx.get('/slow', GRAY);
      await eventually(() => expect(poller.stats().upstreams['shop-v2']?.inFlightRequests).toBe(1));
      expect(poller.stats().upstreams['shop-v1']?.inFlightRequests ?? 0).toBe(0);
      expect(poller.stats().inFlightRequests).toBe(1);
      expect(poller.stats().openConnections).toBeGreaterThanOrEqual(1);
      // nginx does not tell connections per upstream (a documented difference): 0, not a guess.
      expect(poller.stats().upstreams['shop-v2']?.openConnections).toBe(0);
      const text = await scrape(new Registry(), '/metrics');
      expect(text).toContain('graygate_upstream_in_flight_requests{upstream="shop-v2"} 1');
      // The request is in the counts only once it closed (within a flush interval after).
      const candidate = async () => find(valuesOf((await readOpenrestyDump(nginx.dumpUrl)).metrics, 'graygate_requests_total'), { service: 'shop', version: 'candidate', status_class: '2xx', upstream: 'shop-v2' });
      expect(await candidate()).toBe(COUNTS.gray);
      releaseSlow!();
      expect((await slow).body).toBe('slow');
      await eventually(() => expect(poller.stats().upstreams['shop-v2']?.inFlightRequests).toBe(0));
      await eventually(async () => expect(await candidate()).toBe(COUNTS.gray + 1));
    } finally {
      poller.close();
    }
  });

  it('the access log line carries service, served version, upstream, rule and the identity source, never a token', async () => {
    await eventually(() => expect(nginx.accessLog().trim().split('\n').length).toBeGreaterThanOrEqual(COUNTS.gray + COUNTS.prod + COUNTS.anonymous + COUNTS.unmatched + FALLBACKS));
    const lines = nginx
      .accessLog()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const routed = lines.filter((line) => line.path === '/');
    expect(routed.filter((line) => line.version === 'candidate')).toHaveLength(COUNTS.gray);
    expect(routed.find((line) => line.version === 'candidate')).toMatchObject({
      event: 'access',
      method: 'GET',
      status: 200,
      service: 'shop',
      upstream: 'shop-v2',
      rule: 'first-users',
      identity: 'tokenLookup',
    });
    expect(routed.find((line) => line.version === 'stable' && line.identity === '')).toMatchObject({ service: 'shop', upstream: 'shop-v1', rule: 'no rule matched' });
    expect(lines.find((line) => line.path === '/nomatch')).toMatchObject({ status: 404, service: '', version: '' });
    // A fallback names what served the request: the log phase runs before nginx writes the line.
    expect(lines.filter((line) => line.path === '/fallback')).toHaveLength(FALLBACKS);
    expect(lines.find((line) => line.path === '/fallback')).toMatchObject({ service: 'shop', version: 'stable', upstream: 'shop-v1', rule: 'first-users' });
    // The duration is nginx's $request_time, in seconds (Node logs durationMs).
    expect(typeof routed[0]!.requestTime).toBe('number');
    expect(nginx.accessLog()).not.toContain(GRAY);
    expect(nginx.accessLog()).not.toContain(PROD);
  });

  it('through the variables, a request answered by the error page counts under its service and version, and leaves nothing in flight', async () => {
    for (let i = 0; i < VARS_ERRORS; i++) {
      const response = await nginx.get('/vars-error');
      expect(response).toMatchObject({ status: 502, body: 'error page\n' });
    }
    // Upstream errors are in the dict at once; the closed requests within a flush interval.
    const dump = await readOpenrestyDump(nginx.dumpUrl);
    expect(find(valuesOf(dump.metrics, 'graygate_upstream_errors_total'), { upstream: 'vars-v2', kind: 'connect' })).toBe(VARS_ERRORS);
    await eventually(async () => {
      const counted = await readOpenrestyDump(nginx.dumpUrl);
      expect(find(valuesOf(counted.metrics, 'graygate_requests_total'), { service: 'vars', version: 'candidate', status_class: '5xx', upstream: 'vars-v2' })).toBe(VARS_ERRORS);
      expect(counted.load.upstreams['vars-v2']?.inFlightRequests).toBe(0);
    });
  });

  it('the usual request (its state table kept) is counted from it: candidate, or stable after a fallback, nothing left in flight', async () => {
    const before = await readOpenrestyDump(nginx.dumpUrl);
    const requests = (dump: typeof before, version: string, upstream: string) =>
      find(valuesOf(dump.metrics, 'graygate_requests_total'), { service: 'shop', version, status_class: '2xx', upstream }) ?? 0;
    for (let i = 0; i < 3; i++) expect(JSON.parse((await nginx.get('/vars-fast')).body).version).toBe('shop-v2');
    for (let i = 0; i < 2; i++) expect(JSON.parse((await nginx.get('/vars-fast?fallback=1')).body).version).toBe('shop-v1');
    const after = await eventually(async () => {
      const dump = await readOpenrestyDump(nginx.dumpUrl);
      expect(requests(dump, 'candidate', 'shop-v2') - requests(before, 'candidate', 'shop-v2')).toBe(3);
      expect(requests(dump, 'stable', 'shop-v1') - requests(before, 'stable', 'shop-v1')).toBe(2);
      expect(dump.load.upstreams['shop-v1']?.inFlightRequests).toBe(0);
      expect(dump.load.upstreams['shop-v2']?.inFlightRequests).toBe(0);
      return dump;
    });
    expect(find(valuesOf(after.metrics, 'graygate_fallback_total'), { service: 'shop', from: 'shop-v2', to: 'shop-v1', reason: 'unhealthy' })).toBe(2);
  });

  it('the dump is read the same over nginx\'s unix socket', async () => {
    const overTcp = await readOpenrestyDump(nginx.dumpUrl);
    const overSocket = await readOpenrestyDump({ socketPath: nginx.socketPath });
    expect(overSocket.metrics.map((metric) => metric.name)).toEqual(overTcp.metrics.map((metric) => metric.name));
    expect(find(valuesOf(overSocket.metrics, 'graygate_requests_total'), { service: '', version: '', status_class: '4xx', upstream: '' })).toBe(COUNTS.unmatched);
    await expect(readOpenrestyDump({ socketPath: `${nginx.socketPath}.missing` }, 500)).rejects.toMatchObject({ code: 'GG_INTERNAL', message: expect.stringContaining('control.sock.missing') });
  });

  it('an unreachable dump is a clear error naming the URL, not zeros', async () => {
    await expect(readOpenrestyDump('http://127.0.0.1:1/graygate/metrics', 500)).rejects.toMatchObject({ code: 'GG_INTERNAL', message: expect.stringContaining('127.0.0.1:1/graygate/metrics') });
  });
});
