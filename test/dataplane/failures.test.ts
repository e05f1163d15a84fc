import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { canaryDocument, send, startPlane } from './harness.js';

let healthy: Backend;
let slow: Backend;
let dead: string;
const held: http.ServerResponse[] = [];
let flakyCount = 0;

beforeAll(async () => {
  healthy = await startBackend('healthy');
  slow = await startBackend('slow', (req, res) => {
    req.resume();
    if (req.url === '/never') {
      held.push(res);
      return true;
    }
    if (req.url === '/stall-body') {
      res.writeHead(200, { 'content-length': '100' });
      res.write('only a part');
      held.push(res);
      return true;
    }
    if (req.url?.startsWith('/flaky')) {
      // Fails every other request the way a stale pooled socket does: closed before answering.
      flakyCount++;
      if (flakyCount % 2 === 1) {
        req.socket.destroy();
        return true;
      }
      return false;
    }
    if (req.url === '/reset') {
      req.socket.destroy();
      return true;
    }
    return false;
  });
  dead = `http://127.0.0.1:${await deadPort()}`;
});

afterAll(async () => {
  for (const res of held) res.destroy();
  await Promise.all([healthy?.close(), slow?.close()]);
});

describe('upstream failures', () => {
  it('answers 502 GG_UPSTREAM_CONNECT when the only server refuses connections', async () => {
    const gateway = await startPlane(canaryDocument([dead], [dead]));
    try {
      const reply = await send(gateway.url, { path: '/x' });
      expect(reply.status).toBe(502);
      expect(reply.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_CONNECT' } });
      expect(reply.headers['content-type']).toMatch(/application\/json/);
    } finally {
      await gateway.close();
    }
  });

  it('answers 504 GG_UPSTREAM_TIMEOUT on a slow upstream while other requests are served', async () => {
    const gateway = await startPlane(canaryDocument([slow.url], [healthy.url], { timeouts: { responseHeadersMs: 300 } }));
    try {
      const started = Date.now();
      const pending = send(gateway.url, { path: '/never' });
      // Another connection, to another version, while the first one waits.
      const other = await send(gateway.url, { path: '/fine', headers: { 'x-canary': '1' } });
      expect(other.status).toBe(200);
      expect(other.headers['x-backend']).toBe('healthy');
      const reply = await pending;
      expect(reply.status).toBe(504);
      expect(reply.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_TIMEOUT' } });
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      // The same upstream still works for the next request.
      expect((await send(gateway.url, { path: '/ok' })).status).toBe(200);
    } finally {
      await gateway.close();
    }
  });

  it('cuts the client connection when the body stalls after the headers were sent', async () => {
    const gateway = await startPlane(canaryDocument([slow.url], [healthy.url], { timeouts: { idleMs: 300 } }));
    try {
      const outcome = await new Promise<string>((resolve) => {
        const req = http.get(`${gateway.url}/stall-body`, { agent: false }, (res) => {
          expect(res.statusCode).toBe(200);
          res.on('data', () => undefined);
          res.on('end', () => resolve('ended'));
          res.on('error', () => resolve('error'));
          res.on('aborted', () => resolve('aborted'));
        });
        req.on('error', () => resolve('error'));
      });
      expect(outcome).not.toBe('ended');
      expect((await send(gateway.url, { path: '/ok' })).status).toBe(200);
    } finally {
      await gateway.close();
    }
  });

  it('answers 502 GG_UPSTREAM_RESET when the upstream drops the connection', async () => {
    const gateway = await startPlane(canaryDocument([slow.url], [healthy.url]));
    try {
      const reply = await send(gateway.url, { path: '/reset' });
      expect(reply.status).toBe(502);
      expect(reply.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_RESET' } });
    } finally {
      await gateway.close();
    }
  });
});

describe('a connection reset before the response', () => {
  it('is retried once for a body-less idempotent request, never for a POST', async () => {
    const gateway = await startPlane(canaryDocument([slow.url], [healthy.url]));
    try {
      flakyCount = 0;
      const get = await send(gateway.url, { path: '/flaky-get' });
      expect(get.status).toBe(200);
      expect(flakyCount).toBe(2);
      flakyCount = 0;
      const post = await send(gateway.url, { method: 'POST', path: '/flaky-post', body: 'once' });
      expect(post.status).toBe(502);
      expect(post.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_RESET' } });
      expect(flakyCount).toBe(1);
    } finally {
      await gateway.close();
    }
  });
});

describe('several servers', () => {
  it('retries an idempotent request on the next server and ejects the dead one', async () => {
    const gateway = await startPlane(canaryDocument([dead, healthy.url], [healthy.url], { health: { ejectAfterFailures: 1, ejectForMs: 60_000 } }));
    try {
      // Round robin starts at the dead server: the GET is retried on the live one.
      const first = await send(gateway.url, { path: '/retry' });
      expect(first.status).toBe(200);
      expect(first.headers['x-backend']).toBe('healthy');
      // A POST with a body is never retried; it succeeds only because the dead server is ejected.
      for (let i = 0; i < 6; i++) {
        const reply = await send(gateway.url, { method: 'POST', path: `/post-${i}`, body: 'payload' });
        expect(reply.status, `POST ${i}`).toBe(200);
      }
    } finally {
      await gateway.close();
    }
  });

  it('does not retry a request with a body: a POST to a refusing server is a 502', async () => {
    const gateway = await startPlane(canaryDocument([dead, healthy.url], [healthy.url], { health: { ejectAfterFailures: 3, ejectForMs: 60_000 } }));
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 2; i++) statuses.push((await send(gateway.url, { method: 'POST', path: '/p', body: 'x' })).status);
      expect(statuses.sort()).toEqual([200, 502]);
    } finally {
      await gateway.close();
    }
  });

  it('sends candidate traffic to stable when the candidate cannot connect', async () => {
    const gateway = await startPlane(canaryDocument([healthy.url], [dead], { health: { ejectAfterFailures: 1, ejectForMs: 60_000 } }));
    try {
      const get = await send(gateway.url, { path: '/c', headers: { 'x-canary': '1' } });
      expect(get.status).toBe(200);
      expect(get.headers['x-backend']).toBe('healthy');
      // The candidate is now ejected: even a POST (never retried) goes to stable up front.
      const post = await send(gateway.url, { method: 'POST', path: '/c', headers: { 'x-canary': '1' }, body: 'b' });
      expect(post.status).toBe(200);
      expect(post.headers['x-backend']).toBe('healthy');
    } finally {
      await gateway.close();
    }
  });

  it('tries an ejected server anyway when every server is ejected', async () => {
    const gateway = await startPlane(canaryDocument([dead], [dead], { health: { ejectAfterFailures: 1, ejectForMs: 60_000 } }));
    try {
      expect((await send(gateway.url)).status).toBe(502);
      // Still a connect attempt (502 CONNECT), not a refusal without trying.
      const again = await send(gateway.url);
      expect(again.status).toBe(502);
      expect(again.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_CONNECT' } });
    } finally {
      await gateway.close();
    }
  });
});
