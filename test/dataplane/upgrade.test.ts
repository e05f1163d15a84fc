import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { canaryDocument, startPlane, type PlaneUnderTest } from './harness.js';

// WebSocket through the gateway with a raw RFC 6455 handshake and a tiny frame echo (no `ws`
// dependency): enough to prove the upgrade is routed, switched and piped both ways.

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** A masked client text frame (payload < 126 bytes). */
function clientFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const masked = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

/** Decodes one masked client frame from the start of `data`; undefined when incomplete. */
function readClientFrame(data: Buffer): string | undefined {
  if (data.length < 6) return undefined;
  const length = data[1]! & 0x7f;
  if (data.length < 6 + length) return undefined;
  const mask = data.subarray(2, 6);
  return Buffer.from(data.subarray(6, 6 + length).map((byte, i) => byte ^ mask[i % 4]!)).toString();
}

/** An unmasked server text frame. */
function serverFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
}

function wsEchoServer(name: string): (req: http.IncomingMessage, socket: Duplex) => void {
  return (req, socket) => {
    socket.on('error', () => socket.destroy());
    socket.on('end', () => socket.end());
    if (req.url === '/refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nnot ok');
      return;
    }
    if (req.url === '/reset') {
      socket.destroy();
      return;
    }
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}${GUID}`).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nx-backend: ${name}\r\n\r\n`);
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const text = readClientFrame(buffered);
      if (text !== undefined) {
        buffered = Buffer.alloc(0);
        socket.write(serverFrame(`${name}:${text}`));
      }
    });
  };
}

/** Opens a raw connection, sends the handshake; resolves with the head and a reader. */
function openWebSocket(port: number, path: string, extraHeaders = ''): Promise<{ socket: net.Socket; head: string; next(): Promise<Buffer> }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    let head: string | undefined;
    const waiters: ((data: Buffer) => void)[] = [];
    const closedWaiters: (() => void)[] = [];
    socket.on('error', reject);
    socket.on('close', () => {
      if (head === undefined) resolve({ socket, head: buffer.toString('latin1'), next: () => Promise.resolve(Buffer.alloc(0)) });
      for (const w of closedWaiters) w();
    });
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (head === undefined) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        head = buffer.subarray(0, end).toString('latin1');
        buffer = buffer.subarray(end + 4);
        resolve({
          socket,
          head,
          next: () =>
            new Promise<Buffer>((done) => {
              if (buffer.length > 0) {
                const out = buffer;
                buffer = Buffer.alloc(0);
                done(out);
              } else {
                waiters.push(done);
                closedWaiters.push(() => done(Buffer.alloc(0)));
              }
            }),
        });
      } else if (waiters.length > 0) {
        const out = buffer;
        buffer = Buffer.alloc(0);
        waiters.shift()!(out);
      }
    });
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`,
    );
  });
}

let stable: Backend;
let candidate: Backend;
let gateway: PlaneUnderTest;
const stableSockets = new Set<net.Socket>();

beforeAll(async () => {
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  stable.server.on('upgrade', wsEchoServer('stable'));
  stable.server.on('connection', (socket: net.Socket) => {
    stableSockets.add(socket);
    socket.on('close', () => stableSockets.delete(socket));
  });
  candidate.server.on('upgrade', wsEchoServer('candidate'));
  gateway = await startPlane(canaryDocument([stable.url], [candidate.url]));
});

afterAll(async () => {
  await gateway?.close();
  await Promise.all([stable?.close(), candidate?.close()]);
});

describe('WebSocket and other upgrades', () => {
  it('routes the upgrade like a request and echoes frames both ways', async () => {
    for (const [extra, expected] of [
      ['', 'stable'],
      ['x-canary: 1\r\n', 'candidate'],
    ] as const) {
      const ws = await openWebSocket(gateway.port, '/chat', extra);
      expect(ws.head).toMatch(/^HTTP\/1\.1 101 /);
      expect(ws.head).toMatch(/sec-websocket-accept: /i);
      expect(ws.head).toMatch(new RegExp(`x-backend: ${expected}`));
      ws.socket.write(clientFrame('hello'));
      const frame = await ws.next();
      expect(frame.subarray(2).toString()).toBe(`${expected}:hello`);
      ws.socket.write(clientFrame('again'));
      expect((await ws.next()).subarray(2).toString()).toBe(`${expected}:again`);
      ws.socket.destroy();
    }
    await eventually(() => expect(gateway.plane.stats().openConnections).toBe(0));
  });

  it('forwards a non-101 reply and closes cleanly', async () => {
    const ws = await openWebSocket(gateway.port, '/refuse');
    expect(ws.head).toMatch(/^HTTP\/1\.1 403 Forbidden/);
    const rest = await ws.next();
    expect(rest.toString()).toBe('not ok');
    await eventually(() => expect(ws.socket.destroyed || ws.socket.readableEnded).toBe(true));
  });

  it('answers 502 and closes when the upstream resets or refuses', async () => {
    const reset = await openWebSocket(gateway.port, '/reset');
    expect(reset.head).toMatch(/^HTTP\/1\.1 502 /);
    const dead = await startPlane(canaryDocument([`http://127.0.0.1:${await deadPort()}`], [candidate.url]));
    try {
      const refused = await openWebSocket(dead.port, '/chat');
      expect(refused.head).toMatch(/^HTTP\/1\.1 502 /);
      // The candidate still gets its upgrades.
      const ok = await openWebSocket(dead.port, '/chat', 'x-canary: 1\r\n');
      expect(ok.head).toMatch(/^HTTP\/1\.1 101 /);
      ok.socket.destroy();
    } finally {
      await dead.close();
    }
  });

  it('sends a candidate upgrade to stable when the candidate cannot connect', async () => {
    const plane = await startPlane(canaryDocument([stable.url], [`http://127.0.0.1:${await deadPort()}`]));
    try {
      const ws = await openWebSocket(plane.port, '/chat', 'x-canary: 1\r\n');
      expect(ws.head).toMatch(/^HTTP\/1\.1 101 /);
      expect(ws.head).toMatch(/x-backend: stable/);
      ws.socket.destroy();
    } finally {
      await plane.close();
    }
  });

  it('closes the client cleanly when the upstream drops an open tunnel', async () => {
    const ws = await openWebSocket(gateway.port, '/chat');
    expect(ws.head).toMatch(/^HTTP\/1\.1 101 /);
    const closed = new Promise<void>((resolve) => ws.socket.on('close', () => resolve()));
    ws.socket.write(clientFrame('ping'));
    expect((await ws.next()).subarray(2).toString()).toBe('stable:ping');
    // Upgraded sockets are detached from the http.Server, so they are reached via 'connection'.
    for (const socket of stableSockets) socket.destroy();
    await closed;
    await eventually(() => expect(gateway.plane.stats().openConnections).toBe(0));
  });

  it('hands a minted anonymous id back on the 101, so the next connection keeps its version', async () => {
    const plane = await startPlane({
      ...canaryDocument([stable.url], [candidate.url]),
      identity: { anonymousCookie: {} },
      services: [{ name: 'web', stable: 'stable', release: { candidate: 'candidate', rules: [{ percentage: { percent: 50 } }] } }],
    });
    try {
      const first = await openWebSocket(plane.port, '/chat');
      expect(first.head).toMatch(/^HTTP\/1\.1 101 /);
      const cookie = /^set-cookie: (gg_anon=[^;\r\n]+)/im.exec(first.head)?.[1];
      expect(cookie).toBeDefined();
      const version = /x-backend: (\w+)/.exec(first.head)![1];
      first.socket.destroy();
      for (let i = 0; i < 5; i++) {
        const again = await openWebSocket(plane.port, '/chat', `cookie: ${cookie}\r\n`);
        expect(again.head).toMatch(new RegExp(`x-backend: ${version}`));
        expect(again.head).not.toMatch(/set-cookie/i);
        again.socket.destroy();
      }
    } finally {
      await plane.close();
    }
  });
});
