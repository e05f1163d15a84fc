import type http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { canaryDocument, send, startPlane, type PlaneUnderTest } from './harness.js';

// Per-upstream load of the Node data plane (stats().upstreams): what the drain report after
// `full` reads to know that stable has drained. Real backends that hold requests open.

/** A backend that holds `/hold` requests until `releaseAll`, and accepts upgrades and keeps them open. */
async function holdingBackend(name: string): Promise<Backend & { held: http.ServerResponse[]; releaseAll(): void }> {
  const held: http.ServerResponse[] = [];
  const backend = await startBackend(name, (req, res) => {
    if (req.url !== '/hold') return false;
    req.resume();
    held.push(res);
    return true;
  });
  backend.server.on('upgrade', (_req, socket: net.Socket) => {
    socket.on('error', () => socket.destroy());
    socket.on('end', () => socket.end());
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n');
  });
  return Object.assign(backend, {
    held,
    releaseAll() {
      for (const res of held.splice(0)) {
        res.writeHead(200, { 'content-length': '4', 'x-backend': name });
        res.end('done');
      }
    },
  });
}

/** Opens an Upgrade through the gateway; resolves with the socket once the 101 arrived. */
function openTunnel(port: number, headers = ''): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.includes('\r\n\r\n')) {
        if (text.startsWith('HTTP/1.1 101')) resolve(socket);
        else reject(new Error(`no 101: ${text.slice(0, 200)}`));
      }
    });
    socket.write(`GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n${headers}\r\n`);
  });
}

let stable: Awaited<ReturnType<typeof holdingBackend>>;
let candidate: Awaited<ReturnType<typeof holdingBackend>>;

beforeAll(async () => {
  [stable, candidate] = await Promise.all([holdingBackend('stable'), holdingBackend('candidate')]);
});

afterAll(async () => {
  stable?.releaseAll();
  candidate?.releaseAll();
  await Promise.all([stable?.close(), candidate?.close()]);
});

const upstreamsOf = (gateway: PlaneUnderTest) => gateway.plane.stats().upstreams;

describe('per-upstream load (Node data plane)', () => {
  it('counts requests held in flight on stable and on candidate apart, with the pools\' connected sockets, and releases them when they finish', async () => {
    const gateway = await startPlane(canaryDocument([stable.url], [candidate.url]));
    try {
      expect(upstreamsOf(gateway)).toEqual({ stable: { inFlightRequests: 0, openConnections: 0 }, candidate: { inFlightRequests: 0, openConnections: 0 } });
      const replies = [
        send(gateway.url, { path: '/hold' }),
        send(gateway.url, { path: '/hold' }),
        send(gateway.url, { path: '/hold', headers: { 'x-canary': '1' } }),
      ];
      await eventually(() => expect([stable.held.length, candidate.held.length]).toEqual([2, 1]));
      expect(upstreamsOf(gateway)).toEqual({ stable: { inFlightRequests: 2, openConnections: 2 }, candidate: { inFlightRequests: 1, openConnections: 1 } });
      expect(gateway.plane.stats().inFlightRequests).toBe(3);

      stable.releaseAll();
      candidate.releaseAll();
      const answered = await Promise.all(replies);
      expect(answered.map((reply) => reply.headers['x-backend'])).toEqual(['stable', 'stable', 'candidate']);
      // Nothing in flight; the keep-alive sockets stay open in the pools and are still counted.
      await eventually(() => expect(upstreamsOf(gateway)).toEqual({ stable: { inFlightRequests: 0, openConnections: 2 }, candidate: { inFlightRequests: 0, openConnections: 1 } }));
    } finally {
      stable.releaseAll();
      candidate.releaseAll();
      await gateway.close();
    }
  });

  it('moves the count to stable when the candidate cannot connect and the request falls back', async () => {
    const dead = `http://127.0.0.1:${await deadPort()}`;
    const gateway = await startPlane(canaryDocument([stable.url], [dead]));
    try {
      const reply = send(gateway.url, { path: '/hold', headers: { 'x-canary': '1' } });
      await eventually(() => expect(stable.held.length).toBe(1));
      expect(upstreamsOf(gateway)).toMatchObject({ stable: { inFlightRequests: 1 }, candidate: { inFlightRequests: 0, openConnections: 0 } });
      stable.releaseAll();
      expect((await reply).headers['x-backend']).toBe('stable');
      await eventually(() => expect(upstreamsOf(gateway).stable!.inFlightRequests).toBe(0));
    } finally {
      stable.releaseAll();
      await gateway.close();
    }
  });

  it('counts an open WebSocket/Upgrade tunnel in flight to its upstream (and as a connection) until it closes', async () => {
    const gateway = await startPlane(canaryDocument([stable.url], [candidate.url]));
    try {
      const tunnel = await openTunnel(gateway.port);
      await eventually(() => expect(upstreamsOf(gateway).stable).toEqual({ inFlightRequests: 1, openConnections: 1 }));
      expect(upstreamsOf(gateway).candidate!.inFlightRequests).toBe(0);
      const toCandidate = await openTunnel(gateway.port, 'x-canary: 1\r\n');
      await eventually(() => expect(upstreamsOf(gateway).candidate).toEqual({ inFlightRequests: 1, openConnections: 1 }));
      tunnel.destroy();
      toCandidate.end();
      await eventually(() => expect(upstreamsOf(gateway)).toEqual({ stable: { inFlightRequests: 0, openConnections: 0 }, candidate: { inFlightRequests: 0, openConnections: 0 } }));
    } finally {
      await gateway.close();
    }
  });

  it('keeps counting a request to an upstream that a newer snapshot no longer names, until it ends, then forgets the name', async () => {
    const gateway = await startPlane(canaryDocument([stable.url], [candidate.url]));
    try {
      const reply = send(gateway.url, { path: '/hold', headers: { 'x-canary': '1' } });
      await eventually(() => expect(candidate.held.length).toBe(1));
      // The candidate upstream leaves the document: the request in flight to it is still counted.
      gateway.setDocument({ upstreams: { stable: { servers: [stable.url] } }, services: [{ name: 'web', stable: 'stable' }] });
      expect(upstreamsOf(gateway).candidate).toEqual({ inFlightRequests: 1, openConnections: 1 });
      candidate.releaseAll();
      expect((await reply).status).toBe(200);
      await eventually(() => expect(Object.keys(upstreamsOf(gateway))).toEqual(['stable']));
    } finally {
      candidate.releaseAll();
      await gateway.close();
    }
  });
});
