import { existsSync, renameSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort, startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { rawExchange, send } from './harness.js';

// The proxy behaviours of the node suite, against the real gateway process run by Bun (the Bun
// data plane: Bun.serve + Bun's fetch). `bun` is an optional dependency; README "Bun data plane"
// lists where it differs from the Node adapter, and the last tests here pin those differences.
const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');

describe('the Bun data plane, through the real gateway process under Bun', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  const releases: (() => void)[] = [];

  const document = (canaryValue: string, candidateUrl = candidate.url) => ({
    log: { level: 'info' },
    upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidateUrl] } },
    services: [
      { name: 'web', stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [{ header: { name: 'x-canary', equals: canaryValue } }] } },
    ],
  });

  const backend = (name: string) =>
    startBackend(name, (req, res) => {
      if (req.url === '/hop') {
        req.resume();
        res.writeHead(200, { connection: 'x-secret', 'x-secret': 's', 'x-kept': 'yes', 'proxy-authenticate': 'Basic', 'content-length': 2 });
        res.end('ok');
        return true;
      }
      if (req.url === '/echo') {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          res.writeHead(200, { 'x-seen-te': String(req.headers['transfer-encoding']), 'x-seen-length': String(req.headers['content-length']) });
          res.end(Buffer.concat(chunks));
        });
        return true;
      }
      if (req.url === '/drip') {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first,');
        releases.push(() => res.end('second'));
        return true;
      }
      if (req.url === '/trailers') {
        req.resume();
        res.writeHead(200, { trailer: 'x-checksum' });
        res.write('body');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end();
        return true;
      }
      return false;
    });

  beforeAll(async () => {
    expect(existsSync(bun), `${bun} (npm install installs bun as an optional dependency)`).toBe(true);
    [stable, candidate] = await Promise.all([backend('stable'), backend('candidate')]);
    gateway = await startGatewayProcess({ config: document('1'), args: ['--workers', '1'], runtime: bun });
  });
  afterAll(async () => {
    await gateway?.stop('SIGKILL');
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('runs on Bun', async () => {
    expect((await gateway.waitForLog((line) => line.event === 'listening')).runtime).toBe('bun');
  });

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
    writeFileSync(`${gateway.configPath}.tmp`, stringify({ listen: '127.0.0.1:0', ...document('2') }));
    renameSync(`${gateway.configPath}.tmp`, gateway.configPath);
    await eventually(async () => expect((await send(gateway.url, { headers: { 'x-canary': '2' } })).json().version).toBe('candidate'), { withinMs: 3_000 });
    expect((await send(gateway.url, { headers: { 'x-canary': '1' } })).json().version).toBe('stable');
  });

  it('strips hop-by-hop headers both ways and writes X-Forwarded-* fresh for an untrusted peer', async () => {
    const before = stable.seen.length;
    await send(gateway.url, {
      path: '/strip',
      headers: { connection: 'keep-alive, x-private', 'x-private': 'secret', te: 'trailers', 'proxy-authorization': 'Basic abc', 'x-normal': 'kept', 'x-forwarded-for': '6.6.6.6', forwarded: 'for=6.6.6.6', host: 'shop.example:8080' },
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

  it('falls back to stable when the candidate refuses connections, and answers 502 GG_UPSTREAM_CONNECT when stable does', async () => {
    const dead = `http://127.0.0.1:${await deadPort()}`;
    writeFileSync(`${gateway.configPath}.tmp`, stringify({ listen: '127.0.0.1:0', ...document('3', dead) }));
    renameSync(`${gateway.configPath}.tmp`, gateway.configPath);
    await eventually(async () => expect((await send(gateway.url, { headers: { 'x-canary': '3' } })).json().version).toBe('stable'), { withinMs: 3_000 });
    const stableDead = await startGatewayProcess({
      config: { upstreams: { v1: { servers: [dead] } }, services: [{ name: 'app', stable: 'v1' }] },
      args: ['--workers', '1'],
      runtime: bun,
    });
    try {
      const reply = await send(stableDead.url, { path: '/x' });
      expect(reply.status).toBe(502);
      expect(reply.json<{ error: { code: string } }>().error.code).toBe('GG_UPSTREAM_CONNECT');
    } finally {
      await stableDead.stop('SIGTERM');
    }
  });

  it('refuses ambiguous framing (Content-Length with Transfer-Encoding) with 400 and forwards nothing', async () => {
    const before = stable.seen.length + candidate.seen.length;
    const answer = await rawExchange(gateway.port, 'POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(stable.seen.length + candidate.seen.length).toBe(before);
  });

  // ---- where Bun differs from the Node adapter (README "Bun data plane") ----

  it('differs: response trailers are not forwarded (Bun.serve cannot send them); the body is', async () => {
    const reply = await send(gateway.url, { path: '/trailers' });
    expect(reply.body.toString()).toBe('body');
    expect(reply.trailers['x-checksum']).toBeUndefined();
  });

  it('differs: a WebSocket upgrade is refused with 400 GG_BAD_REQUEST instead of being bridged', async () => {
    const reply = await send(gateway.url, { path: '/ws', headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' } });
    expect(reply.status).toBe(400);
    expect(reply.json<{ error: { code: string } }>().error.code).toBe('GG_BAD_REQUEST');
  });

  it('drains on SIGTERM: a request in flight completes, then the process exits 0', async () => {
    const inFlight = send(gateway.url, { path: '/drip' });
    await eventually(() => expect(releases).toHaveLength(1));
    const exited = gateway.stop('SIGTERM');
    await gateway.waitForLog((line) => line.event === 'draining');
    releases.shift()!();
    const reply = await inFlight;
    expect([reply.status, reply.body.toString()]).toEqual([200, 'first,second']);
    expect(await exited).toBe(0);
  });
});
