import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { serveWebSockets } from '../helpers/ws-backend.js';
import { parsePrometheusText, value, type Sample } from './prometheus-text.js';

/**
 * The failure metrics tell what happened, exactly, through the real process on each runtime:
 * every request (and upgrade) the rules sent to a candidate that stable served is one
 * `graygate_fallback_total`, by reason; an ejection is counted when a server is ejected, once,
 * however many requests were failing on it at the time; an upgrade that cannot connect counts
 * as an upstream error and ejection like a request does, and is logged.
 */

const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');
const runtimes: ['node' | 'bun', string][] = [
  ['node', process.execPath],
  ['bun', bun],
];

const HANDSHAKE = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';

/** Sends a WebSocket handshake and resolves with the response head (the socket is then closed). */
function upgradeHead(port: number, pathAndQuery: string, extraHeaders = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end >= 0) {
        socket.destroy();
        resolve(text.slice(0, end));
      }
    });
    socket.on('close', () => resolve(text));
    socket.write(`GET ${pathAndQuery} HTTP/1.1\r\nHost: a\r\n${HANDSHAKE}${extraHeaders}\r\n`);
  });
}

/** `count` ports nothing listens on, all different (health is kept per origin). */
async function deadPorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await deadPort());
  return [...ports];
}

describe.each(runtimes)('failure metrics on %s', (_runtime, binary) => {
  let stable: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;

  beforeAll(async () => {
    stable = await startBackend('stable');
    serveWebSockets(stable);
    const [candidate, pairA, pairB, wsGone] = (await deadPorts(4)).map((port) => `http://127.0.0.1:${port}`);
    const longEjection = { ejectForMs: 600_000 };
    gateway = await startGatewayProcess({
      runtime: binary,
      // One process: the ejection counts asserted here are exact, and each worker keeps its own
      // server health (the suite below is the one about workers).
      args: ['--workers', '1'],
      // A busy shared box can take long to start a process; starting is not what is tested here.
      readyWithinMs: 60_000,
      config: {
        admin: { listen: '127.0.0.1:0' },
        log: { level: 'info', access: { sample: 0 } },
        upstreams: {
          stable: { servers: [stable.url] },
          candidate: { servers: [candidate], health: { ejectAfterFailures: 3, ...longEjection } },
          pair: { servers: [pairA, pairB], health: { ejectAfterFailures: 2, ...longEjection } },
          wsgone: { servers: [wsGone], health: { ejectAfterFailures: 1, ...longEjection } },
        },
        services: [
          { name: 'pair', match: { pathPrefix: '/pair' }, stable: 'pair' },
          { name: 'wsgone', match: { pathPrefix: '/ws-gone' }, stable: 'wsgone' },
          { name: 'app', match: { pathPrefix: '/' }, stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ header: { name: 'x-canary', equals: '1' } }] } },
        ],
      },
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(line.port)}`;
  });

  afterAll(async () => {
    await gateway?.stop('SIGKILL');
    await stable?.close();
  });

  const scrape = async (): Promise<Sample[]> => parsePrometheusText(await (await request(`${adminUrl}/metrics`)).body.text());
  const get = async (pathAndQuery: string, headers: Record<string, string> = {}) => {
    const response = await request(`${gateway.url}${pathAndQuery}`, { headers });
    return { status: response.statusCode, body: (await response.body.json()) as { version?: string; error?: { code: string } } };
  };

  it('counts every request and upgrade the rules sent to a dead candidate as one fallback, by reason', async () => {
    // ejectAfterFailures 3: the first three find the candidate refusing and move to stable; the
    // third ejects it; from then on the candidate is skipped before any attempt.
    for (let i = 0; i < 5; i++) expect((await get(`/a/${i}`, { 'x-canary': '1' })).body.version).toBe('stable');
    // The rules' own stable decisions are no fallback.
    for (let i = 0; i < 2; i++) expect((await get(`/b/${i}`)).body.version).toBe('stable');
    expect(await upgradeHead(gateway.port, '/chat', 'x-canary: 1\r\n')).toMatch(/^HTTP\/1\.1 101 /);
    const samples = await eventually(async () => {
      const read = await scrape();
      expect(value(read, 'graygate_requests_total', { service: 'app' })).toBe(7);
      return read;
    });
    const fallback = { service: 'app', from: 'candidate', to: 'stable' };
    expect(value(samples, 'graygate_fallback_total', { ...fallback, reason: 'connect_failure' })).toBe(3);
    expect(value(samples, 'graygate_fallback_total', { ...fallback, reason: 'unhealthy' })).toBe(3);
    expect(value(samples, 'graygate_fallback_total')).toBe(6);
    expect(value(samples, 'graygate_requests_total', { service: 'app', version: 'candidate' })).toBe(0);
    expect(value(samples, 'graygate_upstream_errors_total', { upstream: 'candidate', kind: 'connect' })).toBe(3);
    expect(value(samples, 'graygate_upstream_ejections_total', { upstream: 'candidate' })).toBe(1);
  });

  it('counts each ejection once while concurrent requests keep failing on the ejected servers', async () => {
    const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => get(`/pair/${i}`)));
    for (const reply of replies) {
      expect(reply.status).toBe(502);
      expect(reply.body.error?.code).toBe('GG_UPSTREAM_CONNECT');
    }
    const samples = await eventually(async () => {
      const read = await scrape();
      expect(value(read, 'graygate_requests_total', { service: 'pair' })).toBe(20);
      return read;
    });
    // Each request tried both servers (a GET goes to the next server after a refusal): 40
    // refusals, two servers, two ejections.
    expect(value(samples, 'graygate_upstream_errors_total', { upstream: 'pair', kind: 'connect' })).toBe(40);
    expect(value(samples, 'graygate_upstream_ejections_total', { upstream: 'pair' })).toBe(2);
  });

  it('counts an upgrade that cannot connect as an upstream error and an ejection, and logs it', async () => {
    const since = gateway.logs().length;
    expect(await upgradeHead(gateway.port, '/ws-gone/chat')).toMatch(/^HTTP\/1\.1 502 /);
    const samples = await eventually(async () => {
      const read = await scrape();
      expect(value(read, 'graygate_upstream_errors_total', { upstream: 'wsgone', kind: 'connect' })).toBe(1);
      return read;
    });
    expect(value(samples, 'graygate_upstream_ejections_total', { upstream: 'wsgone' })).toBe(1);
    const logged = await gateway.waitForLog((line) => line.upstream === 'wsgone' && line.code === 'GG_UPSTREAM_CONNECT', { since });
    expect(logged.level).toBe(40);
  });
});

describe('the fallback counter under --workers', () => {
  let stable: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;

  beforeAll(async () => {
    stable = await startBackend('stable');
    const [candidate] = await deadPorts(1);
    gateway = await startGatewayProcess({
      args: ['--workers', '2'],
      readyWithinMs: 60_000,
      config: {
        admin: { listen: '127.0.0.1:0' },
        log: { access: { sample: 0 } },
        upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [`http://127.0.0.1:${candidate}`] } },
        services: [{ name: 'app', stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ header: { name: 'x-canary', equals: '1' } }] } }],
      },
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(line.port)}`;
  });

  afterAll(async () => {
    await gateway?.stop('SIGKILL');
    await stable?.close();
  });

  it('sums the workers: one fallback per request, whichever worker served it', async () => {
    for (let i = 0; i < 12; i++) {
      // A fresh connection each time, so the kernel spreads the requests over the workers.
      const response = await request(`${gateway.url}/x/${i}`, { headers: { 'x-canary': '1', connection: 'close' } });
      expect(((await response.body.json()) as { version: string }).version).toBe('stable');
    }
    await eventually(async () => {
      const samples = parsePrometheusText(await (await request(`${adminUrl}/metrics`)).body.text());
      expect(value(samples, 'graygate_requests_total', { service: 'app' })).toBe(12);
      expect(value(samples, 'graygate_fallback_total', { service: 'app', from: 'candidate', to: 'stable' })).toBe(12);
    });
  });
});
