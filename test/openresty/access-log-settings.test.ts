import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { send, startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';

// The access log settings mean on OpenResty what they mean on Node: `log.access.sample` thins the
// lines, and lines whose `log.access.level` is below `log.level` are not written at all. nginx
// writes the lines itself (buffered, flushed at least once a second), so the tests count what
// reached the file once it stops growing.

const REQUESTS = 400;

function config(stable: Backend, candidate: Backend, log: Record<string, unknown>) {
  return {
    log: { format: 'json', ...log },
    admin: { listen: '127.0.0.1:0' },
    upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
    services: [{ name: 'shop', stable: 'shop-v1', release: { candidate: 'shop-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals: '1' } }] } }],
  };
}

/** Sends REQUESTS requests, and waits until the admin API's /metrics has counted them all. */
async function sendAndCount(gateway: OpenRestyGateway): Promise<void> {
  for (let i = 0; i < REQUESTS; i++) expect((await send(gateway.url, { path: `/item/${String(i)}` })).status).toBe(200);
  const admin = gateway.logs().find((line) => line.event === 'admin-listening');
  await eventually(async () => {
    const text = (await send(`http://127.0.0.1:${String(admin?.port)}`, { path: '/metrics' })).text;
    expect(text).toContain(`graygate_requests_total{service="shop",version="stable",status_class="2xx",upstream="shop-v1"} ${String(REQUESTS)}`);
  });
}

/** The access lines in `file` once two reads, 1.5 s apart (past nginx's 1 s flush), agree. */
async function settledLines(file: string): Promise<number> {
  const count = () => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((line) => line.includes('"event":"access"')).length : 0);
  let previous = -1;
  return eventually(
    () => {
      const now = count();
      const settled = now === previous;
      previous = now;
      expect(settled).toBe(true);
      return now;
    },
    { everyMs: 1_500 },
  );
}

describe('the OpenResty access log under log.access.sample', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: OpenRestyGateway;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    gateway = await startOpenRestyGateway({ config: config(stable, candidate, { level: 'info', access: { sample: 0.5 } }), workers: 1 });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('writes some of the requests, not all (0.5: the chance of none or all of 400 is 2^-399)', async () => {
    await sendAndCount(gateway);
    const started = gateway.logs().find((line) => line.event === 'nginx-started');
    expect(typeof started?.accessLog).toBe('string');
    const lines = await settledLines(String(started?.accessLog));
    expect(lines).toBeGreaterThan(0);
    expect(lines).toBeLessThan(REQUESTS);
  });
});

describe('the OpenResty access log below log.level', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: OpenRestyGateway;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    // The access lines at debug, below the log's info.
    gateway = await startOpenRestyGateway({ config: config(stable, candidate, { level: 'info', access: { level: 'debug' } }), workers: 1 });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('writes no access line, and the start-up line names no access log', async () => {
    await sendAndCount(gateway);
    const started = gateway.logs().find((line) => line.event === 'nginx-started');
    expect(started).toBeDefined();
    expect(started?.accessLog).toBeUndefined();
    expect(await settledLines(path.join(String(started?.prefix), 'logs', 'access.log'))).toBe(0);
  });
});
