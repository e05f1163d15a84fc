import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseSettings } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { silentLogger } from '../../src/observe/log.js';
import { formatIpv6, parseProxyHeader, V1_MAX_BYTES, V2_MAX_BYTES, V2_SIGNATURE } from '../../src/dataplane/node/proxy-header.js';
import { proxiedAddressOf, ProxyProtocolFront, type ProxyProtocolOutcome } from '../../src/dataplane/node/proxy-protocol.js';
import { eventually } from '../helpers/eventually.js';

// ---- building headers, independently of the parser ---------------------------------------------

function v1(protocol: 'TCP4' | 'TCP6', source: string, destination: string, sourcePort: number, destinationPort: number): Buffer {
  return Buffer.from(`PROXY ${protocol} ${source} ${destination} ${sourcePort} ${destinationPort}\r\n`, 'latin1');
}

/** A v2 header: command 0 LOCAL / 1 PROXY, family 0 UNSPEC / 1 INET / 2 INET6, address block, TLVs. */
function v2(command: 0 | 1, family: 0 | 1 | 2, addresses: Buffer, tlvs: Buffer = Buffer.alloc(0)): Buffer {
  const fixed = Buffer.alloc(4);
  fixed[0] = 0x20 | command;
  fixed[1] = (family << 4) | (family === 0 ? 0 : 1);
  fixed.writeUInt16BE(addresses.length + tlvs.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, addresses, tlvs]);
}

function addressBlock(source: Buffer, destination: Buffer, sourcePort: number, destinationPort: number): Buffer {
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(sourcePort, 0);
  ports.writeUInt16BE(destinationPort, 2);
  return Buffer.concat([source, destination, ports]);
}

/** One TLV: type, 16-bit length, value (e.g. AWS's 0xEA VPC endpoint id). */
function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

/** An IP in one comparable form (WHATWG URL's IPv6 serialisation; IPv4 as its mapped IPv6). */
function canonicalIp(ip: string): string {
  return new URL(`http://[${net.isIPv4(ip) ? `::ffff:${ip}` : ip}]`).hostname;
}

/** 16 bytes as eight uncompressed hex groups: no compression logic shared with the parser. */
function uncompressedIpv6(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(':');
}

const port = fc.integer({ min: 0, max: 65_535 });
const bytes4 = fc.uint8Array({ minLength: 4, maxLength: 4 });
const bytes16 = fc.uint8Array({ minLength: 16, maxLength: 16 });
const afterHeader = fc.uint8Array({ maxLength: 64 });
const tlvs = fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 40 })), { maxLength: 4 }).map((list) => Buffer.concat(list.map(([type, value]) => tlv(type, Buffer.from(value)))));

interface ValidHeader {
  readonly bytes: Buffer;
  /** The client address it names; undefined when it says to use the connection's own. */
  readonly client: string | undefined;
  readonly clientPort: number | undefined;
}

const validHeader: fc.Arbitrary<ValidHeader> = fc.oneof(
  fc.tuple(fc.ipV4(), fc.ipV4(), port, port).map(([s, d, sp, dp]) => ({ bytes: v1('TCP4', s, d, sp, dp), client: s, clientPort: sp })),
  fc.tuple(fc.ipV6(), fc.ipV6(), port, port).map(([s, d, sp, dp]) => ({ bytes: v1('TCP6', s, d, sp, dp), client: s, clientPort: sp })),
  fc.constant({ bytes: Buffer.from('PROXY UNKNOWN\r\n'), client: undefined, clientPort: undefined }),
  fc.tuple(bytes4, bytes4, port, port, tlvs).map(([s, d, sp, dp, extra]) => ({
    bytes: v2(1, 1, addressBlock(Buffer.from(s), Buffer.from(d), sp, dp), extra),
    client: Array.from(s).join('.'),
    clientPort: sp,
  })),
  fc.tuple(bytes16, bytes16, port, port, tlvs).map(([s, d, sp, dp, extra]) => ({
    bytes: v2(1, 2, addressBlock(Buffer.from(s), Buffer.from(d), sp, dp), extra),
    client: uncompressedIpv6(s),
    clientPort: sp,
  })),
  fc.tuple(bytes4, bytes4, port, port, tlvs).map(([s, d, sp, dp, extra]) => ({ bytes: v2(0, 1, addressBlock(Buffer.from(s), Buffer.from(d), sp, dp), extra), client: undefined, clientPort: undefined })),
  tlvs.map((extra) => ({ bytes: v2(1, 0, Buffer.alloc(0), extra), client: undefined, clientPort: undefined })),
);

describe('PROXY header parser', () => {
  it('any valid v1 or v2 header round-trips to its client address, port and length, whatever follows it', () => {
    fc.assert(
      fc.property(validHeader, afterHeader, (header, rest) => {
        const parsed = parseProxyHeader(Buffer.concat([header.bytes, rest]));
        expect(parsed.kind).toBe('header');
        if (parsed.kind !== 'header') return;
        expect(parsed.length).toBe(header.bytes.length);
        if (header.client === undefined) expect(parsed.source).toBeUndefined();
        else {
          expect(parsed.source).toBeDefined();
          expect(canonicalIp(parsed.source!.address)).toBe(canonicalIp(header.client));
          expect(parsed.source!.port).toBe(header.clientPort);
          // One form for one address: IPv4-mapped IPv6 comes out as plain IPv4, as sockets' peers do.
          expect(parsed.source!.address.startsWith('::ffff:') && parsed.source!.address.includes('.')).toBe(false);
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it('every proper prefix of a valid header asks for more bytes (never refuses, never throws)', () => {
    fc.assert(
      fc.property(validHeader, fc.nat(), (header, cut) => {
        const k = cut % header.bytes.length;
        expect(parseProxyHeader(header.bytes.subarray(0, k)).kind).toBe('incomplete');
      }),
      { numRuns: 2_000 },
    );
  });

  it('bytes that cannot start a header (an HTTP request, a TLS hello, anything else) are told apart at once', () => {
    const notAHeaderStart = fc.uint8Array({ minLength: 1, maxLength: 200 }).filter((b) => b[0] !== 0x50 /* P */ && b[0] !== 0x0d);
    fc.assert(
      fc.property(notAHeaderStart, (data) => {
        expect(parseProxyHeader(Buffer.from(data)).kind).toBe('absent');
      }),
    );
    for (const start of ['GET / HTTP/1.1\r\n', 'POST /x HTTP/1.1\r\n', 'PUT /x HTTP/1.1\r\n', 'PATCH /x HTTP/1.1\r\n', '\r\nGET / HTTP/1.1\r\n', '\x16\x03\x01\x02\x00']) {
      expect(parseProxyHeader(Buffer.from(start, 'latin1')).kind, JSON.stringify(start)).toBe('absent');
    }
  });

  it('garbage is refused, within the length bounds, and arbitrary bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.constantFrom(Buffer.alloc(0), Buffer.from('PROXY '), V2_SIGNATURE), (data, prefix) => {
        const parsed = parseProxyHeader(Buffer.concat([prefix, data]));
        expect(['incomplete', 'absent', 'invalid', 'header']).toContain(parsed.kind);
      }),
      { numRuns: 3_000 },
    );
    // v1: printable text without a CRLF is refused once it is longer than the spec allows.
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'ABCXYZ0123456789.: '), minLength: V1_MAX_BYTES, maxLength: 300 }), (text) => {
        expect(parseProxyHeader(Buffer.from(`PROXY ${text}`, 'latin1')).kind).toBe('invalid');
      }),
    );
    // v1: a control byte, a wrong protocol, bad addresses, bad ports.
    for (const line of [
      'PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n',
      'PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n',
      'PROXY TCP4 ::1 5.6.7.8 1 2\r\n',
      'PROXY TCP6 1.2.3.4 ::1 1 2\r\n',
      'PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n',
      'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n',
      'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r',
    ]) {
      expect(parseProxyHeader(Buffer.from(line, 'latin1')).kind, JSON.stringify(line)).toBe('invalid');
    }
    // v2: a wrong version, an unknown command or family, an address block too short, too long a header.
    const good = v2(1, 1, addressBlock(Buffer.from([1, 2, 3, 4]), Buffer.from([5, 6, 7, 8]), 1, 2));
    const mutate = (at: number, value: number) => {
      const copy = Buffer.from(good);
      copy[at] = value;
      return copy;
    };
    for (const bad of [mutate(12, 0x11), mutate(12, 0x22), mutate(13, 0x41), mutate(13, 0x13), v2(1, 1, Buffer.alloc(11)), v2(1, 2, Buffer.alloc(35))]) {
      expect(parseProxyHeader(bad).kind).toBe('invalid');
    }
    const huge = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0xff, 0xff])]);
    expect(parseProxyHeader(huge)).toMatchObject({ kind: 'invalid' });
    expect(parseProxyHeader(v2(1, 1, addressBlock(Buffer.alloc(4), Buffer.alloc(4), 1, 2), Buffer.alloc(V2_MAX_BYTES - 16 - 12))).kind).toBe('header');
    expect(parseProxyHeader(v2(1, 1, addressBlock(Buffer.alloc(4), Buffer.alloc(4), 1, 2), Buffer.alloc(V2_MAX_BYTES - 16 - 11))).kind).toBe('invalid');
  });

  it('IPv6 text is RFC 5952: the same address as its bytes, and the shortest form', () => {
    fc.assert(
      fc.property(bytes16, (raw) => {
        const text = formatIpv6(Buffer.from(raw), 0);
        expect(canonicalIp(text)).toBe(canonicalIp(uncompressedIpv6(raw)));
        // WHATWG's serialisation is RFC 5952's, except that it never writes embedded IPv4.
        if (!text.includes('.')) expect(text).toBe(canonicalIp(text).slice(1, -1));
      }),
      { numRuns: 2_000 },
    );
  });
});

// ---- the front, over real sockets ----------------------------------------------------------------

/** What a test server answers: the method, path and body it saw, and the address the front carried. */
function answer(req: http.IncomingMessage, res: http.ServerResponse): void {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (chunk: string) => (body += chunk));
  req.on('end', () => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ method: req.method, url: req.url, body, client: proxiedAddressOf(req.socket) ?? null, peer: req.socket.remoteAddress }));
  });
}

interface Fronted {
  readonly port: number;
  readonly outcomes: ProxyProtocolOutcome[];
  readonly front: ProxyProtocolFront;
  readonly server: net.Server;
}

const opened: { close(): void }[] = [];
afterEach(() => {
  for (const item of opened.splice(0)) item.close();
});

async function fronted(server: net.Server, headerTimeoutMs = 30_000): Promise<Fronted> {
  const outcomes: ProxyProtocolOutcome[] = [];
  const front = new ProxyProtocolFront(server, {
    settings: { trustedFrom: ['127.0.0.1/32', '::1/128'], headerTimeoutMs },
    logger: silentLogger(),
    onOutcome: (outcome) => outcomes.push(outcome),
  });
  const address = await front.listen(0, '127.0.0.1');
  opened.push({ close: () => front.close() });
  if (server instanceof http.Server || server instanceof https.Server) opened.push({ close: () => server.closeAllConnections() });
  return { port: address.port, outcomes, front, server };
}

/** Connects (from `localAddress`), writes `bytes`, and collects everything until the server closes. */
function exchange(portNumber: number, bytes: Buffer | string, options: { localAddress?: string; endAfterWrite?: boolean } = {}): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port: portNumber, host: '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', (error: Error & { code?: string }) => (error.code === 'ECONNRESET' ? undefined : reject(error)));
    socket.on('close', () => resolve({ text, closedByServer: true }));
    socket.write(bytes);
    if (options.endAfterWrite) socket.end();
  });
}

/** One request with `Connection: close` behind `prefix`, over a raw socket; the JSON body, or undefined when closed without an answer. */
async function requestBehind(portNumber: number, prefix: Buffer, pathName = '/', options: { localAddress?: string } = {}): Promise<Record<string, unknown> | undefined> {
  const { text } = await exchange(portNumber, Buffer.concat([prefix, Buffer.from(`GET ${pathName} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`)]), options);
  if (text.length === 0) return undefined;
  return JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

describe('PROXY protocol front', () => {
  let certDir: string;
  let key: Buffer;
  let cert: Buffer;

  beforeAll(() => {
    certDir = mkdtempSync(path.join(tmpdir(), 'graygate-pp-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(certDir, 'key.pem'), '-out', path.join(certDir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    key = readFileSync(path.join(certDir, 'key.pem'));
    cert = readFileSync(path.join(certDir, 'cert.pem'));
  });
  afterAll(() => rmSync(certDir, { recursive: true, force: true }));

  it('http: a trusted v1 header names the client of every request on the connection; pipelined requests and a split body arrive whole', async () => {
    const { port: p, outcomes } = await fronted(http.createServer(answer));
    const socket = net.connect(p, '127.0.0.1');
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (text += chunk));
    // Header, a whole request and half of the next in one write: the front must hand on every byte after the header.
    socket.write('PROXY TCP4 203.0.113.7 10.0.0.1 40000 80\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\nPOST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhel');
    await eventually(() => expect(text).toContain('"url":"/a"'));
    socket.write('lo');
    await eventually(() => expect(text).toContain('"body":"hello"'));
    socket.destroy();
    const bodies = text.split('\r\n\r\n').filter((part) => part.startsWith('{')).map((part) => JSON.parse(part.slice(0, part.lastIndexOf('}') + 1)) as Record<string, unknown>);
    expect(bodies.map((b) => [b.url, b.client])).toEqual([
      ['/a', '203.0.113.7'],
      ['/b', '203.0.113.7'],
    ]);
    // The socket itself still reports the load balancer: only requests are told the client.
    expect(bodies[0]!.peer).toBe('127.0.0.1');
    expect(outcomes).toEqual(['proxied']);
  });

  it('http: a trusted v2 header (IPv6, with TLVs), and a LOCAL one (a health check) that keeps the connection\'s address', async () => {
    const { port: p, outcomes } = await fronted(http.createServer(answer));
    const client = Buffer.from('20010db8000000000000000000000042', 'hex');
    const header = v2(1, 2, addressBlock(client, Buffer.alloc(16), 5555, 443), tlv(0xea, Buffer.from('\x01vpce-0123456789abcdef')));
    expect(await requestBehind(p, header, '/v2')).toMatchObject({ url: '/v2', client: '2001:db8::42' });
    expect(await requestBehind(p, v2(0, 0, Buffer.alloc(0)), '/local')).toMatchObject({ url: '/local', client: null, peer: '127.0.0.1' });
    expect(outcomes).toEqual(['proxied', 'local']);
  });

  it('https: the header comes before the TLS handshake; the request sees the client through the TLS socket', async () => {
    const { port: p, outcomes } = await fronted(https.createServer({ key, cert }, answer));
    for (const [header, client] of [
      [v1('TCP4', '198.51.100.23', '10.0.0.1', 1234, 443), '198.51.100.23'],
      [v2(1, 1, addressBlock(Buffer.from([192, 0, 2, 9]), Buffer.from([10, 0, 0, 1]), 4321, 443)), '192.0.2.9'],
    ] as const) {
      const body = await new Promise<string>((resolve, reject) => {
        const request = https.request(
          {
            host: '127.0.0.1',
            port: p,
            path: '/secure',
            rejectUnauthorized: false,
            // The raw TCP connection carries the header first, then TLS runs over it.
            // (No agent: an agent would dial its own connection and ignore this one.)
            createConnection: (_options, ready) => {
              const raw = net.connect(p, '127.0.0.1', () => {
                raw.write(header);
                ready(null, tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'localhost' }));
              });
              raw.on('error', (error) => ready(error, raw));
              return undefined;
            },
          },
          (response) => {
            let text = '';
            response.setEncoding('utf8');
            response.on('data', (chunk: string) => (text += chunk));
            response.on('end', () => resolve(text));
          },
        );
        request.on('error', reject);
        request.end();
      });
      expect(JSON.parse(body)).toMatchObject({ url: '/secure', client });
    }
    expect(outcomes).toEqual(['proxied', 'proxied']);
  });

  it('HTTP/2 over TLS: a request sees the client through the stream\'s socket', async () => {
    const server = http2.createSecureServer({ key, cert }, (req, res) => answer(req as unknown as http.IncomingMessage, res as unknown as http.ServerResponse));
    const { port: p, outcomes } = await fronted(server);
    const sessions: http2.ClientHttp2Session[] = [];
    opened.push({ close: () => sessions.forEach((session) => session.destroy()) });
    const raw = net.connect(p, '127.0.0.1');
    await new Promise<void>((resolve) => raw.once('connect', () => resolve()));
    raw.write(v2(1, 2, addressBlock(Buffer.from('20010db80000000000000000000000a1', 'hex'), Buffer.alloc(16), 1, 443)));
    const session = http2.connect(`https://localhost:${p}`, { createConnection: () => tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'localhost', ALPNProtocols: ['h2'] }) });
    sessions.push(session);
    const body = await new Promise<string>((resolve, reject) => {
      const stream = session.request({ ':path': '/h2' });
      let text = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => (text += chunk));
      stream.on('end', () => resolve(text));
      stream.on('error', reject);
    });
    expect(JSON.parse(body)).toMatchObject({ url: '/h2', client: '2001:db8::a1' });
    expect(outcomes).toEqual(['proxied']);
  });

  it('the server behind keeps its own request timeouts (slowloris guard) for the connections it is handed', async () => {
    const server = http.createServer({ headersTimeout: 300, requestTimeout: 300, connectionsCheckingInterval: 50 }, answer);
    const { port: p } = await fronted(server);
    // A header, then a request that never ends its headers: node:http answers 408 and closes.
    const result = await exchange(p, 'PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET / HTTP/1.1\r\nHost: t\r\n');
    expect(result.closedByServer).toBe(true);
    expect(result.text).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('refuses a header from a peer outside trustedFrom, and serves that peer as itself when it sends none', async () => {
    const { port: p, outcomes } = await fronted(http.createServer(answer));
    for (const header of [v1('TCP4', '203.0.113.7', '10.0.0.1', 1, 80), v2(1, 1, addressBlock(Buffer.from([203, 0, 113, 7]), Buffer.alloc(4), 1, 80)), Buffer.from('PROXY TCP4 garbage\r\n')]) {
      expect(await requestBehind(p, header, '/', { localAddress: '127.0.0.2' })).toBeUndefined();
    }
    expect(await requestBehind(p, Buffer.alloc(0), '/direct', { localAddress: '127.0.0.2' })).toMatchObject({ url: '/direct', client: null, peer: '127.0.0.2' });
    expect(outcomes).toEqual(['untrusted', 'untrusted', 'untrusted', 'direct']);
  });

  it('closes a trusted peer that sends no header, or a malformed one, without a byte of answer', async () => {
    const { port: p, outcomes } = await fronted(http.createServer(answer));
    expect(await exchange(p, 'GET / HTTP/1.1\r\nHost: t\r\n\r\n')).toEqual({ text: '', closedByServer: true });
    expect(await exchange(p, 'PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n')).toEqual({ text: '', closedByServer: true });
    expect(await exchange(p, Buffer.concat([V2_SIGNATURE, Buffer.from([0x31, 0x11, 0, 12])]))).toEqual({ text: '', closedByServer: true });
    expect(outcomes).toEqual(['missing', 'malformed', 'malformed']);
  });

  it('closes a peer that sends nothing, or part of a header, once headerTimeoutMs has passed', async () => {
    const { port: p, outcomes } = await fronted(http.createServer(answer), 150);
    const results = await Promise.all([
      exchange(p, Buffer.alloc(0)),
      exchange(p, 'PROXY TCP4 1.2.3.4'),
      exchange(p, V2_SIGNATURE.subarray(0, 7)),
      exchange(p, Buffer.alloc(0), { localAddress: '127.0.0.2' }),
    ]);
    expect(results.every((result) => result.text === '' && result.closedByServer)).toBe(true);
    expect(outcomes).toEqual(['timeout', 'timeout', 'timeout', 'timeout']);
  });

  it('any byte prefix of a valid header followed by a close leaves the front serving', async () => {
    const { port: p, front } = await fronted(http.createServer(answer));
    await fc.assert(
      fc.asyncProperty(validHeader, fc.nat(), async (header, cut) => {
        const prefix = header.bytes.subarray(0, cut % (header.bytes.length + 1));
        const result = await exchange(p, prefix, { endAfterWrite: true });
        expect(result.text).toBe('');
      }),
      { numRuns: 40 },
    );
    // Nothing was left waiting for a header, and the next connection is served.
    await eventually(() => expect((front as unknown as { pending: Set<unknown> }).pending.size).toBe(0));
    expect(await requestBehind(p, v1('TCP4', '192.0.2.1', '192.0.2.2', 1, 2), '/after')).toMatchObject({ url: '/after', client: '192.0.2.1' });
  });

  it('stops accepting when the server behind is closed, and closes connections still awaiting a header', async () => {
    const server = http.createServer(answer);
    const { port: p, outcomes, front } = await fronted(server);
    const waiting = exchange(p, 'PROXY TCP4 1.2.');
    await eventually(() => expect((front as unknown as { pending: Set<unknown> }).pending.size).toBe(1));
    // What the data plane's drain does: net.Server#close on the server behind.
    net.Server.prototype.close.call(server);
    expect(await waiting).toEqual({ text: '', closedByServer: true });
    await eventually(() => expect(front.listener.listening).toBe(false));
    await expect(exchange(p, v1('TCP4', '1.2.3.4', '5.6.7.8', 1, 2))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(outcomes).toEqual([]);
  });
});

describe('proxyProtocol settings', () => {
  const issuesOf = (proxyProtocol: unknown): readonly string[] => {
    try {
      parseSettings({ proxyProtocol });
    } catch (error) {
      if (error instanceof ConfigError) return error.issues;
      throw error;
    }
    return [];
  };

  it('defaults the header deadline and refuses what cannot work, naming the field', () => {
    expect(parseSettings({ proxyProtocol: { trustedFrom: ['10.0.0.0/8', '2001:db8::/32'] } }).proxyProtocol).toEqual({ trustedFrom: ['10.0.0.0/8', '2001:db8::/32'], headerTimeoutMs: 5_000 });
    expect(parseSettings({}).proxyProtocol).toBeUndefined();
    expect(issuesOf({ trustedFrom: [] })).toEqual([expect.stringMatching(/^proxyProtocol\.trustedFrom: give the load balancers' addresses/)]);
    expect(issuesOf({})).toEqual([expect.stringMatching(/^proxyProtocol\.trustedFrom: /)]);
    expect(issuesOf({ trustedFrom: ['10.0.0.1/8'] })).toEqual([expect.stringMatching(/^proxyProtocol\.trustedFrom\[0\]: .*write the network address 10\.0\.0\.0\/8/)]);
    expect(issuesOf({ trustedFrom: ['lb.internal'] })).toEqual([expect.stringMatching(/^proxyProtocol\.trustedFrom\[0\]: expected a CIDR/)]);
    expect(issuesOf({ trustedFrom: ['10.0.0.0/8'], headerTimeoutMs: 0 })).toEqual([expect.stringMatching(/^proxyProtocol\.headerTimeoutMs: /)]);
    expect(issuesOf({ trustedFrom: ['10.0.0.0/8'], sendProxy: true })).toEqual([expect.stringMatching(/^proxyProtocol\.sendProxy: unknown field/)]);
  });
});
