import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { send } from './harness.js';

// Per-upstream load of the Bun data plane, read through the admin API of the real gateway process
// under Bun. Bun's fetch exposes no pool: per upstream, open connections are the requests in
// flight to it (docs/runtimes.md "Bun"), so idle keep-alive sockets are not seen; pinned here.
const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');
const TOKEN = 'bun-load-token-0123456789abcdef';

describe('per-upstream load on the Bun data plane', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;
  const held: http.ServerResponse[] = [];

  // Holds `…/hold` before the response head: Bun counts a request in flight until the head.
  const holding = (name: string) =>
    startBackend(name, (req, res) => {
      if (!req.url?.endsWith('/hold')) return false;
      req.resume();
      res.setHeader('x-backend', name);
      held.push(res);
      return true;
    });
  const releaseAll = () => {
    for (const res of held.splice(0)) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '4' });
      res.end('done');
    }
  };
  const upstreams = async () => {
    const response = await request(`${adminUrl}/v1/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
    return ((await response.body.json()) as { dataPlane: { upstreams: Record<string, { inFlightRequests: number; openConnections: number }> } }).dataPlane.upstreams;
  };

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([holding('stable'), holding('candidate')]);
    const dead = `http://127.0.0.1:${await deadPort()}`;
    gateway = await startGatewayProcess({
      config: {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', token: TOKEN }] },
        upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] }, broken: { servers: [dead] } },
        services: [
          { name: 'web', stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ header: { name: 'x-canary', equals: '1' } }] } },
          { name: 'fallback', stable: 'stable', match: { pathPrefix: '/fb' }, release: { candidate: 'broken', state: 'canary', rules: [{ header: { name: 'x-canary', equals: '1' } }] } },
        ],
      },
      args: ['--workers', '1'],
      runtime: bun,
    });
    const listening = await gateway.waitForLog((line) => line.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(listening.port)}`;
  });

  afterAll(async () => {
    releaseAll();
    await gateway?.stop('SIGKILL');
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('counts requests in flight per upstream until the response head; open connections are those requests (no pool is visible)', async () => {
    expect((await gateway.waitForLog((line) => line.event === 'listening')).runtime).toBe('bun');
    const idle = { inFlightRequests: 0, openConnections: 0 };
    expect(await upstreams()).toEqual({ stable: idle, candidate: idle, broken: idle });
    const replies = [send(gateway.url, { path: '/hold' }), send(gateway.url, { path: '/hold' }), send(gateway.url, { path: '/hold', headers: { 'x-canary': '1' } })];
    await eventually(() => expect(held.length).toBe(3), { withinMs: 5_000 });
    await eventually(async () => expect(await upstreams()).toEqual({ stable: { inFlightRequests: 2, openConnections: 2 }, candidate: { inFlightRequests: 1, openConnections: 1 }, broken: idle }));
    releaseAll();
    const answered = await Promise.all(replies);
    expect(answered.map((reply) => reply.headers['x-backend'])).toEqual(['stable', 'stable', 'candidate']);
    // Unlike Node (the pools' connected sockets), Bun's idle keep-alive sockets are not seen.
    await eventually(async () => expect(await upstreams()).toEqual({ stable: idle, candidate: idle, broken: idle }));
  });

  it('moves the count to stable when the candidate cannot connect and the request falls back', async () => {
    const reply = send(gateway.url, { path: '/fb/hold', headers: { 'x-canary': '1' } });
    await eventually(() => expect(held.length).toBe(1), { withinMs: 5_000 });
    await eventually(async () => expect(await upstreams()).toMatchObject({ stable: { inFlightRequests: 1, openConnections: 1 }, broken: { inFlightRequests: 0, openConnections: 0 } }));
    releaseAll();
    expect((await reply).headers['x-backend']).toBe('stable');
    await eventually(async () => expect((await upstreams()).stable).toEqual({ inFlightRequests: 0, openConnections: 0 }));
  });
});
