import { WebSocket } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { send, startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';
import { serveWebSockets, type WsUpstream } from '../helpers/ws-backend.js';

// WebSocket through `graygate start --data-plane openresty`: the upgrade is routed by the rules
// (a header sends a caller to the candidate), switched by nginx, and carries messages both ways
// and a close from either end, as through the Node data plane.

interface Client {
  readonly ws: WebSocket;
  /** The next message (text as a string, binary as a Buffer). */
  next(): Promise<string | Buffer>;
  readonly closed: Promise<{ code: number; reason: string }>;
}

/** A real WebSocket client (undici's, the one Node ships), opened through the gateway. */
async function connect(url: string, headers: Record<string, string> = {}): Promise<Client> {
  const ws = new WebSocket(url, { headers });
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
  return { ws, closed, next: () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((resolve) => waiters.push(resolve))) };
}

describe('WebSocket through the OpenResty data plane', () => {
  let stable: Backend;
  let candidate: Backend;
  let upstreams: Record<'stable' | 'candidate', WsUpstream>;
  let gateway: OpenRestyGateway;
  let wsUrl: string;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    upstreams = { stable: serveWebSockets(stable), candidate: serveWebSockets(candidate) };
    gateway = await startOpenRestyGateway({
      config: {
        upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
        services: [{ name: 'app', stable: 'app-v1', release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals: '1' } }] } }],
      },
      workers: 2,
    });
    wsUrl = gateway.url.replace(/^http/, 'ws');
    // nginx serves once graygate delivered the routing to it.
    await eventually(async () => expect((await send(gateway.url)).version).toBe('stable'));
  }, 180_000);

  afterAll(async () => {
    await gateway?.stop();
    await Promise.allSettled([stable?.close(), candidate?.close()]);
  });

  it('upgrades to stable: messages both ways, and a close from the client reaches the server with its code and reason', async () => {
    const before = upstreams.stable.handshakes.length;
    const client = await connect(`${wsUrl}/chat?room=1`);
    expect(upstreams.stable.handshakes.length).toBe(before + 1);
    expect(upstreams.candidate.handshakes.filter((h) => h.url.startsWith('/chat'))).toHaveLength(0);
    const handshake = upstreams.stable.handshakes.at(-1)!;
    expect(handshake.url).toBe('/chat?room=1');
    expect(handshake.headers.upgrade).toBe('websocket');
    expect(String(handshake.headers.connection).toLowerCase()).toContain('upgrade');
    client.ws.send('hello');
    expect(await client.next()).toBe('stable:hello');
    // Binary both ways, and a burst from the server larger than nginx's proxy buffers.
    const bytes = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));
    client.ws.send(bytes);
    expect(Buffer.compare((await client.next()) as Buffer, bytes)).toBe(0);
    client.ws.send('flood:3');
    for (let i = 0; i < 3; i++) expect(((await client.next()) as Buffer).length).toBe(64 * 1024);
    const closes = upstreams.stable.closes.length;
    client.ws.close(1000, 'bye');
    expect(await client.closed).toMatchObject({ code: 1000 });
    await eventually(() => expect(upstreams.stable.closes.slice(closes)).toEqual([{ code: 1000, reason: 'bye' }]));
    await eventually(() => expect(upstreams.stable.sockets.size).toBe(0));
  });

  it('upgrades to the candidate for a caller the rules pick, and a close from the server reaches the client', async () => {
    const client = await connect(`${wsUrl}/chat`, { 'x-canary': '1' });
    expect(upstreams.candidate.handshakes.at(-1)!.url).toBe('/chat');
    client.ws.send('hello');
    expect(await client.next()).toBe('candidate:hello');
    client.ws.send('close:4001:going away');
    expect(await client.closed).toEqual({ code: 4001, reason: 'going away' });
    await eventually(() => expect(upstreams.candidate.sockets.size).toBe(0));
  });

  it('keeps several upgraded connections apart, each on the version its caller gets', async () => {
    const clients = await Promise.all([connect(`${wsUrl}/a`), connect(`${wsUrl}/b`, { 'x-canary': '1' }), connect(`${wsUrl}/c`)]);
    clients.forEach((client, i) => client.ws.send(`m${i}`));
    expect(await Promise.all(clients.map((client) => client.next()))).toEqual(['stable:m0', 'candidate:m1', 'stable:m2']);
    for (const client of clients) client.ws.close(1000, 'done');
    await Promise.all(clients.map((client) => client.closed));
    await eventually(() => expect(upstreams.stable.sockets.size + upstreams.candidate.sockets.size).toBe(0));
  });
});
