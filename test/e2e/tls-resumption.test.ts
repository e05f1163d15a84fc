import { copyFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { certFactory, servedCertificate, type CertFactory } from '../helpers/tls.js';

// TLS session resumption under --workers: node:cluster hands connections to the workers in turn,
// so a client's next connection usually lands on another worker than the one that gave it its
// session ticket. Every worker must be able to open every worker's tickets, also when the TLS
// listener sits behind the PROXY protocol front (where node:cluster's own sharing does not apply)
// and for every certificate chosen by SNI.

const CONNECTIONS = 12;

interface Outcome {
  readonly resumed: boolean;
  readonly status: string;
}

/**
 * One HTTP/1.1 request on a new TLS connection, offering `session` for resumption; `proxied`
 * writes a PROXY v1 header first, as the load balancer would. Calls `onSession` with each ticket
 * the server sends.
 */
function oneConnection(port: number, servername: string, session: Buffer | undefined, proxied: boolean, onSession: (ticket: Buffer) => void): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ port, host: '127.0.0.1' });
    if (proxied) raw.write('PROXY TCP4 198.51.100.7 10.0.0.1 40123 443\r\n');
    let resumed = false;
    const socket = tls.connect({ socket: raw, servername, rejectUnauthorized: false, ...(session ? { session } : {}) }, () => {
      // Read now: once the connection is closed the TLS state is gone.
      resumed = socket.isSessionReused();
      socket.write(`GET / HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`);
    });
    socket.on('session', onSession);
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => resolve({ resumed, status: text.slice(0, 12) }));
  });
}

/** `count` connections one after another, each offering the newest ticket: which resumed. */
async function resumptions(port: number, servername: string, proxied: boolean, count = CONNECTIONS): Promise<Outcome[]> {
  let ticket: Buffer | undefined;
  const outcomes: Outcome[] = [];
  for (let i = 0; i < count; i++) outcomes.push(await oneConnection(port, servername, ticket, proxied, (next) => (ticket = next)));
  return outcomes;
}

let factory: CertFactory;
let backend: Backend;
let shop: { cert: string; key: string };
let admin: { cert: string; key: string };

beforeAll(async () => {
  factory = certFactory();
  const pair = ({ cert, key }: { cert: string; key: string }) => ({ cert, key });
  shop = pair(factory.cert('shop', { names: ['shop.test'] }));
  admin = pair(factory.cert('admin', { names: ['admin.test'] }));
  backend = await startBackend('stable');
});

afterAll(async () => {
  await backend?.close();
  factory?.remove();
});

const routing = () => ({ upstreams: { stable: { servers: [backend.url] } }, services: [{ name: 'app', stable: 'stable' }] });

function tlsPort(gateway: GatewayProcess): number {
  const line = gateway.logs().find((entry) => entry.event === 'listening') as { tls?: { port: number } } | undefined;
  if (!line?.tls) throw new Error(`no tls address in the listening line:\n${gateway.output().slice(-2_000)}`);
  return line.tls.port;
}

describe.each([
  { front: 'behind the PROXY protocol front', proxied: true },
  { front: 'listening itself', proxied: false },
])('TLS session resumption with two workers, $front', ({ proxied }) => {
  let gateway: GatewayProcess;
  beforeAll(async () => {
    gateway = await startGatewayProcess({
      workers: 2,
      config: {
        listen: 'off',
        tls: { listen: '127.0.0.1:0', certificates: [shop, admin] },
        ...(proxied ? { proxyProtocol: { trustedFrom: ['127.0.0.1/32'], headerTimeoutMs: 5_000 } } : {}),
        ...routing(),
      },
    });
  });
  afterAll(async () => {
    await gateway?.kill();
  });

  it('every connection after the first resumes, whichever worker takes it, for each certificate', async () => {
    const port = tlsPort(gateway);
    for (const servername of ['shop.test', 'admin.test']) {
      const outcomes = await resumptions(port, servername, proxied);
      expect(outcomes.every((outcome) => outcome.status === 'HTTP/1.1 200')).toBe(true);
      // The first connection has no ticket to offer; every later one must be resumed.
      expect(outcomes.map((outcome) => outcome.resumed)).toEqual([false, ...Array<boolean>(CONNECTIONS - 1).fill(true)]);
    }
  });
});

describe('TLS session resumption across a certificate reload', () => {
  let gateway: GatewayProcess;
  let live: { cert: string; key: string };
  let renewed: { cert: string; key: string };
  beforeAll(async () => {
    live = { cert: path.join(factory.dir, 'live.pem'), key: path.join(factory.dir, 'live.key') };
    copyFileSync(shop.cert, live.cert);
    copyFileSync(shop.key, live.key);
    const next = factory.cert('shop-renewed', { names: ['shop.test'] });
    renewed = { cert: next.cert, key: next.key };
    gateway = await startGatewayProcess({ config: { listen: 'off', tls: { listen: '127.0.0.1:0', certificates: [live], watchMs: 200 }, ...routing() } });
  });
  afterAll(async () => {
    await gateway?.kill();
  });

  it('a ticket issued before a renewal still resumes after it', async () => {
    const port = tlsPort(gateway);
    let ticket: Buffer | undefined;
    expect((await oneConnection(port, 'shop.test', undefined, false, (next) => (ticket = next))).resumed).toBe(false);
    const before = (await servedCertificate(port, 'shop.test')).serialNumber;
    copyFileSync(renewed.key, live.key);
    copyFileSync(renewed.cert, live.cert);
    await eventually(async () => expect((await servedCertificate(port, 'shop.test')).serialNumber).not.toBe(before));
    const after = await oneConnection(port, 'shop.test', ticket, false, () => undefined);
    expect(after).toEqual({ resumed: true, status: 'HTTP/1.1 200' });
  });
});
