import { randomBytes } from 'node:crypto';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import type http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'undici';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { closePayload, encodeFrame, FrameReader, serveWebSockets, type WsFrame, type WsUpstream } from '../helpers/ws-backend.js';
import { rawExchange, send } from './harness.js';

// The proxy's end-to-end behaviours, against the real gateway process on each runtime: Node
// (node:http + undici) and Bun (Bun.serve + Bun's fetch; `bun` is an optional dependency).
// Where the adapters differ, the test says so with `if (runtime === 'bun')` and a comment, and
// docs/runtimes.md "Bun" lists the difference.

const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');
type Runtime = 'node' | 'bun';
const runtimes: [Runtime, string][] = [
  ['node', process.execPath],
  ['bun', bun],
];

interface Client {
  readonly ws: WebSocket;
  /** The next message (text as a string, binary as a Buffer). */
  next(): Promise<string | Buffer>;
  readonly closed: Promise<{ code: number; reason: string }>;
}

/** A real WebSocket client (undici's, the one Node ships), opened through the gateway. */
async function connect(url: string, options: { protocols?: string[]; headers?: Record<string, string> } = {}): Promise<Client> {
  const ws = new WebSocket(url, { protocols: options.protocols ?? [], headers: options.headers ?? {} });
  ws.binaryType = 'arraybuffer';
  const queue: (string | Buffer)[] = [];
  const waiters: ((message: string | Buffer) => void)[] = [];
  ws.addEventListener('message', (event) => {
    const message = typeof event.data === 'string' ? event.data : Buffer.from(event.data as ArrayBuffer);
    const waiter = waiters.shift();
    if (waiter) waiter(message);
    else queue.push(message);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.addEventListener('close', (event) => resolve({ code: event.code, reason: event.reason })));
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve());
    ws.addEventListener('error', () => reject(new Error(`WebSocket to ${url} failed`)));
  });
  return {
    ws,
    closed,
    next: () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((resolve) => waiters.push(resolve))),
  };
}

interface RawClient {
  readonly socket: net.Socket;
  /** The response head (status line and headers). */
  readonly head: string;
  /** After a 101: the frames received so far. */
  readonly frames: WsFrame[];
  /** After another status: the body bytes received so far. */
  rest(): Buffer;
  readonly closed: Promise<void>;
}

/** A WebSocket handshake on a raw socket: for what a WebSocket API hides (status, head, TCP). */
function rawConnect(port: number, pathAndQuery: string, extraHeaders = ''): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    let head: string | undefined;
    const frames: WsFrame[] = [];
    const reader = new FrameReader();
    const closed = new Promise<void>((done) => socket.on('close', () => done()));
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      if (head !== undefined) {
        // A tunnel's bytes go to the frame reader only: joining megabytes of them is quadratic.
        if (/^HTTP\/1\.1 101/.test(head)) frames.push(...reader.push(chunk));
        else buffer = Buffer.concat([buffer, chunk]);
        return;
      }
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      head = buffer.subarray(0, end).toString('latin1');
      buffer = buffer.subarray(end + 4);
      if (/^HTTP\/1\.1 101/.test(head) && buffer.length > 0) frames.push(...reader.push(buffer));
      resolve({ socket, head, frames, rest: () => buffer, closed });
    });
    socket.write(
      `GET ${pathAndQuery} HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`,
    );
  });
}

/**
 * Writes raw bytes and resolves with what came back once the server closed the connection, by
 * FIN or by reset (how a proxy cuts a response it cannot finish), once `until` accepts what came
 * back, or after `withinMs`; `closedByServer` tells the first case from the others.
 */
function readUntilClosed(port: number, bytes: string, withinMs: number, until?: (text: string) => boolean): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closedByUs = false;
    const closeOurselves = () => {
      closedByUs = true;
      socket.destroy();
    };
    const timer = setTimeout(closeOurselves, withinMs);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (until?.(Buffer.concat(chunks).toString('latin1'))) closeOurselves();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closedByServer: !closedByUs });
    });
    socket.write(bytes);
  });
}

describe.each(runtimes)('the %s data plane, through the real gateway process', (runtime, binary) => {
  let stable: Backend;
  let candidate: Backend;
  let stableWs: WsUpstream;
  let candidateWs: WsUpstream;
  let dead: string;
  let gateway: GatewayProcess;
  const releases: (() => void)[] = [];
  /** Responses the backends hold open (stalled bodies, missing heads), ended in afterAll. */
  const held: http.ServerResponse[] = [];
  /** Paths whose upstream response closed before it had finished (the gateway gave up on it). */
  const abandoned: string[] = [];
  let flaky = 0;

  const document = (canaryValue: string, candidateUrl = candidate.url) => ({
    log: { level: 'info' },
    identity: { anonymousCookie: {} },
    upstreams: {
      stable: { servers: [stable.url] },
      candidate: { servers: [candidateUrl] },
      // Tight timeouts for the timeout tests, on the same backend.
      slow: { servers: [stable.url], timeouts: { connectMs: 200, responseHeadersMs: 500, idleMs: 500 } },
      // Round robin starts at the dead server; it is ejected after its first refusal.
      pair: { servers: [dead, stable.url], health: { ejectAfterFailures: 1, ejectForMs: 60_000 } },
    },
    services: [
      { name: 'web', stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ header: { name: 'x-canary', equals: canaryValue } }] } },
      { name: 'slow', match: { pathPrefix: '/slow' }, stable: 'slow' },
      { name: 'pair', match: { pathPrefix: '/pair' }, stable: 'pair' },
      { name: 'sticky', match: { pathPrefix: '/sticky' }, stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ percentage: { percent: 50 } }] } },
    ],
  });

  const writeDocument = (doc: Record<string, unknown>) => {
    writeFileSync(`${gateway.configPath}.tmp`, stringify({ listen: '127.0.0.1:0', ...doc }));
    renameSync(`${gateway.configPath}.tmp`, gateway.configPath);
  };

  const backend = (name: string) =>
    startBackend(name, (req, res) => {
      const url = req.url ?? '';
      if (url === '/hop') {
        req.resume();
        res.writeHead(200, { connection: 'x-secret', 'x-secret': 's', 'x-kept': 'yes', 'proxy-authenticate': 'Basic', 'content-length': 2 });
        res.end('ok');
        return true;
      }
      if (url === '/echo') {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          res.writeHead(200, { 'x-seen-te': String(req.headers['transfer-encoding']), 'x-seen-length': String(req.headers['content-length']) });
          res.end(Buffer.concat(chunks));
        });
        return true;
      }
      if (url === '/drip') {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first,');
        releases.push(() => res.end('second'));
        return true;
      }
      if (url === '/trailers') {
        req.resume();
        res.writeHead(200, { trailer: 'x-checksum' });
        res.write('body');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
        return true;
      }
      if (url === '/slow/no-head' || url === '/hold') {
        req.resume();
        if (url === '/hold') {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.write('held,');
        }
        res.on('close', () => {
          if (!res.writableFinished) abandoned.push(url);
        });
        held.push(res);
        return true;
      }
      if (url === '/slow/stall') {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part,');
        held.push(res);
        return true;
      }
      if (url.startsWith('/flaky')) {
        // Reset the first try; answer the second.
        flaky++;
        if (flaky === 1) {
          req.socket.destroy();
          return true;
        }
        return false;
      }
      return false;
    });

  beforeAll(async () => {
    expect(existsSync(binary), `${binary} (npm install installs bun as an optional dependency)`).toBe(true);
    [stable, candidate] = await Promise.all([backend('stable'), backend('candidate')]);
    stableWs = serveWebSockets(stable);
    candidateWs = serveWebSockets(candidate);
    dead = `http://127.0.0.1:${await deadPort()}`;
    gateway = await startGatewayProcess({ config: document('1'), args: ['--workers', '1'], runtime: binary });
  });
  afterAll(async () => {
    for (const res of held) res.destroy();
    await gateway?.stop('SIGKILL');
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it(`runs on ${runtime}`, async () => {
    expect((await gateway.waitForLog((line) => line.event === 'listening')).runtime).toBe(runtime);
  });

  // ---- routing ---------------------------------------------------------------------------

  it('sends each request to the version the rules decide, with Vary naming what was read', async () => {
    const toCandidate = await send(gateway.url, { path: '/a', headers: { 'x-canary': '1' } });
    const toStable = await send(gateway.url, { path: '/b' });
    expect([toCandidate.status, toCandidate.json().version]).toEqual([200, 'candidate']);
    expect([toStable.status, toStable.json().version]).toEqual([200, 'stable']);
    expect(toCandidate.headers.vary).toMatch(/x-canary/i);
    expect(toCandidate.json().url).toBe('/a');
    const query = await send(gateway.url, { path: '/q?x=1&y=%20' });
    expect(query.json().url).toBe('/q?x=1&y=%20');
  });

  it('applies a change of the config file to the next requests', async () => {
    writeDocument(document('2'));
    await eventually(async () => expect((await send(gateway.url, { headers: { 'x-canary': '2' } })).json().version).toBe('candidate'), { withinMs: 3_000 });
    expect((await send(gateway.url, { headers: { 'x-canary': '1' } })).json().version).toBe('stable');
    writeDocument(document('1'));
    await eventually(async () => expect((await send(gateway.url, { headers: { 'x-canary': '1' } })).json().version).toBe('candidate'), { withinMs: 3_000 });
  });

  // ---- headers ---------------------------------------------------------------------------

  it('strips hop-by-hop headers both ways and writes X-Forwarded-* fresh for an untrusted peer', async () => {
    const before = stable.seen.length;
    await send(gateway.url, {
      path: '/strip',
      headers: { connection: 'keep-alive, x-private', 'x-private': 'secret', te: 'trailers', 'proxy-authorization': 'Basic abc', 'x-normal': 'kept', 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', forwarded: 'for=6.6.6.6', host: 'shop.example:8080' },
    });
    const seen = stable.seen.slice(before).find((r) => r.url === '/strip')!;
    expect(seen.headers['x-normal']).toBe('kept');
    for (const name of ['x-private', 'te', 'proxy-authorization', 'forwarded']) expect(seen.headers[name], name).toBeUndefined();
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe('shop.example:8080');
    expect(seen.headers.host).toBe('shop.example:8080');

    const reply = await send(gateway.url, { path: '/hop' });
    expect(reply.body.toString()).toBe('ok');
    expect(reply.headers['x-kept']).toBe('yes');
    expect(reply.headers['x-secret']).toBeUndefined();
    expect(reply.headers['proxy-authenticate']).toBeUndefined();
  });

  it('appends to X-Forwarded-For and keeps the rest behind a trusted proxy', async () => {
    const trusted = await startGatewayProcess({ config: { ...document('1'), trustedProxies: ['127.0.0.1/32'] }, args: ['--workers', '1'], runtime: binary });
    try {
      const before = stable.seen.length;
      await send(trusted.url, { path: '/xff-trusted', headers: { 'x-forwarded-for': '203.0.113.7, 10.1.1.1', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'public.example' } });
      const seen = stable.seen.slice(before).find((r) => r.url === '/xff-trusted')!;
      expect(seen.headers['x-forwarded-for']).toBe('203.0.113.7, 10.1.1.1, 127.0.0.1');
      expect(seen.headers['x-forwarded-proto']).toBe('https');
      expect(seen.headers['x-forwarded-host']).toBe('public.example');
    } finally {
      await trusted.stop('SIGTERM');
    }
  });

  it('refuses ambiguous framing (Content-Length with Transfer-Encoding) with 400 and forwards nothing', async () => {
    const before = stable.seen.length + candidate.seen.length;
    const answer = await rawExchange(gateway.port, 'POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(stable.seen.length + candidate.seen.length).toBe(before);
  });

  // ---- streaming -------------------------------------------------------------------------

  it('streams a chunked request body to the upstream before it ends, and a sized one with its length', async () => {
    const before = stable.seen.length;
    const socket = net.connect(gateway.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write('POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n');
    await eventually(() => expect(stable.seen.slice(before).some((r) => r.url === '/echo')).toBe(true));
    socket.write('6\r\n world\r\n0\r\n\r\n');
    await closed;
    const text = Buffer.concat(chunks).toString();
    expect(text).toMatch(/^HTTP\/1\.1 200/);
    expect(text).toMatch(/hello world/);
    const sized = await send(gateway.url, { method: 'POST', path: '/echo', body: 'twelve bytes' });
    expect(sized.body.toString()).toBe('twelve bytes');
    expect(sized.headers['x-seen-length']).toBe('12');
  });

  it('forwards a GET with a body on Node; Bun discards such a body, so it refuses the request with 400 and forwards nothing', async () => {
    const before = stable.seen.length;
    const answer = await rawExchange(gateway.port, 'GET /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\nConnection: close\r\n\r\nhello, world!');
    if (runtime === 'bun') {
      // Bun.serve reads the body of a GET and hands over none, and Bun's fetch refuses to send
      // one: rather than forward the request without its body, the gateway refuses it.
      expect(answer).toMatch(/^HTTP\/1\.1 400 /);
      expect(answer).toMatch(/"code":"GG_BAD_REQUEST"/);
      expect(stable.seen.length).toBe(before);
    } else {
      expect(answer).toMatch(/^HTTP\/1\.1 200 /);
      expect(answer).toMatch(/x-seen-length: 13\r\n/i);
      expect(answer).toMatch(/hello, world!/);
    }
  });

  it('streams a response body: the first bytes reach the client before the upstream has finished', async () => {
    const socket = net.connect(gateway.port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    socket.write('GET /drip HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await eventually(() => expect(received).toMatch(/first,/));
    expect(received).not.toMatch(/second/);
    releases.shift()!();
    await closed;
    expect(received).toMatch(/second/);
  });

  it('aborts the upstream request when the client goes away mid-response', async () => {
    const socket = net.connect(gateway.port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString()));
    socket.write('GET /hold HTTP/1.1\r\nHost: a\r\n\r\n');
    await eventually(() => expect(received).toMatch(/held,/));
    socket.destroy();
    await eventually(() => expect(abandoned).toContain('/hold'));
  });

  // ---- upstream failures -----------------------------------------------------------------

  it('answers 504 GG_UPSTREAM_TIMEOUT when the upstream sends no response head in time', async () => {
    const reply = await send(gateway.url, { path: '/slow/no-head' });
    expect(reply.status).toBe(504);
    expect(reply.json<{ error: { code: string } }>().error.code).toBe('GG_UPSTREAM_TIMEOUT');
    await eventually(() => expect(abandoned).toContain('/slow/no-head'));
  });

  it('cuts the client connection when the response body stalls longer than idleMs', async () => {
    // The test's own window is far longer than idleMs (500 ms): only the gateway can close first.
    const { text, closedByServer } = await readUntilClosed(gateway.port, 'GET /slow/stall HTTP/1.1\r\nHost: a\r\n\r\n', 60_000);
    // The head and the first bytes arrived; the body never ended (no last chunk) and the
    // connection was closed by the gateway.
    expect(text).toMatch(/^HTTP\/1\.1 200/);
    expect(text).toMatch(/part,/);
    expect(text).not.toMatch(/\r\n0\r\n\r\n$/);
    expect(closedByServer).toBe(true);
  });

  it('retries a reset once for a body-less idempotent request, never for a POST', async () => {
    flaky = 0;
    const get = await send(gateway.url, { path: '/flaky-get' });
    expect(get.status).toBe(200);
    expect(flaky).toBe(2);
    flaky = 0;
    const post = await send(gateway.url, { method: 'POST', path: '/flaky-post', body: 'once' });
    expect(post.status).toBe(502);
    expect(post.json<{ error: { code: string } }>().error.code).toBe('GG_UPSTREAM_RESET');
    expect(flaky).toBe(1);
  });

  it('retries an idempotent request on the next server when one refuses connections', async () => {
    const first = await send(gateway.url, { path: '/pair/retry' });
    expect(first.status).toBe(200);
    expect(first.json().version).toBe('stable');
    // The refusing server is ejected now: a POST (never retried) goes to the live one.
    const post = await send(gateway.url, { method: 'POST', path: '/pair/post', body: 'payload' });
    expect(post.status).toBe(200);
  });

  it('falls back to stable when the candidate refuses connections, and answers 502 GG_UPSTREAM_CONNECT when stable does', async () => {
    writeDocument(document('3', dead));
    await eventually(async () => expect((await send(gateway.url, { headers: { 'x-canary': '3' } })).json().version).toBe('stable'), { withinMs: 3_000 });
    // Upgrades fall back the same way.
    const ws = await connect(`ws://127.0.0.1:${gateway.port}/chat`, { headers: { 'x-canary': '3' } });
    ws.ws.send('who');
    expect(await ws.next()).toBe('stable:who');
    ws.ws.close();
    writeDocument(document('1'));
    await eventually(async () => expect((await send(gateway.url, { headers: { 'x-canary': '1' } })).json().version).toBe('candidate'), { withinMs: 3_000 });

    const stableDead = await startGatewayProcess({
      config: { upstreams: { v1: { servers: [dead] } }, services: [{ name: 'app', stable: 'v1' }] },
      args: ['--workers', '1'],
      runtime: binary,
    });
    try {
      const reply = await send(stableDead.url, { path: '/x' });
      expect(reply.status).toBe(502);
      expect(reply.json<{ error: { code: string } }>().error.code).toBe('GG_UPSTREAM_CONNECT');
      const upgrade = await rawConnect(stableDead.port, '/chat');
      expect(upgrade.head).toMatch(/^HTTP\/1\.1 502 /);
      await upgrade.closed;
      expect(upgrade.rest().toString()).toMatch(/GG_UPSTREAM_CONNECT/);
    } finally {
      await stableDead.stop('SIGTERM');
    }
  });

  // ---- WebSocket -------------------------------------------------------------------------

  it('routes a WebSocket like a request and echoes text and binary messages both ways', async () => {
    for (const [headers, expected] of [
      [{}, 'stable'],
      [{ 'x-canary': '1' }, 'candidate'],
    ] as const) {
      const client = await connect(`ws://127.0.0.1:${gateway.port}/chat?room=1`, { headers });
      client.ws.send('hello');
      expect(await client.next()).toBe(`${expected}:hello`);
      const bytes = randomBytes(200_000);
      client.ws.send(bytes);
      expect(Buffer.compare((await client.next()) as Buffer, bytes)).toBe(0);
      client.ws.send('again');
      expect(await client.next()).toBe(`${expected}:again`);
      client.ws.close(1000);
      await client.closed;
    }
    expect(candidateWs.handshakes.at(-1)!.url).toBe('/chat?room=1');
  });

  it('passes cookies, credentials and fresh X-Forwarded-* on the upstream handshake, and returns the subprotocol the upstream chose', async () => {
    const client = await connect(`ws://127.0.0.1:${gateway.port}/proto`, {
      protocols: ['chat.v1', 'chat.v2'],
      headers: { cookie: 'session=abc', authorization: 'Bearer t0k', 'x-forwarded-for': '6.6.6.6', 'proxy-authorization': 'Basic p' },
    });
    expect(client.ws.protocol).toBe('chat.v2');
    const seen = stableWs.handshakes.at(-1)!;
    expect(seen.url).toBe('/proto');
    expect(seen.headers.cookie).toBe('session=abc');
    expect(seen.headers.authorization).toBe('Bearer t0k');
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['sec-websocket-protocol']).toBe('chat.v1, chat.v2');
    client.ws.close();
    await client.closed;
    // The upstream chose none of the offered subprotocols (a WebSocket API client would refuse
    // that answer itself, so a raw handshake looks at it).
    const none = await rawConnect(gateway.port, '/proto', 'Sec-WebSocket-Protocol: chat.v1\r\n');
    if (runtime === 'bun') {
      // Bun's client WebSocket fails such a 101 (the WHATWG rule), so the client gets a 502.
      expect(none.head).toMatch(/^HTTP\/1\.1 502 /);
      await none.closed;
      expect(none.rest().toString()).toMatch(/"code":"GG_UPSTREAM_RESET".*without choosing one of the offered subprotocols/);
    } else {
      // Node passes the 101 on as it came, without a subprotocol; the client decides.
      expect(none.head).toMatch(/^HTTP\/1\.1 101 /);
      expect(none.head).not.toMatch(/sec-websocket-protocol/i);
    }
    none.socket.destroy();
  });

  it('closes the tunnel with 1009 on Bun for a client message over 16 MiB; Node passes any size', async () => {
    const client = await connect(`ws://127.0.0.1:${gateway.port}/big`);
    const big = Buffer.alloc(16 * 1024 * 1024 + 1, 1);
    client.ws.send(big);
    if (runtime === 'bun') {
      // Bun.serve's maxPayloadLength (TUNNEL_MAX_MESSAGE_BYTES): uWebSockets closes with 1009.
      expect((await client.closed).code).toBe(1009);
    } else {
      expect(((await client.next()) as Buffer).length).toBe(big.length);
      client.ws.close();
      await client.closed;
    }
  });

  it('passes close codes and reasons both ways', async () => {
    const byUpstream = await connect(`ws://127.0.0.1:${gateway.port}/close`);
    byUpstream.ws.send('close:4001:bye now');
    expect(await byUpstream.closed).toEqual({ code: 4001, reason: 'bye now' });

    const byClient = await connect(`ws://127.0.0.1:${gateway.port}/close`);
    byClient.ws.send('ping');
    expect(await byClient.next()).toBe('stable:ping');
    const before = stableWs.closes.length;
    byClient.ws.close(4002, 'client done');
    expect((await byClient.closed).code).toBe(4002);
    await eventually(() => expect(stableWs.closes.slice(before)).toContainEqual({ code: 4002, reason: 'client done' }));
  });

  it('closes the upstream socket when the client goes away without a close frame', async () => {
    const earlier = new Set(stableWs.sockets);
    const client = await rawConnect(gateway.port, '/gone');
    expect(client.head).toMatch(/^HTTP\/1\.1 101 /);
    // Node passes the upstream's 101 head on; Bun's client WebSocket exposes only the chosen
    // subprotocol of it, so Bun's 101 carries that and graygate's own headers, nothing else.
    if (runtime === 'bun') expect(client.head).not.toMatch(/x-backend/i);
    else expect(client.head).toMatch(/x-backend: stable/i);
    const upstream = await eventually(() => {
      const found = [...stableWs.sockets].find((socket) => !earlier.has(socket));
      expect(found).toBeDefined();
      return found!;
    });
    const closesBefore = stableWs.closes.length;
    const dropsBefore = stableWs.dropsWithoutClose;
    client.socket.destroy();
    await eventually(() => expect(upstream.destroyed).toBe(true));
    if (runtime === 'bun') {
      // Bun's client WebSocket cannot end a connection without a close frame: the upstream is told
      // 1001 "going away" (docs/runtimes.md "Bun").
      expect(stableWs.closes.slice(closesBefore)).toContainEqual({ code: 1001, reason: 'the client went away' });
    } else {
      // Node pipes raw sockets: the upstream sees the TCP connection end, as the client ended it.
      expect(stableWs.dropsWithoutClose).toBeGreaterThan(dropsBefore);
    }
  });

  it('answers an upgrade the upstream refuses with an error and closes the connection', async () => {
    const refused = await rawConnect(gateway.port, '/refuse');
    await refused.closed;
    if (runtime === 'bun') {
      // Bun's client WebSocket exposes neither the refusal's headers nor its body, only its
      // status in the error text: the client gets 502 GG_UPSTREAM_RESET naming that status.
      expect(refused.head).toMatch(/^HTTP\/1\.1 502 /);
      expect(refused.rest().toString()).toMatch(/"code":"GG_UPSTREAM_RESET".*status 403/);
    } else {
      // Node passes the upstream's answer on as it came.
      expect(refused.head).toMatch(/^HTTP\/1\.1 403 Forbidden/);
      expect(refused.rest().toString()).toBe('not ok');
    }
  });

  it('hands a minted anonymous id back on the 101, so the next connection keeps its version', async () => {
    const first = await rawConnect(gateway.port, '/sticky/chat');
    expect(first.head).toMatch(/^HTTP\/1\.1 101 /);
    const cookie = /^set-cookie: (gg_anon=[^;\r\n]+)/im.exec(first.head)?.[1];
    expect(cookie).toBeDefined();
    first.socket.destroy();
    const versions = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const again = await connect(`ws://127.0.0.1:${gateway.port}/sticky/chat`, { headers: { cookie: cookie! } });
      again.ws.send('v');
      versions.add(String(await again.next()));
      again.ws.close();
      await again.closed;
    }
    expect(versions.size).toBe(1);
  });

  it('bounds what it buffers for a client that does not read', async () => {
    const client = await rawConnect(gateway.port, '/flood');
    expect(client.head).toMatch(/^HTTP\/1\.1 101 /);
    client.socket.pause();
    const closesBefore = stableWs.closes.length;
    // 160 messages of 64 KiB: 10 MiB, well past the socket buffers and the Bun adapter's limit.
    client.socket.write(encodeFrame(0x1, Buffer.from('flood:160'), true));
    if (runtime === 'bun') {
      // Neither of Bun's WebSockets can stop reading, so backpressure cannot reach the upstream:
      // past 1 MiB queued for the client the gateway closes both sides with 1011.
      await eventually(() => expect(stableWs.closes.slice(closesBefore).map((c) => c.code)).toContain(1011), { withinMs: 5_000 });
      client.socket.resume();
      await client.closed;
      const messages = client.frames.filter((frame) => frame.opcode === 0x2);
      expect(messages.length).toBeLessThan(160);
    } else {
      // Node pipes with backpressure: the upstream socket is paused, nothing is closed or lost.
      client.socket.resume();
      await eventually(() => expect(client.frames.filter((frame) => frame.opcode === 0x2)).toHaveLength(160), { withinMs: 10_000 });
      expect(stableWs.closes.length).toBe(closesBefore);
      client.socket.write(encodeFrame(0x8, closePayload(1000, ''), true));
      await client.closed;
    }
  });

  it('bounds what it buffers for an upstream that does not read', async () => {
    const client = await connect(`ws://127.0.0.1:${gateway.port}/slow-upstream`);
    client.ws.send('pause:2000');
    const chunk = Buffer.alloc(64 * 1024, 3);
    // 240 messages of 64 KiB while the upstream reads nothing: 15 MiB, past the socket buffers.
    for (let i = 0; i < 240; i++) client.ws.send(chunk);
    if (runtime === 'bun') {
      // Bun's client WebSocket queues what the upstream socket did not take; past 1 MiB the
      // gateway closes the tunnel with 1011.
      expect((await client.closed).code).toBe(1011);
    } else {
      // Node's pipe holds the client back until the upstream reads again; every message arrives.
      for (let i = 0; i < 240; i++) expect(((await client.next()) as Buffer).length).toBe(chunk.length);
      client.ws.close();
      await client.closed;
    }
  });

  it('tunnels other upgrades on Node; Bun bridges WebSocket only and refuses them with 400 GG_BAD_REQUEST', async () => {
    // Node's tunnel stays open: its head is the answer; Bun's refusal, once its error code is in.
    const headDone = (reply: string) => reply.includes('\r\n\r\n') && (runtime !== 'bun' || /"code":"[A-Z_]+"/.test(reply));
    const { text } = await readUntilClosed(gateway.port, `GET /other HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: example/1\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`, 60_000, headDone);
    if (runtime === 'bun') {
      expect(text).toMatch(/^HTTP\/1\.1 400 /);
      expect(text).toMatch(/"code":"GG_BAD_REQUEST"/);
    } else {
      expect(text).toMatch(/^HTTP\/1\.1 101 /);
    }
  });

  // ---- where the adapters differ in plain HTTP (docs/runtimes.md "Bun") -------------------

  it('refuses a repeated Content-Length with 400 and forwards nothing; on Bun, conflicting values are refused by Bun itself', async () => {
    const before = stable.seen.length + candidate.seen.length;
    const same = await rawExchange(gateway.port, 'POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello');
    expect(same).toMatch(/^HTTP\/1\.1 400 /);
    expect(same).toMatch(/"code":"GG_BAD_REQUEST"/);
    const conflicting = await rawExchange(gateway.port, 'POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!');
    expect(conflicting).toMatch(/^HTTP\/1\.1 400 /);
    // Bun's parser answers a plain 400 before graygate sees the request: no JSON error code.
    if (runtime === 'bun') expect(conflicting).not.toMatch(/GG_BAD_REQUEST/);
    else expect(conflicting).toMatch(/"code":"GG_BAD_REQUEST"/);
    expect(stable.seen.length + candidate.seen.length).toBe(before);
  });

  it('forwards response trailers on Node; Bun.serve cannot send them, so Bun drops them and keeps the body', async () => {
    const reply = await send(gateway.url, { path: '/trailers' });
    expect(reply.body.toString()).toBe('body');
    if (runtime === 'bun') expect(reply.trailers['x-checksum']).toBeUndefined();
    else expect(reply.trailers['x-checksum']).toBe('abc123');
  });

  // ---- shutdown (last: it stops the gateway) ---------------------------------------------

  it('drains on SIGTERM: a request in flight completes, an open WebSocket is closed, the process exits 0', async () => {
    const client = await connect(`ws://127.0.0.1:${gateway.port}/drain`);
    const inFlight = send(gateway.url, { path: '/drip' });
    await eventually(() => expect(releases).toHaveLength(1));
    const exited = gateway.stop('SIGTERM');
    await gateway.waitForLog((line) => line.event === 'draining');
    releases.shift()!();
    const reply = await inFlight;
    expect([reply.status, reply.body.toString()]).toEqual([200, 'first,second']);
    const closed = await client.closed;
    // Bun closes each tunnel with 1001 "going away"; Node destroys both sockets, so the client sees
    // an abnormal closure (1006).
    expect(closed.code).toBe(runtime === 'bun' ? 1001 : 1006);
    expect(await exited).toBe(0);
  });
});
