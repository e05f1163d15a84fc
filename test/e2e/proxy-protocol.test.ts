import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { certFactory, type CertFactory } from '../helpers/tls.js';

// The real gateway behind a (simulated) L4 load balancer: the test client plays the load balancer
// at 127.0.0.1 (in proxyProtocol.trustedFrom) and writes the PROXY header itself; 127.0.0.2 plays
// a peer that reaches the gateway directly.

const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

function v1(client: string, protocol: 'TCP4' | 'TCP6' = 'TCP4'): Buffer {
  return Buffer.from(`PROXY ${protocol} ${client} ${protocol === 'TCP4' ? '10.0.0.1' : '2001:db8::1'} 40123 443\r\n`);
}

/** A v2 PROXY/STREAM header over IPv4 (`client` dotted) or IPv6 (`client` as 16 hex bytes). */
function v2(client: string): Buffer {
  const isV4 = client.includes('.');
  const source = isV4 ? Buffer.from(client.split('.').map(Number)) : Buffer.from(client, 'hex');
  const block = Buffer.concat([source, Buffer.alloc(source.length), Buffer.from([0x9c, 0x40, 0x01, 0xbb])]);
  const fixed = Buffer.from([0x21, isV4 ? 0x11 : 0x21, 0, block.length]);
  return Buffer.concat([V2_SIGNATURE, fixed, block]);
}

interface Answer {
  readonly status: number;
  readonly backend: string;
  /** The headers the backend received. */
  readonly seen: Record<string, string>;
}

/** One request on a fresh connection that starts with `prefix` (from `localAddress`); rejects when the gateway closes it unanswered. */
function requestBehind(port: number, prefix: Buffer, options: { path?: string; headers?: Record<string, string>; localAddress?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port,
        path: options.path ?? '/',
        headers: { connection: 'close', ...options.headers },
        // The connection's first bytes are the header, as a load balancer sends them; then HTTP.
        createConnection: () => {
          const socket = net.connect({ port, host: '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
          if (prefix.length > 0) socket.write(prefix);
          return socket;
        },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => {
          const body = JSON.parse(text) as { headers: Record<string, string> };
          resolve({ status: response.statusCode ?? 0, backend: String(response.headers['x-backend']), seen: body.headers });
        });
      },
    );
    request.on('error', reject);
    request.end();
  });
}

const routing = (stable: Backend, candidate: Backend) => ({
  upstreams: { v1: { servers: [stable.url] }, v2: { servers: [candidate.url] } },
  services: [
    {
      name: 'app',
      stable: 'v1',
      release: { candidate: 'v2', state: 'canary', rules: [{ name: 'testers-network', cidr: { cidrs: ['203.0.113.0/24', '2001:db8:beef::/48'] } }] },
    },
  ],
});

async function withAdmin(gateway: GatewayProcess): Promise<string> {
  const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
  return `http://127.0.0.1:${String(line.port)}`;
}

async function metric(admin: string, outcome: string): Promise<number> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  const match = new RegExp(`^graygate_proxy_protocol_connections_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm').exec(text);
  return match ? Number(match[1]) : NaN;
}

// One process, and two workers sharing the listening socket through node:cluster.
describe.each([
  ['one process', 1],
  ['two workers', 2],
])('PROXY protocol through the real gateway (%s)', (_label, workers) => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let admin: string;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    gateway = await startGatewayProcess({
      workers,
      config: {
        log: { level: 'info' },
        admin: { listen: '127.0.0.1:0' },
        proxyProtocol: { trustedFrom: ['127.0.0.1/32'], headerTimeoutMs: 2_000 },
        // A CDN edge in front of the load balancer: its X-Forwarded-For is believed.
        trustedProxies: ['198.51.100.0/24'],
        ...routing(stable, candidate),
      },
    });
    admin = await withAdmin(gateway);
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('routes a v1 and a v2 header from the load balancer by the client they name (IPv4 and IPv6)', async () => {
    expect((await requestBehind(gateway.port, v1('203.0.113.9'))).backend).toBe('candidate');
    expect((await requestBehind(gateway.port, v1('192.0.2.9'))).backend).toBe('stable');
    expect((await requestBehind(gateway.port, v2('203.0.113.10'))).backend).toBe('candidate');
    expect((await requestBehind(gateway.port, v2('192.0.2.10'))).backend).toBe('stable');
    expect((await requestBehind(gateway.port, v1('2001:db8:beef::7', 'TCP6'))).backend).toBe('candidate');
    expect((await requestBehind(gateway.port, v2('20010db8beef00000000000000000008'))).backend).toBe('candidate');
    expect((await requestBehind(gateway.port, v2('20010db8cafe00000000000000000008'))).backend).toBe('stable');
  });

  it('X-Forwarded-For seen by the backend carries the client, not the load balancer; a client\'s own is replaced', async () => {
    const plain = await requestBehind(gateway.port, v2('203.0.113.11'));
    expect(plain.seen['x-forwarded-for']).toBe('203.0.113.11');
    // The client is not a trusted proxy: what it claims is dropped (it would otherwise pick its own version).
    const spoofed = await requestBehind(gateway.port, v1('192.0.2.44'), { headers: { 'x-forwarded-for': '203.0.113.1' } });
    expect(spoofed.backend).toBe('stable');
    expect(spoofed.seen['x-forwarded-for']).toBe('192.0.2.44');
    // A client that is a trusted proxy (a CDN edge) is appended to, and its caller decides.
    const viaEdge = await requestBehind(gateway.port, v1('198.51.100.5'), { headers: { 'x-forwarded-for': '203.0.113.50' } });
    expect(viaEdge.backend).toBe('candidate');
    expect(viaEdge.seen['x-forwarded-for']).toBe('203.0.113.50, 198.51.100.5');
  });

  it('closes a peer outside trustedFrom that sends a header, serves it as itself without one, and closes the load balancer without one', async () => {
    const before = { untrusted: await metric(admin, 'untrusted'), missing: await metric(admin, 'missing') };
    await expect(requestBehind(gateway.port, v1('203.0.113.9'), { localAddress: '127.0.0.2' })).rejects.toMatchObject({ code: 'ECONNRESET' });
    await expect(requestBehind(gateway.port, v2('203.0.113.9'), { localAddress: '127.0.0.2' })).rejects.toMatchObject({ code: 'ECONNRESET' });
    const direct = await requestBehind(gateway.port, Buffer.alloc(0), { localAddress: '127.0.0.2' });
    expect(direct.backend).toBe('stable');
    expect(direct.seen['x-forwarded-for']).toBe('127.0.0.2');
    await expect(requestBehind(gateway.port, Buffer.alloc(0))).rejects.toMatchObject({ code: 'ECONNRESET' });
    // Counted (summed over workers), and the gateway still serves.
    await eventually(async () => {
      expect(await metric(admin, 'untrusted')).toBe(before.untrusted + 2);
      expect(await metric(admin, 'missing')).toBe(before.missing + 1);
      expect(await metric(admin, 'proxied')).toBeGreaterThanOrEqual(10);
    });
    expect((await requestBehind(gateway.port, v1('203.0.113.9'))).backend).toBe('candidate');
  });

  it('drains on SIGTERM like any listener: exits 0, and takes no new connection', async () => {
    expect(await gateway.stop()).toBe(0);
    await expect(requestBehind(gateway.port, v1('203.0.113.9'))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});

/** One HTTPS request on a fresh connection whose first bytes are `prefix`, then the TLS handshake. */
function httpsRequestBehind(port: number, prefix: Buffer, ca: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const raw = net.connect({ port, host: '127.0.0.1' }, () => {
      raw.write(prefix);
      const secure = tls.connect({ socket: raw, servername: 'shop.test', ca, ALPNProtocols: ['http/1.1'] });
      const request = http.request({ createConnection: () => secure, path: '/', headers: { host: 'shop.test', connection: 'close' } }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => {
          const body = JSON.parse(text) as { headers: Record<string, string> };
          resolve({ status: response.statusCode ?? 0, backend: String(response.headers['x-backend']), seen: body.headers });
        });
      });
      request.on('error', reject);
      request.end();
    });
    raw.on('error', reject);
  });
}

describe('PROXY protocol in front of the TLS listener', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let factory: CertFactory;
  let pem: string;
  let port: number;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    factory = certFactory();
    const certificate = factory.cert('shop', { names: ['shop.test'] });
    pem = certificate.pem;
    gateway = await startGatewayProcess({
      config: {
        listen: 'off',
        tls: { listen: '127.0.0.1:0', certificates: [{ cert: certificate.cert, key: certificate.key }] },
        proxyProtocol: { trustedFrom: ['127.0.0.1/32'], headerTimeoutMs: 2_000 },
        ...routing(stable, candidate),
      },
    });
    const line = gateway.logs().find((entry) => entry.event === 'listening') as { tls?: { port: number } } | undefined;
    port = line!.tls!.port;
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
    factory?.remove();
  });

  it('reads the header before the handshake: the client it names is routed and forwarded, over HTTPS', async () => {
    const tester = await httpsRequestBehind(port, v2('203.0.113.12'), pem);
    expect(tester).toMatchObject({ status: 200, backend: 'candidate' });
    expect(tester.seen['x-forwarded-for']).toBe('203.0.113.12');
    expect(tester.seen['x-forwarded-proto']).toBe('https');
    const other = await httpsRequestBehind(port, v1('192.0.2.12'), pem);
    expect(other).toMatchObject({ status: 200, backend: 'stable' });
    expect(other.seen['x-forwarded-for']).toBe('192.0.2.12');
  });
});

describe('PROXY protocol on Bun', () => {
  it('start refuses the setting, naming it, instead of serving without it', async () => {
    const bun = fileURLToPath(new URL('../../node_modules/.bin/bun', import.meta.url));
    const attempt = startGatewayProcess({
      runtime: bun,
      workers: 1,
      config: { proxyProtocol: { trustedFrom: ['10.0.0.0/8'] }, upstreams: { v1: { servers: ['http://127.0.0.1:9'] } }, services: [{ name: 'app', stable: 'v1' }] },
    });
    await expect(attempt).rejects.toThrow(/exited \(1\) before listening[\s\S]*graygate: cannot start: .*graygate\.yaml: proxyProtocol: not supported on the Bun runtime.*\(GG_CONFIG_INVALID\)/);
  });
});
