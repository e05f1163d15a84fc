import type http from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { send } from '../dataplane/harness.js';
import { graygate } from '../control/cli-runner.js';

const TOKEN = 'workers-token-0123456789abcdef';

/** With --workers the admin API runs once, in the primary, and its writes reach every worker. */
describe('the admin API of a gateway running two workers', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let env: NodeJS.ProcessEnv;
  const held: http.ServerResponse[] = [];

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([
      startBackend('stable'),
      startBackend('candidate', (req, res) => {
        if (req.url !== '/hold') return false;
        req.resume();
        held.push(res);
        return true;
      }),
    ]);
    gateway = await startGatewayProcess({
      config: {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_WORKERS_TOKEN' }] },
        upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
        services: [{ name: 'app', stable: 'app-v1' }],
      },
      env: { GG_WORKERS_TOKEN: TOKEN, GRAYGATE_WORKERS: '2' },
      readyWithinMs: 50_000,
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    env = { GRAYGATE_ADMIN_URL: `http://127.0.0.1:${String(line.port)}`, GRAYGATE_ADMIN_TOKEN: TOKEN };
  });

  afterAll(async () => {
    for (const res of held.splice(0)) res.destroy();
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('starts one admin listener; a canary and full reach both workers, and drain is reported from their summed counts', async () => {
    expect(gateway.logs().filter((entry) => entry.event === 'admin-listening')).toHaveLength(1);
    const start = await graygate(['release', 'start', 'app', '--candidate', 'app-v2', '--uid-range', '1-5000', '--reason', 'canary'], env);
    expect(start.stderr).toBe('');
    // New connections each time, so the kernel spreads them over both workers.
    const answers = async (userId: string) => new Set(await Promise.all(Array.from({ length: 8 }, () => versionFor(gateway.url, { 'x-user-id': userId, connection: 'close' }))));
    await eventually(async () => expect([...(await answers('42'))]).toEqual(['candidate']), { withinMs: 5_000 });
    expect([...(await answers('9000'))]).toEqual(['stable']);
    const full = await graygate(['release', 'full', 'app', '--reason', 'everyone', '--wait-drained', '--timeout', '20000'], env);
    expect(full.stderr).toBe('');
    expect(full.code).toBe(0);
    expect(full.stdout).toContain('stable of app has drained');
    expect([...(await answers('9000'))]).toEqual(['candidate']);
  }, 300_000);

  it('sums per-upstream counts over the workers: requests held on the candidate through both are in the drain report and status', async () => {
    const [url, token] = [env.GRAYGATE_ADMIN_URL!, env.GRAYGATE_ADMIN_TOKEN!];
    const api = async (path: string) => (await (await request(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } })).body.json()) as any; // eslint-disable-line @typescript-eslint/no-explicit-any
    // One connection each: the primary hands new connections to the workers in turn.
    const replies = Array.from({ length: 4 }, (_, i) => send(gateway.url, { path: '/hold', headers: { 'x-user-id': String(9000 + i), connection: 'close' } }));
    await eventually(() => expect(held.length).toBe(4), { withinMs: 5_000 });
    const report = await eventually(
      async () => {
        const drain = await api('/v1/services/app/release/drain');
        expect(drain).toMatchObject({ scope: 'process', gateways: 1, state: 'full', upstreams: { 'app-v2': { inFlightRequests: 4 } }, stable: { upstream: 'app-v1', inFlightRequests: 0 } });
        return drain;
      },
      { withinMs: 3_000 },
    );
    expect(report.upstreams['app-v2'].openConnections).toBeGreaterThanOrEqual(4);
    expect((await api('/v1/status')).dataPlane.upstreams['app-v2'].inFlightRequests).toBe(4);
    for (const res of held.splice(0)) {
      res.writeHead(200, { 'content-length': '4' });
      res.end('done');
    }
    expect((await Promise.all(replies)).map((reply) => reply.status)).toEqual([200, 200, 200, 200]);
    await eventually(async () => expect((await api('/v1/services/app/release/drain')).upstreams['app-v2'].inFlightRequests).toBe(0), { withinMs: 3_000 });
  }, 300_000);
});
