import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import type http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startLoad } from '../helpers/load.js';
import { send, startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';

// `graygate start --data-plane openresty`: a real nginx with the Lua module runs graygate's rules,
// graygate is its control plane (file store, admin API); real backends on ephemeral ports.
// The proxy behaviours of the Node data plane's end-to-end suite that apply to nginx: routing by
// rule, live changes without a reload and without a failed request, the fail-safe to stable,
// round robin with passive ejection, retries only when nothing was sent, timeouts.

/** Answers nothing at all: holds the request until the connection is closed. */
function silent(): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  return () => true;
}

/** Closes the connection as soon as the request arrives (nothing answered). */
function resetting(): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  return (req) => {
    req.socket.destroy();
    return true;
  };
}

describe('the OpenResty data plane behind a trusted proxy', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: OpenRestyGateway;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    gateway = await startOpenRestyGateway({
      config: {
        log: { level: 'info', format: 'json' },
        admin: { listen: '127.0.0.1:0' },
        // The test client (127.0.0.1) plays a trusted proxy: X-Forwarded-For names the caller.
        trustedProxies: ['127.0.0.1/32'],
        upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
        services: [{ name: 'shop', stable: 'shop-v1', release: { candidate: 'shop-v2', state: 'canary', rules: [{ name: 'office', cidr: { cidrs: ['203.0.113.0/24'] } }] } }],
      },
      workers: 1,
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it("appends the peer to a trusted proxy's X-Forwarded-For and routes by the caller it names", async () => {
    const office = await send(gateway.url, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    expect(office.version).toBe('candidate');
    expect((office.json?.headers as Record<string, string>)['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
    const elsewhere = await send(gateway.url, { headers: { 'x-forwarded-for': '198.51.100.4' } });
    expect(elsewhere.version).toBe('stable');
    expect((elsewhere.json?.headers as Record<string, string>)['x-forwarded-for']).toBe('198.51.100.4, 127.0.0.1');
    // Without the header the peer itself is the caller, and the upstream sees it alone.
    const direct = await send(gateway.url);
    expect(direct.version).toBe('stable');
    expect((direct.json?.headers as Record<string, string>)['x-forwarded-for']).toBe('127.0.0.1');
  });
});

describe('the OpenResty data plane: routing and live changes', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: OpenRestyGateway;

  const config = (equals: string) => ({
    log: { level: 'info', format: 'json' },
    admin: { listen: '127.0.0.1:0' },
    proxy: { versionHeader: 'x-graygate-version' },
    upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
    services: [{ name: 'shop', stable: 'shop-v1', release: { candidate: 'shop-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals } }] } }],
  });

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    gateway = await startOpenRestyGateway({ config: config('1'), workers: 2 });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('sends a caller the rules pick to the candidate and everyone else to stable, naming the version', async () => {
    const tester = await send(gateway.url, { headers: { 'x-canary': '1' } });
    expect(tester.status).toBe(200);
    expect(tester.version).toBe('candidate');
    expect(tester.headers['x-graygate-version']).toBe('candidate');
    const other = await send(gateway.url);
    expect(other.version).toBe('stable');
    expect(other.headers['x-graygate-version']).toBe('stable');
    // Served by nginx, not by a Node listener.
    expect(other.headers.server).toMatch(/nginx|openresty/i);
  });

  it('replaces an X-Forwarded-For from a peer that is not a trusted proxy', async () => {
    const answer = await send(gateway.url, { headers: { 'x-forwarded-for': '203.0.113.9' } });
    expect((answer.json?.headers as Record<string, string>)['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('applies a rule change on every nginx worker without a reload, and no request fails meanwhile', async () => {
    const workersBefore = gateway.workerPids().sort();
    expect(workersBefore.length).toBe(2);
    const load = startLoad({ url: gateway.url, maxMs: 120_000, concurrency: 4, headers: { 'x-canary': '2' }, pauseMs: 2 });
    await eventually(() => expect(load.sent()).toBeGreaterThan(20));
    const text = stringify(config('2'));
    writeFileSync(`${gateway.configPath}.tmp`, text);
    renameSync(`${gateway.configPath}.tmp`, gateway.configPath);
    // Every new connection (spread over both workers by the kernel) now sees the new rule.
    await eventually(async () => {
      const answers = await Promise.all(Array.from({ length: 12 }, () => send(gateway.url, { headers: { 'x-canary': '2' } })));
      expect(answers.map((a) => a.version)).toEqual(Array(12).fill('candidate'));
    });
    const mark = load.mark();
    await eventually(() => expect(load.answersSince(mark).candidate ?? 0).toBeGreaterThan(20));
    const result = await load.stop();
    expect(result.failed, result.failures.join('\n')).toBe(0);
    expect(load.answersSince(mark).stable ?? 0).toBe(0);
    // No reload: the same worker processes serve the new rules.
    expect(gateway.workerPids().sort()).toEqual(workersBefore);
    expect(readFileSync(gateway.configPath, 'utf8')).toContain('equals: "2"');
  });

  it('counts nginx\'s requests in the admin API\'s /metrics, by the version that served them, and logs each with its service, version and rule', async () => {
    const admin = gateway.logs().find((line) => line.event === 'admin-listening');
    const url = `http://127.0.0.1:${String(admin?.port)}`;
    await send(gateway.url, { headers: { 'x-canary': '2' } });
    await eventually(async () => {
      const text = (await send(url, { path: '/metrics' })).text;
      expect(text).toMatch(/graygate_requests_total\{service="shop",version="candidate",status_class="2xx",upstream="shop-v2"\} [1-9]/);
      expect(text).toMatch(/graygate_requests_total\{service="shop",version="stable",status_class="2xx",upstream="shop-v1"\} [1-9]/);
    });
    const started = gateway.logs().find((line) => line.event === 'nginx-started');
    await eventually(() => {
      const lines = readFileSync(String(started?.accessLog), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(lines.some((line) => line.event === 'access' && line.service === 'shop' && line.version === 'candidate' && line.rule === 'testers')).toBe(true);
    });
  });

  it('reports itself in the admin API\'s fleet view with the version its nginx serves', async () => {
    const admin = gateway.logs().find((line) => line.event === 'admin-listening');
    const url = `http://127.0.0.1:${String(admin?.port)}`;
    await eventually(async () => {
      const fleet = (await send(url, { path: '/v1/fleet' })).json as { gateways: { self?: boolean; servedVersion: number; dataPlane?: string }[]; store: { version: number } };
      const self = fleet.gateways.find((g) => g.self);
      expect(self?.servedVersion).toBe(fleet.store.version);
      expect(self?.servedVersion).toBeGreaterThanOrEqual(2);
      expect(self?.dataPlane).toBe('openresty');
    });
  });
});

describe('the OpenResty data plane: upstream failures', () => {
  const backends: Backend[] = [];
  let gateway: OpenRestyGateway;
  let stable: Backend;
  let spare: Backend;
  let slow: Backend;
  let reset: Backend;
  let dead: number;

  beforeAll(async () => {
    [stable, spare, slow, reset] = await Promise.all([startBackend('stable'), startBackend('spare'), startBackend('slow', silent()), startBackend('reset', resetting())]);
    backends.push(stable, spare, slow, reset);
    dead = await deadPort();
    const deadUrl = `http://127.0.0.1:${dead}`;
    gateway = await startOpenRestyGateway({
      workers: 1,
      config: {
        log: { level: 'info', format: 'json' },
        admin: { listen: '127.0.0.1:0' },
        proxy: { versionHeader: 'x-graygate-version' },
        upstreams: {
          // One server refuses connections: round robin skips it once it refused.
          pair: { servers: [deadUrl, spare.url], health: { ejectAfterFailures: 1, ejectForMs: 60_000 } },
          'all-dead': { servers: [deadUrl], health: { ejectAfterFailures: 1, ejectForMs: 60_000 } },
          stable: { servers: [stable.url] },
          slow: { servers: [slow.url], timeouts: { connectMs: 1_000, responseHeadersMs: 300, idleMs: 300 } },
          reset: { servers: [reset.url] },
        },
        services: [
          { name: 'pair', match: { pathPrefix: '/pair' }, stable: 'pair' },
          // The candidate refuses connections: the fail-safe sends its callers to stable.
          { name: 'fallback', match: { pathPrefix: '/fallback' }, stable: 'stable', release: { candidate: 'all-dead', state: 'full' } },
          { name: 'post', match: { pathPrefix: '/post' }, stable: 'stable', release: { candidate: 'all-dead', state: 'canary', rules: [{ name: 'posters', header: { name: 'x-post', equals: '1' } }] } },
          { name: 'slow', match: { pathPrefix: '/slow' }, stable: 'slow' },
          { name: 'reset', match: { pathPrefix: '/reset' }, stable: 'reset' },
        ],
      },
    });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all(backends.map((b) => b.close()));
  });

  it('retries a refused connection on the next server: every request succeeds', async () => {
    for (let i = 0; i < 6; i++) {
      const answer = await send(gateway.url, { path: '/pair' });
      expect(answer.status, answer.text).toBe(200);
      expect(answer.version).toBe('spare');
    }
  });

  it('sends the candidate\'s callers to stable when the candidate refuses connections', async () => {
    for (let i = 0; i < 3; i++) {
      const answer = await send(gateway.url, { path: '/fallback' });
      expect(answer.status, answer.text).toBe(200);
      expect(answer.version).toBe('stable');
      expect(answer.headers['x-graygate-version']).toBe('stable');
    }
    // The access log line names the version and upstream that served, not the decided ones.
    const started = gateway.logs().find((line) => line.event === 'nginx-started');
    await eventually(() => {
      const lines = readFileSync(String(started?.accessLog), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      const fallbacks = lines.filter((line) => line.path === '/fallback');
      expect(fallbacks).toHaveLength(3);
      for (const line of fallbacks) expect(line).toMatchObject({ service: 'fallback', version: 'stable', upstream: 'stable', status: 200 });
    });
  });

  it('never sends a request with a body again, but routes later ones to stable once the candidate is ejected', async () => {
    const first = await send(gateway.url, { path: '/post', method: 'POST', headers: { 'x-post': '1', 'content-type': 'text/plain' }, body: 'order=1' });
    // all-dead may already be ejected by the earlier test (shared health): then stable takes it.
    if (first.status !== 200) {
      expect(first.status).toBe(502);
      expect((first.json?.error as { code?: string } | undefined)?.code).toBe('GG_UPSTREAM_CONNECT');
    }
    const next = await send(gateway.url, { path: '/post', method: 'POST', headers: { 'x-post': '1', 'content-type': 'text/plain' }, body: 'order=2' });
    expect(next.status, next.text).toBe(200);
    expect(next.version).toBe('stable');
    expect(stable.seen.filter((seen) => seen.method === 'POST').length).toBeGreaterThanOrEqual(1);
  });

  it('answers 504 GG_UPSTREAM_TIMEOUT when the response headers do not come in time, without sending the request again', async () => {
    const before = slow.seen.length;
    const answer = await send(gateway.url, { path: '/slow' });
    expect(answer.status).toBe(504);
    expect((answer.json?.error as { code?: string }).code).toBe('GG_UPSTREAM_TIMEOUT');
    expect(slow.seen.length - before).toBe(1);
  });

  it('sends a GET again once after a reset before any response byte, and a POST with a body never', async () => {
    const before = reset.seen.length;
    const get = await send(gateway.url, { path: '/reset' });
    expect(get.status).toBe(502);
    expect((get.json?.error as { code?: string }).code).toBe('GG_UPSTREAM_RESET');
    expect(reset.seen.length - before).toBe(2);
    const mid = reset.seen.length;
    const post = await send(gateway.url, { path: '/reset', method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' });
    expect(post.status).toBe(502);
    expect(reset.seen.length - mid).toBe(1);
  });

  it('counts what the balancer saw in the admin API\'s /metrics: refused connects, the ejection, the fallback, the timeout', async () => {
    const admin = gateway.logs().find((line) => line.event === 'admin-listening');
    const url = `http://127.0.0.1:${String(admin?.port)}`;
    await eventually(async () => {
      const text = (await send(url, { path: '/metrics' })).text;
      expect(text).toMatch(/graygate_upstream_errors_total\{upstream="pair",kind="connect"\} [1-9]/);
      expect(text).toMatch(/graygate_upstream_ejections_total\{upstream="pair"\} [1-9]/);
      expect(text).toMatch(/graygate_fallback_total\{service="fallback",from="all-dead",to="stable",reason="(connect_failure|unhealthy)"\} [1-9]/);
      expect(text).toMatch(/graygate_upstream_errors_total\{upstream="slow",kind="timeout"\} [1-9]/);
      // A request the error location answered is counted too, and leaves nothing in flight.
      expect(text).toMatch(/graygate_requests_total\{service="slow",version="stable",status_class="5xx",upstream="slow"\} [1-9]/);
      expect(text).toMatch(/graygate_requests_total\{service="reset",version="stable",status_class="5xx",upstream="reset"\} [1-9]/);
      expect(text).toContain('graygate_upstream_in_flight_requests{upstream="slow"} 0');
      expect(text).toContain('graygate_upstream_in_flight_requests{upstream="reset"} 0');
    });
  });
});
