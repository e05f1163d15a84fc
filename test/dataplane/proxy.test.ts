import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { canaryDocument, rawExchange, send, startPlane, type PlaneUnderTest } from './harness.js';

let stable: Backend;
let candidate: Backend;
let gateway: PlaneUnderTest;
let trustedGateway: PlaneUnderTest;

beforeAll(async () => {
  [stable, candidate] = await Promise.all([
    startBackend('stable', (req, res) => {
      if (req.url === '/hop') {
        req.resume();
        res.writeHead(200, {
          connection: 'x-secret, keep-alive',
          'x-secret': 'hop-only',
          'keep-alive': 'timeout=5',
          'proxy-authenticate': 'Basic',
          'x-kept': 'yes',
          'content-length': '2',
        });
        res.end('ok');
        return true;
      }
      if (req.url === '/chunked') {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
        res.write('first,');
        res.write('second');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
        return true;
      }
      if (req.url === '/echo') {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          const body = Buffer.concat(chunks);
          res.writeHead(200, { 'x-seen-te': String(req.headers['transfer-encoding']), 'x-seen-length': String(req.headers['content-length']) });
          res.end(body);
        });
        return true;
      }
      if (req.url === '/early-hints') {
        req.resume();
        res.writeEarlyHints({ link: '</style.css>; rel=preload' });
        res.end('after hints');
        return true;
      }
      if (req.url === '/upstream-close') {
        req.resume();
        res.writeHead(200, { connection: 'close', 'content-length': '1' });
        res.end('c');
        return true;
      }
      if (req.url === '/port') {
        req.resume();
        res.end(String(req.socket.remotePort));
        return true;
      }
      if (req.url === '/vary') {
        req.resume();
        res.writeHead(200, { vary: 'accept-encoding' });
        res.end('v');
        return true;
      }
      return false;
    }),
    startBackend('candidate'),
  ]);
  gateway = await startPlane(canaryDocument([stable.url], [candidate.url]));
  trustedGateway = await startPlane(canaryDocument([stable.url], [candidate.url]), { trustedProxies: ['127.0.0.0/8'] });
});

afterAll(async () => {
  await Promise.all([gateway?.close(), trustedGateway?.close()]);
  await Promise.all([stable?.close(), candidate?.close()]);
});

describe('routing', () => {
  it('sends each request to the version decide() returns', async () => {
    const plain = await send(gateway.url, { path: '/a?x=1' });
    expect(plain.status).toBe(200);
    expect(plain.headers['x-backend']).toBe('stable');
    expect(plain.json().url).toBe('/a?x=1');
    const canary = await send(gateway.url, { path: '/a', headers: { 'x-canary': '1' } });
    expect(canary.headers['x-backend']).toBe('candidate');
    const other = await send(gateway.url, { path: '/a', headers: { 'x-canary': '2' } });
    expect(other.headers['x-backend']).toBe('stable');
  });

  it('adds Vary when the version depended on the caller, merged with the upstream one', async () => {
    const reply = await send(gateway.url, { path: '/vary' });
    expect(reply.headers.vary).toBe('accept-encoding, x-canary');
    const plain = await send(gateway.url, { path: '/a' });
    expect(plain.headers.vary).toBe('x-canary');
  });

  it('answers 404 GG_NO_SERVICE when no service matches', async () => {
    const only = await startPlane({
      upstreams: { stable: { servers: [stable.url] } },
      services: [{ name: 'api', match: { pathPrefix: '/api' }, stable: 'stable' }],
    });
    try {
      const reply = await send(only.url, { path: '/elsewhere' });
      expect(reply.status).toBe(404);
      expect(reply.json()).toMatchObject({ error: { code: 'GG_NO_SERVICE' } });
      expect((await send(only.url, { path: '/api/x' })).headers['x-backend']).toBe('stable');
    } finally {
      await only.close();
    }
  });

  it('keeps upstream keep-alive connections across a rule change and closes pools no snapshot uses', async () => {
    const other = await startBackend('other');
    const live = await startPlane(canaryDocument([stable.url], [other.url]));
    try {
      const portBefore = (await send(live.url, { path: '/port' })).body.toString();
      expect((await send(live.url, { path: '/x', headers: { 'x-canary': '1' } })).headers['x-backend']).toBe('other');
      const connections = () => new Promise<number>((resolve) => other.server.getConnections((_e, n) => resolve(n)));
      expect(await connections()).toBe(1);
      // Same servers, other rules; the candidate upstream now points elsewhere.
      live.setDocument({
        upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] } },
        services: [{ name: 'web', stable: 'stable', release: { candidate: 'candidate', rules: [{ header: { name: 'x-beta', present: true } }] } }],
      });
      expect((await send(live.url, { path: '/port' })).body.toString()).toBe(portBefore);
      // The pool of the server no snapshot names is closed, well before its idle timeout.
      await eventually(async () => expect(await connections()).toBe(0), { withinMs: 2_000 });
    } finally {
      await live.close();
      await other.close();
    }
  });

  it('applies a new snapshot to the next request', async () => {
    const live = await startPlane(canaryDocument([stable.url], [candidate.url]));
    try {
      expect((await send(live.url)).headers['x-backend']).toBe('stable');
      live.setDocument({
        upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] } },
        services: [{ name: 'web', stable: 'stable', release: { candidate: 'candidate', state: 'full' } }],
      });
      const full = await send(live.url);
      expect(full.headers['x-backend']).toBe('candidate');
      // Everyone gets the candidate: nothing depended on the caller, so no Vary.
      expect(full.headers.vary).toBeUndefined();
    } finally {
      await live.close();
    }
  });
});

describe('hop-by-hop headers', () => {
  it('strips them from the request, including headers named in Connection', async () => {
    const before = stable.seen.length;
    await send(gateway.url, {
      path: '/strip',
      headers: {
        connection: 'keep-alive, x-private',
        'x-private': 'secret',
        'keep-alive': 'timeout=100',
        te: 'trailers',
        'proxy-authorization': 'Basic abc',
        'proxy-connection': 'keep-alive',
        'x-normal': 'kept',
      },
    });
    const seen = stable.seen.slice(before).find((r) => r.url === '/strip')!;
    expect(seen.headers['x-normal']).toBe('kept');
    for (const name of ['x-private', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection']) {
      expect(seen.headers[name], name).toBeUndefined();
    }
  });

  it('strips them from the response, including headers named in Connection', async () => {
    const reply = await send(gateway.url, { path: '/hop' });
    expect(reply.status).toBe(200);
    expect(reply.body.toString()).toBe('ok');
    expect(reply.headers['x-kept']).toBe('yes');
    expect(reply.headers['x-secret']).toBeUndefined();
    expect(reply.headers['proxy-authenticate']).toBeUndefined();
    expect(reply.headers['keep-alive']).not.toBe('timeout=5');
  });
});

describe('connections', () => {
  it("keeps the client connection open when the upstream says Connection: close", async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const sockets = new Set<unknown>();
      for (let i = 0; i < 3; i++) {
        await new Promise<void>((resolve, reject) => {
          const req = http.get(`${gateway.url}/upstream-close`, { agent }, (res) => {
            expect(res.headers.connection).toBe('keep-alive');
            res.resume();
            res.on('end', () => resolve());
          });
          req.on('socket', (socket) => sockets.add(socket));
          req.on('error', reject);
        });
      }
      expect(sockets.size).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  it('answers HEAD with the headers only', async () => {
    const reply = await send(gateway.url, { method: 'HEAD', path: '/head' });
    expect(reply.status).toBe(200);
    expect(Number(reply.headers['content-length'])).toBeGreaterThan(0);
    expect(reply.body.length).toBe(0);
  });
});

describe('forwarding headers', () => {
  it('from an untrusted peer replaces spoofed X-Forwarded-* and Forwarded', async () => {
    const before = stable.seen.length;
    await send(gateway.url, {
      path: '/xff',
      headers: { host: 'shop.example:8080', 'x-forwarded-for': '6.6.6.6', 'x-forwarded-host': 'evil', 'x-forwarded-proto': 'https', forwarded: 'for=6.6.6.6', 'x-forwarded-port': '1' },
    });
    const seen = stable.seen.slice(before).find((r) => r.url === '/xff')!;
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe('shop.example:8080');
    expect(seen.headers.forwarded).toBeUndefined();
    expect(seen.headers['x-forwarded-port']).toBeUndefined();
    expect(seen.headers.host).toBe('shop.example:8080');
  });

  it('from a trusted proxy appends to X-Forwarded-For and keeps the rest', async () => {
    const before = stable.seen.length;
    await send(trustedGateway.url, {
      path: '/xff-trusted',
      headers: { 'x-forwarded-for': '203.0.113.7, 10.1.1.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'public.example' },
    });
    const seen = stable.seen.slice(before).find((r) => r.url === '/xff-trusted')!;
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.7, 10.1.1.1, 127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    expect(seen.headers['x-forwarded-host']).toBe('public.example');
  });

  it('sends the server origin as Host when preserveHost is off', async () => {
    const plane = await startPlane(canaryDocument([stable.url], [candidate.url]), { proxy: { preserveHost: false } });
    try {
      const reply = await send(plane.url, { path: '/h', headers: { host: 'shop.example' } });
      expect((reply.json().headers as Record<string, string>).host).toBe(`127.0.0.1:${stable.port}`);
    } finally {
      await plane.close();
    }
  });
});

describe('bodies', () => {
  it('streams a chunked request as chunked (upstream sees it before the body ends) and a sized one with its length', async () => {
    const before = stable.seen.length;
    const socket = net.connect(gateway.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write('POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n');
    // The upstream has the request while the client is still sending: nothing was buffered whole.
    await eventually(() => expect(stable.seen.slice(before).some((r) => r.url === '/echo')).toBe(true));
    socket.write('6\r\n world\r\n0\r\n\r\n');
    await closed;
    const chunked = Buffer.concat(chunks).toString();
    expect(chunked).toMatch(/^HTTP\/1\.1 200/);
    expect(chunked).toMatch(/x-seen-te: chunked/i);
    expect(chunked).toMatch(/hello world/);
    const sized = await send(gateway.url, { method: 'POST', path: '/echo', body: 'twelve bytes' });
    expect(sized.body.toString()).toBe('twelve bytes');
    expect(sized.headers['x-seen-length']).toBe('12');
  });

  it('streams a chunked response and forwards its trailers', async () => {
    const reply = await send(gateway.url, { path: '/chunked' });
    expect(reply.body.toString()).toBe('first,second');
    expect(reply.headers['transfer-encoding']).toBe('chunked');
    expect(reply.trailers['x-checksum']).toBe('abc123');
  });

  it('survives 103 Early Hints and answers Expect: 100-continue', async () => {
    const hints = await send(gateway.url, { path: '/early-hints' });
    expect(hints.status).toBe(200);
    expect(hints.body.toString()).toBe('after hints');
    const raw = await rawExchange(
      gateway.port,
      'POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nping',
    );
    expect(raw).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK[\s\S]*\r\nping\r\n/);
  });
});

describe('request smuggling guard', () => {
  const cases: [string, string][] = [
    ['Content-Length with Transfer-Encoding', 'Content-Length: 4\r\nTransfer-Encoding: chunked\r\n'],
    ['repeated Content-Length', 'Content-Length: 4\r\nContent-Length: 4\r\n'],
    ['conflicting Content-Length', 'Content-Length: 4\r\nContent-Length: 5\r\n'],
    ['Transfer-Encoding gzip, chunked', 'Transfer-Encoding: gzip, chunked\r\n'],
    ['Transfer-Encoding "chunked,"', 'Transfer-Encoding: chunked,\r\n'],
    ['Transfer-Encoding identity', 'Transfer-Encoding: identity\r\n'],
    ['repeated Transfer-Encoding', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n'],
    ['Content-Length with a sign', 'Content-Length: +4\r\n'],
  ];
  it.each(cases)('answers 400 GG_BAD_REQUEST to %s and forwards nothing', async (_name, framing) => {
    const before = stable.seen.length;
    const reply = await rawExchange(gateway.port, `POST /smuggle HTTP/1.1\r\nHost: a\r\n${framing}\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n`);
    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
    expect(reply).toContain('GG_BAD_REQUEST');
    expect(stable.seen.slice(before).some((r) => r.url === '/smuggle' || r.url === '/admin')).toBe(false);
  });
});

describe('slow and malformed clients', () => {
  it('answers 408 to a client that does not finish its headers in time (slowloris guard)', async () => {
    const plane = await startPlane(canaryDocument([stable.url], [candidate.url]), { proxy: { clientHeadersTimeoutMs: 300 } });
    try {
      // The test's own window is far longer than the 300 ms guard: a 408 in it came from the guard.
      const reply = await rawExchange(plane.port, 'GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ', 60_000);
      expect(reply).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
      expect(reply).toContain('"code":"GG_REQUEST_TIMEOUT"');
    } finally {
      await plane.close();
    }
  });

  it('answers 431 GG_HEADERS_TOO_LARGE to headers beyond what the gateway parses, and closes', async () => {
    const before = stable.seen.length;
    const reply = await rawExchange(gateway.port, `GET /big HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(reply).toMatch(/^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    expect(reply).toContain('"code":"GG_HEADERS_TOO_LARGE"');
    expect(reply).toMatch(/\r\nconnection: close\r\n/i);
    expect(stable.seen.slice(before).some((r) => r.url === '/big')).toBe(false);
  });

  it('answers 400 GG_BAD_REQUEST to a request line it cannot parse', async () => {
    const reply = await rawExchange(gateway.port, 'GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1\.1 400 /);
    expect(reply).toContain('GG_BAD_REQUEST');
  });
});
