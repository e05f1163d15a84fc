import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { DRAIN_IDLE_GRACE_MS } from '../../src/dataplane/shutdown.js';
import { canaryDocument, send, startPlane } from './harness.js';

let backend: Backend;
const held: http.ServerResponse[] = [];

beforeAll(async () => {
  backend = await startBackend('stable', (req, res) => {
    if (req.url === '/hold') {
      req.resume();
      held.push(res);
      return true;
    }
    return false;
  });
});

afterAll(async () => {
  for (const res of held) res.destroy();
  await backend?.close();
});

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

describe('a rule change', () => {
  it('lets a request in flight on a server no longer named finish, then closes that pool', async () => {
    const next = await startBackend('next');
    const gateway = await startPlane(canaryDocument([backend.url], [backend.url]));
    try {
      const heldBefore = held.length;
      const inFlight = send(gateway.url, { path: '/hold' });
      await eventually(() => expect(held.length).toBe(heldBefore + 1));
      gateway.setDocument(canaryDocument([next.url], [next.url]));
      expect((await send(gateway.url, { path: '/now' })).headers['x-backend']).toBe('next');
      held[heldBefore]!.writeHead(200, { 'content-length': '8' });
      held[heldBefore]!.end('finished');
      const reply = await inFlight;
      expect(reply.status).toBe(200);
      expect(reply.body.toString()).toBe('finished');
      const connections = () => new Promise<number>((resolve) => backend.server.getConnections((_e, n) => resolve(n)));
      await eventually(async () => expect(await connections()).toBe(0), { withinMs: 2_000 });
    } finally {
      await gateway.close();
      await next.close();
    }
  });
});

describe('drain', () => {
  it('lets in-flight requests finish, refuses new connections and closes idle keep-alive sockets after the idle grace', async () => {
    // Keep-alive far longer than the test: an idle socket that closes was closed by the drain.
    const gateway = await startPlane(canaryDocument([backend.url], [backend.url]), { proxy: { keepAliveTimeoutMs: 600_000 } });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      // An idle keep-alive connection.
      const idleSocketClosed = new Promise<void>((resolve, reject) => {
        const req = http.get(`${gateway.url}/warm`, { agent }, (res) => {
          res.resume();
          res.on('end', () => undefined);
        });
        req.on('socket', (socket) => socket.once('close', () => resolve()));
        req.on('error', reject);
      });
      // A request in flight.
      const heldBefore = held.length;
      const inFlight = send(gateway.url, { path: '/hold' });
      await eventually(() => expect(held.length).toBe(heldBefore + 1));
      // Stable and candidate name the same server here, so they share its pool: both see its 2 sockets.
      expect(gateway.plane.stats()).toEqual({
        openConnections: 2,
        inFlightRequests: 1,
        upstreams: { stable: { inFlightRequests: 1, openConnections: 2 }, candidate: { inFlightRequests: 0, openConnections: 2 } },
      });

      // A grace far longer than any wait below: the drain must end when the last request does.
      const started = Date.now();
      let drainEnded = false;
      const drained = gateway.plane.drain(600_000).then(() => (drainEnded = true));
      await eventually(async () => expect(await connectRefused(gateway.port)).toBe(true));
      await idleSocketClosed;
      // Closed by the drain, but not at once: a request its client may already be sending gets
      // the idle grace to arrive (and be answered with `Connection: close`).
      expect(Date.now() - started).toBeGreaterThanOrEqual(DRAIN_IDLE_GRACE_MS - 5);

      // The in-flight request completes, told to close its connection.
      held[heldBefore]!.writeHead(200, { 'content-length': '4' });
      held[heldBefore]!.end('done');
      const reply = await inFlight;
      expect(reply.status).toBe(200);
      expect(reply.body.toString()).toBe('done');
      expect(reply.headers.connection).toBe('close');
      await eventually(() => expect(drainEnded).toBe(true));
      await drained;
      expect(gateway.plane.stats()).toEqual({
        openConnections: 0,
        inFlightRequests: 0,
        upstreams: { stable: { inFlightRequests: 0, openConnections: 0 }, candidate: { inFlightRequests: 0, openConnections: 0 } },
      });
    } finally {
      agent.destroy();
      await gateway.close();
    }
  });

  it('destroys what is still open at the grace cap', async () => {
    const gateway = await startPlane(canaryDocument([backend.url], [backend.url]));
    const heldBefore = held.length;
    const outcome = send(gateway.url, { path: '/hold' }).then(
      () => 'answered',
      () => 'cut',
    );
    await eventually(() => expect(held.length).toBe(heldBefore + 1));
    const started = Date.now();
    await gateway.plane.drain(300);
    const took = Date.now() - started;
    // Not before the grace (the request is held until the end of the test, so only the cap ends it).
    expect(took).toBeGreaterThanOrEqual(250);
    expect(await outcome).toBe('cut');
    expect(gateway.plane.stats().openConnections).toBe(0);
  });
});
