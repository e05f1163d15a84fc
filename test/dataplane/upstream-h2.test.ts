import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { makeTestPki, type TestPki } from '../helpers/upstream-certs.js';
import { send, startPlane } from './harness.js';

/**
 * HTTP/2 upstreams (`protocol: h2c` and `h2`) behind the node data plane, seen from an HTTP/1.1
 * client: bodies both ways, response trailers passed on in the chunked response, and a slow
 * client that holds the response back while the trailers have already arrived.
 */

interface H2Backend {
  readonly url: string;
  readonly requests: http2.IncomingHttpHeaders[];
  close(): Promise<void>;
}

const BIG_BYTES = 2 * 1024 * 1024;

/** A node:http2 server: `/trailers` answers a body then trailers; `/big` 2 MiB then trailers; anything else echoes the request body. */
async function startH2Backend(name: string, tls?: { cert: string; key: string }): Promise<H2Backend> {
  const requests: http2.IncomingHttpHeaders[] = [];
  const server = tls ? http2.createSecureServer({ cert: tls.cert, key: tls.key }) : http2.createServer();
  server.on('stream', (stream, headers) => {
    requests.push(headers);
    const path = headers[':path'];
    if (path === '/pkg.Svc/Broken') {
      // A gRPC answer that starts, then the server resets the stream mid-way.
      stream.resume();
      // The reset is this server's own doing: its stream reports it as an error.
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      // destroy() resets the stream at once; close() would end the response cleanly first.
      stream.write(Buffer.from([0, 0, 0, 0, 1, 0x2a]), () => setTimeout(() => stream.destroy(new Error('the server broke')), 20));
      return;
    }
    if (path === '/trailers' || path === '/big') {
      stream.resume();
      stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'x-backend': name }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc123', 'x-served-by': name }));
      if (path === '/trailers') {
        stream.end('body before trailers');
        return;
      }
      // Written as fast as flow control allows: the trailers follow the last chunk at once.
      let sent = 0;
      const chunk = Buffer.alloc(16_384, 120);
      const write = (): void => {
        while (sent < BIG_BYTES) {
          sent += chunk.length;
          if (!stream.write(chunk)) {
            stream.once('drain', write);
            return;
          }
        }
        stream.end();
      };
      write();
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify({ version: name, method: headers[':method'], body: Buffer.concat(chunks).toString() }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  return {
    url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

let pki: TestPki;
let h2c: H2Backend;
let h2: H2Backend;
let plain: Backend;

beforeAll(async () => {
  pki = makeTestPki();
  h2c = await startH2Backend('h2c');
  h2 = await startH2Backend('h2', { cert: pki.server.certPem, key: pki.server.keyPem });
  plain = await startBackend('stable');
});

afterAll(async () => {
  await Promise.all([h2c?.close(), h2?.close(), plain?.close()]);
  pki?.remove();
});

function only(upstream: Record<string, unknown>) {
  return { upstreams: { api: upstream }, services: [{ name: 'api', stable: 'api' }] };
}

describe('HTTP/2 upstreams', () => {
  it('forwards over h2c with the request body, :authority from the Host, and no connection-specific fields', async () => {
    const gateway = await startPlane(only({ servers: [h2c.url], protocol: 'h2c' }));
    try {
      const reply = await send(gateway.url, { method: 'POST', path: '/echo?q=1', headers: { host: 'shop.example', 'content-type': 'text/plain', connection: 'keep-alive' }, body: 'hello over h2c' });
      expect(reply.status).toBe(200);
      expect(reply.json()).toEqual({ version: 'h2c', method: 'POST', body: 'hello over h2c' });
      const seen = h2c.requests.at(-1)!;
      expect(seen[':authority']).toBe('shop.example');
      expect(seen[':path']).toBe('/echo?q=1');
      expect(seen.connection).toBeUndefined();
    } finally {
      await gateway.close();
    }
  });

  it('passes response trailers on in the chunked HTTP/1.1 response', async () => {
    const gateway = await startPlane(only({ servers: [h2c.url], protocol: 'h2c' }));
    try {
      const reply = await send(gateway.url, { path: '/trailers', headers: { te: 'trailers' } });
      expect(reply.status).toBe(200);
      expect(reply.body.toString()).toBe('body before trailers');
      expect(reply.headers['transfer-encoding']).toBe('chunked');
      expect(reply.trailers).toMatchObject({ 'x-checksum': 'abc123', 'x-served-by': 'h2c' });
    } finally {
      await gateway.close();
    }
  });

  it('keeps every byte before the trailers when a slow client holds the response back', async () => {
    const gateway = await startPlane(only({ servers: [h2c.url], protocol: 'h2c' }));
    try {
      const { bytes, trailers } = await new Promise<{ bytes: number; trailers: NodeJS.Dict<string> }>((resolve, reject) => {
        const target = new URL('/big', gateway.url);
        const req = http.request({ host: target.hostname, port: target.port, path: '/big', agent: false }, (res) => {
          let bytes = 0;
          // Reads a chunk, then stops reading for a while: the gateway must pause the upstream
          // stream, and the trailers arrive upstream long before the client has read the body.
          res.on('data', (chunk: Buffer) => {
            bytes += chunk.length;
            res.pause();
            setTimeout(() => res.resume(), 2);
          });
          res.on('end', () => resolve({ bytes, trailers: res.trailers }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      });
      expect(bytes).toBe(BIG_BYTES);
      expect(trailers).toMatchObject({ 'x-checksum': 'abc123' });
    } finally {
      await gateway.close();
    }
  });

  it('speaks h2 over TLS to a server verified against the upstream CA, and refuses one it cannot verify', async () => {
    const verified = await startPlane(only({ servers: [h2.url], protocol: 'h2', tls: { ca: pki.ca.cert } }));
    const unverified = await startPlane(only({ servers: [h2.url], protocol: 'h2', tls: { ca: pki.otherCa.cert } }));
    try {
      const reply = await send(verified.url, { method: 'POST', path: '/echo', body: 'secret' });
      expect(reply.status).toBe(200);
      expect(reply.json()).toMatchObject({ version: 'h2', body: 'secret' });
      const refused = await send(unverified.url, { method: 'POST', path: '/echo', body: 'secret' });
      expect(refused.status).toBe(502);
      expect(refused.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_TLS' } });
    } finally {
      await Promise.all([verified.close(), unverified.close()]);
    }
  });

  it('sends a request with a body to stable when the HTTP/2 candidate cannot be connected to (nothing was sent)', async () => {
    const dead = `http://127.0.0.1:${await deadPort()}`;
    const gateway = await startPlane({
      upstreams: { stable: { servers: [plain.url] }, candidate: { servers: [dead], protocol: 'h2c' } },
      services: [{ name: 'web', stable: 'stable', release: { candidate: 'candidate', rules: [{ header: { name: 'x-canary', equals: '1' } }] } }],
    });
    try {
      const reply = await send(gateway.url, { method: 'POST', path: '/order', headers: { 'x-canary': '1' }, body: 'one order' });
      expect(reply.status).toBe(200);
      expect(reply.json()).toMatchObject({ version: 'stable' });
      expect(plain.seen.at(-1)).toMatchObject({ method: 'POST', url: '/order' });
    } finally {
      await gateway.close();
    }
  });

  it('ends a gRPC call whose upstream stream breaks mid-way with grpc-status trailers, not a cut connection', async () => {
    const gateway = await startPlane(only({ servers: [h2c.url], protocol: 'h2c' }));
    try {
      const reply = await send(gateway.url, { method: 'POST', path: '/pkg.Svc/Broken', headers: { 'content-type': 'application/grpc', te: 'trailers' }, body: Buffer.alloc(5) });
      expect(reply.status).toBe(200);
      expect([...reply.body]).toEqual([0, 0, 0, 0, 1, 0x2a]);
      expect(reply.trailers['grpc-status']).toBe('14');
      expect(decodeURIComponent(String(reply.trailers['grpc-message']))).toMatch(/GG_UPSTREAM_RESET/);
    } finally {
      await gateway.close();
    }
  });

  it('answers a gRPC call over HTTP/1.1 with a gRPC status when the upstream is down (trailers-only: status in the head)', async () => {
    const dead = `http://127.0.0.1:${await deadPort()}`;
    const gateway = await startPlane(only({ servers: [dead], protocol: 'h2c' }));
    try {
      const reply = await send(gateway.url, { method: 'POST', path: '/pkg.Svc/Call', headers: { 'content-type': 'application/grpc' }, body: Buffer.alloc(5) });
      expect(reply.status).toBe(200);
      expect(reply.headers['content-type']).toBe('application/grpc');
      expect(reply.headers['grpc-status']).toBe('14');
      expect(decodeURIComponent(String(reply.headers['grpc-message']))).toMatch(/GG_UPSTREAM_CONNECT/);
      expect(reply.body.length).toBe(0);
    } finally {
      await gateway.close();
    }
  });
});
