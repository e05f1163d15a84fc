import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { parsePrometheusText, value, type Sample } from './prometheus-text.js';

const TOKEN = 'metrics-scraper-token-0123456789';
const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');

/**
 * Known traffic through the real gateway process, then /metrics read back: every counter and
 * histogram count must match it exactly, per served version and status class. With --workers the
 * requests land on different workers (a new connection each), and the primary must sum them.
 */
function describeKnownTraffic(workers: number, runtime: 'node' | 'bun'): void {
  describe(`metrics after known traffic, --workers ${workers} on ${runtime}`, () => {
    let stable: Backend;
    let candidate: Backend;
    let gateway: GatewayProcess;
    let adminUrl: string;

    beforeAll(async () => {
      stable = await startBackend('stable');
      // The candidate answers 500 under /app/fail: the 5xx the dashboard's error rate is made of.
      candidate = await startBackend('candidate', (req, res) => {
        if (!req.url?.startsWith('/app/fail')) return false;
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('candidate broke');
        return true;
      });
      gateway = await startGatewayProcess({
        config: {
          admin: { listen: '127.0.0.1:0', tokens: [{ name: 'scraper', tokenEnv: 'GG_METRICS_TOKEN' }] },
          upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
          services: [
            {
              name: 'app',
              match: { pathPrefix: '/app' },
              stable: 'app-v1',
              release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals: '1' } }] },
            },
          ],
        },
        env: { GG_METRICS_TOKEN: TOKEN, GRAYGATE_WORKERS: String(workers) },
        readyWithinMs: 20_000,
        ...(runtime === 'bun' ? { runtime: bun } : {}),
      });
      const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
      adminUrl = `http://127.0.0.1:${String(line.port)}`;
    });

    afterAll(async () => {
      await gateway?.stop();
      await Promise.all([stable?.close(), candidate?.close()]);
    });

    const send = async (path: string, headers: Record<string, string> = {}): Promise<number> => {
      // A new connection per request: with workers, node:cluster hands each to the next worker.
      const response = await request(`${gateway.url}${path}`, { headers: { connection: 'close', ...headers } });
      await response.body.text();
      return response.statusCode;
    };

    const scrape = async (): Promise<Sample[]> => {
      const response = await request(`${adminUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      const text = await response.body.text();
      expect(response.statusCode, text).toBe(200);
      expect(response.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      return parsePrometheusText(text);
    };

    it('counts 37 stable 2xx, 13 candidate 2xx, 5 candidate 5xx and 3 unmatched exactly, with a histogram count per version', async () => {
      const statuses: number[] = [];
      for (let i = 0; i < 37; i++) statuses.push(await send(`/app/s${i}?q=${i}`));
      for (let i = 0; i < 13; i++) statuses.push(await send(`/app/c${i}`, { 'x-canary': '1' }));
      for (let i = 0; i < 5; i++) statuses.push(await send(`/app/fail/${i}`, { 'x-canary': '1' }));
      for (let i = 0; i < 3; i++) statuses.push(await send(`/elsewhere/${i}`));
      expect(statuses.filter((s) => s === 200)).toHaveLength(50);
      expect(statuses.filter((s) => s === 500)).toHaveLength(5);
      expect(statuses.filter((s) => s === 404)).toHaveLength(3);

      // A worker records a request when its response has closed, which may be just after the
      // client read it: wait for the last one to land, then compare everything exactly.
      if (workers > 1) {
        // Both workers served (so the totals below are sums), and each request has its access line.
        await eventually(() => {
          const access = gateway.logs().filter((line) => line.event === 'access' && String(line.path).startsWith('/app'));
          expect(access).toHaveLength(55);
          expect(new Set(access.map((line) => line.worker)).size).toBe(workers);
        });
      }
      const samples = await eventually(
        async () => {
          const read = await scrape();
          expect(value(read, 'graygate_requests_total')).toBe(58);
          return read;
        },
        { withinMs: 5_000 },
      );
      const requests = (where: Record<string, string>) => value(samples, 'graygate_requests_total', where);
      expect(requests({ service: 'app', version: 'stable', status_class: '2xx', upstream: 'app-v1' })).toBe(37);
      expect(requests({ service: 'app', version: 'candidate', status_class: '2xx', upstream: 'app-v2' })).toBe(13);
      expect(requests({ service: 'app', version: 'candidate', status_class: '5xx', upstream: 'app-v2' })).toBe(5);
      expect(requests({ service: '', version: '', status_class: '4xx', upstream: '' })).toBe(3);
      expect(requests({ service: 'app', version: 'stable', status_class: '5xx' })).toBe(0);
      expect(requests({ version: 'stable' })).toBe(37);
      expect(requests({ version: 'candidate' })).toBe(18);

      const histogram = (suffix: string, where: Record<string, string>) => value(samples, `graygate_request_duration_seconds${suffix}`, where);
      expect(histogram('_count', { service: 'app', version: 'stable' })).toBe(37);
      expect(histogram('_count', { service: 'app', version: 'candidate' })).toBe(18);
      expect(histogram('_count', { service: '' })).toBe(3);
      // Every request falls in the +Inf bucket; on loopback all of them well within 10 s.
      expect(histogram('_bucket', { service: 'app', version: 'candidate', le: '+Inf' })).toBe(18);
      expect(histogram('_bucket', { service: 'app', version: 'candidate', le: '10' })).toBe(18);
      expect(histogram('_sum', { service: 'app', version: 'stable' })).toBeGreaterThan(0);
      expect(histogram('_sum', { service: 'app', version: 'stable' })).toBeLessThan(37 * 10);

      // The JSON form is the same aggregated registry.
      const json = await request(`${adminUrl}/v1/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect(json.statusCode).toBe(200);
      const metrics = (await json.body.json()) as { name: string; values: { value: number; labels: Record<string, string> }[] }[];
      const counter = metrics.find((metric) => metric.name === 'graygate_requests_total')!;
      const candidate5xx = counter.values.filter((v) => v.labels.version === 'candidate' && v.labels.status_class === '5xx').reduce((a, v) => a + v.value, 0);
      expect(candidate5xx).toBe(5);
    });

    it('serves the metrics only with the admin bearer token', async () => {
      for (const path of ['/metrics', '/v1/metrics']) {
        const anonymous = await request(`${adminUrl}${path}`);
        await anonymous.body.text();
        expect(anonymous.statusCode).toBe(401);
        const wrong = await request(`${adminUrl}${path}`, { headers: { authorization: 'Bearer not-the-token-0123456789' } });
        await wrong.body.text();
        expect(wrong.statusCode).toBe(401);
      }
    });
  });
}

describeKnownTraffic(1, 'node');
describeKnownTraffic(2, 'node');
describeKnownTraffic(1, 'bun');
describeKnownTraffic(2, 'bun');
