import type http from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startLoad, type Load } from '../helpers/load.js';
import { startPrometheus, type PrometheusServer } from '../helpers/prometheus.js';

/**
 * A rollout's external checks against the real things: a real Prometheus (Debian's package)
 * scraping the real gateway's /metrics every second, and real webhook servers. The built-in
 * analysis is made unable to fail (bounds no candidate can cross) so that what each rollout ends
 * with is the external check's doing: fail rolls back, pass advances, could-not-be-read holds
 * and then pauses for a person, never passes.
 */
describe('external rollout checks against a real Prometheus and real webhooks', () => {
  let stable: Backend;
  let good: Backend;
  let broken: Backend;
  let hookOk: Backend;
  let hookFail: Backend;
  let hookSlow: Backend;
  let prometheus: PrometheusServer;
  let gateway: GatewayProcess;
  let adminUrl: string;
  const loads: Load[] = [];
  const slowAnswers: http.ServerResponse[] = [];

  const few = { candidate: 20, stable: 20 };
  // Bounds no candidate can cross (100 % errors stays under stable + 100 points; latency × 1000):
  // the built-in checks pass once they have their samples, and the external check decides.
  const lenient = { minSamples: few, errors: { relative: 1, absolute: 1, minSamples: few }, latency: { p50Ratio: 1000, p99Ratio: 1000, minSamples: few } };
  const services = ['prom-fail', 'prom-pass', 'prom-down', 'hook-pass', 'hook-fail', 'hook-slow'];

  const api = async (method: string, path: string, body?: unknown) => {
    const response = await request(`${adminUrl}${path}`, {
      method: method as 'GET',
      headers: body !== undefined ? { 'content-type': 'application/json' } : {},
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await response.body.text();
    return { status: response.statusCode, body: (text.startsWith('{') ? JSON.parse(text) : text) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const randomUser = () => ({ 'x-user-id': String(1 + Math.floor(Math.random() * 1_000_000)) });
  const loadOn = (service: string) => {
    const load = startLoad({ url: `${gateway.url}/${service}`, maxMs: 180_000, concurrency: 1, pauseMs: 20, headers: randomUser });
    loads.push(load);
    return load;
  };
  const start = async (service: string, candidate: string, check: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
    const plan = { steps: [{ percent: 50, holdMs: 1_000 }], end: 'stop', analysis: lenient, checks: [{ name: 'external', everyMs: 500, ...check }], ...extra };
    const started = await api('POST', `/v1/services/${service}/rollout/start`, { reason: `check ${service}`, candidate, plan });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
  };
  const ended = (service: string, status: string) =>
    eventually(
      async () => {
        const now = await api('GET', `/v1/services/${service}/rollout`);
        expect(now.body.run.status, now.body.run.reason).toBe(status);
        return now.body;
      },
      { withinMs: 90_000 },
    );
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const externalOf = (record: { evidence: { metric: string }[] }): any => record.evidence.find((e) => e.metric === 'external');

  beforeAll(async () => {
    const reply = (status: number) => (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ version: 'candidate', status }));
      return true;
    };
    [stable, good, broken, hookOk, hookFail, hookSlow] = await Promise.all([
      startBackend('stable'),
      startBackend('candidate'),
      startBackend('candidate', reply(500)),
      startBackend('hook-ok', reply(204)),
      startBackend('hook-fail', reply(500)),
      // Never answers on its own: held until the test ends, far past the check's timeout.
      startBackend('hook-slow', (req, res) => {
        req.resume();
        slowAnswers.push(res);
        return true;
      }),
    ]);
    gateway = await startGatewayProcess({
      config: {
        admin: { listen: '127.0.0.1:0' },
        upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [good.url] }, 'app-v2-broken': { servers: [broken.url] } },
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
        services: services.map((name) => ({ name, match: { pathPrefix: `/${name}` }, stable: 'app-v1' })),
      },
      workers: 1,
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(line.port)}`;
    prometheus = await startPrometheus({ targets: [`127.0.0.1:${String(line.port)}`], scrapeIntervalMs: 1_000 });
    await prometheus.waitForTargets();
  });

  afterAll(async () => {
    await Promise.all(loads.map((load) => load.stop()));
    for (const res of slowAnswers) res.destroy();
    await gateway?.stop();
    await prometheus?.stop();
    await Promise.all([stable, good, broken, hookOk, hookFail, hookSlow].map((backend) => backend?.close()));
  });

  /** The candidate's 5xx responses as Prometheus scraped them from the gateway (0 when there are none). */
  const candidate5xx = (service: string) => `sum(graygate_requests_total{service="${service}",version="candidate",status_class="5xx"}) or vector(0)`;

  it('a Prometheus query over the candidate\'s 5xx counter above its threshold rolls the rollout back, naming the query, its value and the threshold', async () => {
    loadOn('prom-fail');
    // A long hold: the query sees the 5xx only once Prometheus has scraped them (every second, later
    // on a loaded box), while the built-in checks have their samples within a second or two; a
    // short hold could end with a query that had not seen them yet. The rollback ends it early.
    await start('prom-fail', 'app-v2-broken', { prometheus: { url: prometheus.url, query: candidate5xx('prom-fail'), op: '<=', threshold: 3 } }, { steps: [{ percent: 50, holdMs: 30_000 }] });
    const status = await ended('prom-fail', 'rolled-back');
    const record = status.run.records.at(-1);
    expect(record.event).toBe('rollback');
    const external = externalOf(record);
    expect(external).toMatchObject({ outcome: 'fail', bound: 3, stable: null });
    // The value is what Prometheus answered from its scrapes of the gateway: more than the threshold.
    expect(external.candidate).toBeGreaterThan(3);
    expect(external.detail).toContain('graygate_requests_total');
    // The built-in checks could not fail: the rollback is the query's.
    expect(record.evidence.filter((e: { outcome: string }) => e.outcome === 'fail').map((e: { metric: string }) => e.metric)).toEqual(['external']);
    expect(status.run.reason).toMatch(/external failed/);
  });

  it('a Prometheus query that meets its condition lets the step pass', async () => {
    const load = loadOn('prom-pass');
    await start('prom-pass', 'app-v2', { prometheus: { url: prometheus.url, query: candidate5xx('prom-pass'), op: '<=', threshold: 0 } });
    const status = await ended('prom-pass', 'done');
    const passed = status.run.records.find((r: { event: string }) => r.event === 'passed');
    expect(externalOf(passed)).toMatchObject({ outcome: 'pass', candidate: 0, bound: 0 });
    expect((await load.stop()).failures).toEqual([]);
  });

  it('an unreachable Prometheus is inconclusive: the step holds past its hold and then pauses for a person, never passing', async () => {
    loadOn('prom-down');
    const nobody = `http://127.0.0.1:${await deadPort()}`;
    await start('prom-down', 'app-v2', { prometheus: { url: nobody, query: candidate5xx('prom-down'), op: '<=', threshold: 0 }, timeoutMs: 1_000 }, { inconclusivePauseMs: 8_000 });
    const status = await ended('prom-down', 'paused');
    expect(status.run.step).toBe(0);
    expect(status.run.records.some((r: { event: string }) => r.event === 'passed')).toBe(false);
    const pause = status.run.records.at(-1);
    expect(pause.event).toBe('pause');
    expect(externalOf(pause)).toMatchObject({ outcome: 'inconclusive', candidate: null });
    expect(externalOf(pause).detail).toMatch(/could not be read/);
    // What held it is the check alone: every built-in check had its samples and passed.
    expect(pause.evidence.filter((e: { outcome: string }) => e.outcome !== 'pass').map((e: { metric: string }) => e.metric)).toEqual(['external']);
    expect(status.run.reason).toMatch(/inconclusive .* past its hold/);
    expect((await api('POST', '/v1/services/prom-down/rollout/abort', { reason: 'end of test' })).status).toBe(200);
  });

  it('a webhook check: 2xx passes, 500 fails the step, no answer within the timeout holds it (three rollouts with checks at once, each judged on its own answers)', async () => {
    for (const service of ['hook-pass', 'hook-fail', 'hook-slow']) loadOn(service);
    // One start after the other: each is a compare-and-set of the same routing document.
    await start('hook-pass', 'app-v2', { webhook: { url: hookOk.url } });
    await start('hook-fail', 'app-v2', { webhook: { url: hookFail.url } });
    await start('hook-slow', 'app-v2', { webhook: { url: hookSlow.url }, timeoutMs: 500 }, { inconclusivePauseMs: 8_000 });
    const [passed, failed, held] = await Promise.all([ended('hook-pass', 'done'), ended('hook-fail', 'rolled-back'), ended('hook-slow', 'paused')]);
    expect(externalOf(passed.run.records.find((r: { event: string }) => r.event === 'passed'))).toMatchObject({ outcome: 'pass', candidate: 204 });
    expect(externalOf(failed.run.records.at(-1))).toMatchObject({ outcome: 'fail', candidate: 500 });
    expect(failed.run.records.at(-1).event).toBe('rollback');
    expect(held.run.records.some((r: { event: string }) => r.event === 'passed')).toBe(false);
    expect(externalOf(held.run.records.at(-1))).toMatchObject({ outcome: 'inconclusive', candidate: null });
    expect(externalOf(held.run.records.at(-1)).detail).toMatch(/no answer within 500 ms/);
    expect(held.run.records.at(-1).evidence.filter((e: { outcome: string }) => e.outcome !== 'pass').map((e: { metric: string }) => e.metric)).toEqual(['external']);
    // The hook was told what it judges: the service, the candidate and the step.
    const call = hookOk.seen.find((seen) => seen.method === 'POST');
    expect(call).toBeDefined();
    expect((await api('POST', '/v1/services/hook-slow/rollout/abort', { reason: 'end of test' })).status).toBe(200);
  });
});
