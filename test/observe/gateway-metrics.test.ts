import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { parse, stringify } from 'yaml';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { parsePrometheusText, value, type Sample } from './prometheus-text.js';

/**
 * The metrics besides request counts, read back exactly from the real process: routing version
 * and reloads (a refused edit counted, the last good version kept), upstream errors by kind and
 * ejections; and the two access-log/header settings: `log.access.sample: 0` writes no access
 * line (metrics still count), `proxy.versionHeader` names the version that served.
 */
describe('config, upstream-failure metrics; sampling 0 and the version header', () => {
  let stable: Backend;
  let candidate: Backend;
  let slow: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;

  beforeAll(async () => {
    stable = await startBackend('stable');
    candidate = await startBackend('candidate');
    // Answers nothing for a while: the upstream's 200 ms response-headers timeout fires first.
    slow = await startBackend('slow', (_req, res) => {
      setTimeout(() => res.end('late'), 1_500).unref();
      return true;
    });
    const dead = await deadPort();
    gateway = await startGatewayProcess({
      config: {
        admin: { listen: '127.0.0.1:0' },
        proxy: { versionHeader: 'X-Graygate-Version' },
        log: { access: { sample: 0 } },
        upstreams: {
          'app-v1': { servers: [stable.url] },
          'app-v2': { servers: [candidate.url] },
          gone: { servers: [`http://127.0.0.1:${dead}`] },
          sluggish: { servers: [slow.url], timeouts: { responseHeadersMs: 200 } },
        },
        services: [
          { name: 'gone', match: { pathPrefix: '/gone' }, stable: 'gone' },
          { name: 'slow', match: { pathPrefix: '/slow' }, stable: 'sluggish' },
          {
            name: 'app',
            match: { pathPrefix: '/' },
            stable: 'app-v1',
            release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals: '1' } }] },
          },
        ],
      },
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(line.port)}`;
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close(), slow?.close()]);
  });

  const scrape = async (): Promise<Sample[]> => parsePrometheusText(await (await request(`${adminUrl}/metrics`)).body.text());
  const send = async (path: string, headers: Record<string, string> = {}) => {
    const response = await request(`${gateway.url}${path}`, { headers });
    await response.body.text();
    return response;
  };

  it('names the serving version in the configured header, and writes no access line at sample 0', async () => {
    expect((await send('/a', { 'x-canary': '1' })).headers['x-graygate-version']).toBe('candidate');
    expect((await send('/b')).headers['x-graygate-version']).toBe('stable');
    const samples = await eventually(async () => {
      const read = await scrape();
      expect(value(read, 'graygate_requests_total', { service: 'app' })).toBe(2);
      return read;
    });
    expect(value(samples, 'graygate_requests_total', { service: 'app', version: 'candidate', status_class: '2xx' })).toBe(1);
    expect(gateway.logs().filter((line) => line.event === 'access')).toEqual([]);
  });

  it('counts connect failures and ejections, and timeouts, per upstream', async () => {
    // More refusals than workers, so one count per refusal could not pass for one per worker.
    const refused = 2 * gateway.workers + 1;
    for (let i = 0; i < refused; i++) expect((await send(`/gone/${i}`)).statusCode).toBe(502);
    expect((await send('/slow')).statusCode).toBe(504);
    const samples = await eventually(async () => {
      const read = await scrape();
      expect(value(read, 'graygate_requests_total', { service: 'slow' })).toBe(1);
      return read;
    });
    // ejectAfterFailures is 1: the first refusal ejects the only server; the next ones still try it
    // (there is no other) and fail within the same ejection, which is one outage, counted once.
    // Each worker keeps its own server health, so it is once per worker that saw the refusals:
    // at least one, never one per failed request.
    expect(value(samples, 'graygate_upstream_errors_total', { upstream: 'gone', kind: 'connect' })).toBe(refused);
    expect(value(samples, 'graygate_upstream_ejections_total', { upstream: 'gone' })).toBeGreaterThanOrEqual(1);
    expect(value(samples, 'graygate_upstream_ejections_total', { upstream: 'gone' })).toBeLessThanOrEqual(gateway.workers);
    expect(value(samples, 'graygate_upstream_errors_total', { upstream: 'sluggish', kind: 'timeout' })).toBe(1);
    expect(value(samples, 'graygate_upstream_errors_total', { upstream: 'sluggish', kind: 'connect' })).toBe(0);
    expect(value(samples, 'graygate_upstream_errors_total', { upstream: 'app-v1' })).toBe(0);
    expect(value(samples, 'graygate_requests_total', { service: 'gone', status_class: '5xx', version: 'stable' })).toBe(refused);
  });

  it('reports the routing version in force, and counts applied and refused reloads', async () => {
    let samples = await scrape();
    expect(value(samples, 'graygate_config_version')).toBe(1);
    expect(value(samples, 'graygate_config_reloads_total', { result: 'applied' })).toBe(1);
    expect(value(samples, 'graygate_config_reloads_total', { result: 'refused' })).toBe(0);

    const good = parse(readFileSync(gateway.configPath, 'utf8')) as { services: { release?: { rules: unknown[] } }[] };
    const broken = structuredClone(good);
    broken.services[2]!.release!.rules = [{ name: 'bad', uidRange: { ranges: [{ from: 10, to: 1 }] } }];
    writeFileSync(gateway.configPath, stringify(broken));
    samples = await eventually(async () => {
      const read = await scrape();
      expect(value(read, 'graygate_config_reloads_total', { result: 'refused' })).toBe(1);
      return read;
    });
    expect(value(samples, 'graygate_config_version')).toBe(1);

    good.services[2]!.release!.rules = [{ name: 'testers', header: { name: 'x-canary', equals: '2' } }];
    writeFileSync(gateway.configPath, stringify(good));
    samples = await eventually(async () => {
      const read = await scrape();
      expect(value(read, 'graygate_config_version')).toBe(2);
      return read;
    });
    expect(value(samples, 'graygate_config_reloads_total', { result: 'applied' })).toBe(2);
    expect(value(samples, 'graygate_config_reloads_total', { result: 'refused' })).toBe(1);
  });
});
