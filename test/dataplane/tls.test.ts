import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type http2 from 'node:http2';
import https from 'node:https';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RoutingDocument, Settings } from '../../src/config/schema.js';
import { NodeDataPlane } from '../../src/dataplane/node/server.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { createLogger } from '../../src/observe/log.js';
import { compileRouting } from '../../src/rules/compile.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { certFactory, h2Connect, h2Request, servedCertificate, type CertFactory, type CertFiles } from '../helpers/tls.js';

const MB = 1024 * 1024;

/** A node data plane with a TLS listener (and no plain one), logging into `lines`. */
async function startTlsPlane(document: unknown, tlsSettings: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
      callback();
    },
  });
  const plane = new NodeDataPlane({
    settings: Settings.parse({ listen: 'off', tls: { listen: '127.0.0.1:0', watchMs: 100, ...tlsSettings }, log: { format: 'json' }, ...extra }),
    logger: createLogger({ level: 'debug', format: 'json', destination }),
  });
  plane.setSnapshot(compileRouting(RoutingDocument.parse(document), 1, { identity: identityCompiler() }));
  const address = await plane.listen();
  return { plane, port: address.tls!.port, lines, close: () => plane.drain(1_000) };
}

let factory: CertFactory;
let stable: Backend;
let candidate: Backend;
let shopCert: CertFiles;
let wildCert: CertFiles;

const document = () => ({
  upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] } },
  services: [
    { name: 'shop', match: { host: 'shop.test' }, stable: 'stable', release: { candidate: 'candidate', rules: [{ header: { name: 'x-canary', equals: '1' } }] } },
    { name: 'other', stable: 'stable' },
  ],
});

beforeAll(async () => {
  factory = certFactory();
  shopCert = factory.cert('shop', { names: ['shop.test', 'localhost'] });
  wildCert = factory.cert('wild', { names: ['*.wild.test'] });
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
});

afterAll(async () => {
  await Promise.all([stable?.close(), candidate?.close()]);
  factory?.remove();
});

describe('certificates by SNI', () => {
  it('serve the exact name, a one-label wildcard, and the first certificate otherwise', async () => {
    const gateway = await startTlsPlane(document(), { certificates: [{ cert: shopCert.cert, key: shopCert.key }, { cert: wildCert.cert, key: wildCert.key }] });
    try {
      expect((await servedCertificate(gateway.port, 'shop.test')).subject.CN).toBe('shop.test');
      expect((await servedCertificate(gateway.port, 'a.wild.test')).subject.CN).toBe('*.wild.test');
      expect((await servedCertificate(gateway.port, 'A.WILD.TEST')).subject.CN).toBe('*.wild.test');
      // A wildcard covers one label only (RFC 6125): deeper names get the default.
      expect((await servedCertificate(gateway.port, 'a.b.wild.test')).subject.CN).toBe('shop.test');
      expect((await servedCertificate(gateway.port, 'unknown.test')).subject.CN).toBe('shop.test');
      expect((await servedCertificate(gateway.port, undefined)).subject.CN).toBe('shop.test');
    } finally {
      await gateway.close();
    }
  });

  it('refuse TLS 1.1 and offer TLS 1.3', async () => {
    const gateway = await startTlsPlane(document(), { certificates: [{ cert: shopCert.cert, key: shopCert.key }] });
    try {
      await expect(servedCertificate(gateway.port, 'shop.test', { maxVersion: 'TLSv1.1', minVersion: 'TLSv1' })).rejects.toThrow();
      const protocol = await new Promise<string | null>((resolve, reject) => {
        const socket = tls.connect({ port: gateway.port, host: '127.0.0.1', servername: 'shop.test', rejectUnauthorized: false }, () => {
          resolve(socket.getProtocol());
          socket.end();
        });
        socket.on('error', reject);
      });
      expect(protocol).toBe('TLSv1.3');
    } finally {
      await gateway.close();
    }
  });
});

describe('HTTP/2 and HTTP/1.1 on the TLS listener', () => {
  let gateway: Awaited<ReturnType<typeof startTlsPlane>>;
  let session: http2.ClientHttp2Session;
  beforeAll(async () => {
    gateway = await startTlsPlane(document(), { certificates: [{ cert: shopCert.cert, key: shopCert.key }], http2: { maxConcurrentStreams: 7 } });
    session = await h2Connect(gateway.port, { servername: 'shop.test', ca: shopCert.pem });
  });
  afterAll(async () => {
    session?.close();
    await gateway?.close();
  });

  it('route HTTP/2 by the same rules, with :authority as the host, upstream Host and X-Forwarded-*', async () => {
    const canary = await h2Request(session, { ':path': '/a?q=1', ':authority': 'shop.test', 'x-canary': '1' });
    expect(canary.status).toBe(200);
    const seen = JSON.parse(canary.body.toString()) as { version: string; url: string; headers: Record<string, string> };
    expect(seen.version).toBe('candidate');
    expect(seen.url).toBe('/a?q=1');
    expect(seen.headers.host).toBe('shop.test');
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    expect(Object.keys(seen.headers).some((name) => name.startsWith(':'))).toBe(false);
    // Without the header: stable. With another authority: the other service (no release).
    expect(JSON.parse((await h2Request(session, { ':path': '/', ':authority': 'shop.test' })).body.toString()).version).toBe('stable');
    const other = await h2Request(session, { ':path': '/', ':authority': 'elsewhere.test', 'x-canary': '1' });
    expect(JSON.parse(other.body.toString()).version).toBe('stable');
    expect(other.headers.vary).toBeUndefined();
  });

  it('let :authority win over a Host field the client also sent', async () => {
    const reply = await h2Request(session, { ':path': '/', ':authority': 'shop.test', host: 'elsewhere.test', 'x-canary': '1' });
    const seen = JSON.parse(reply.body.toString()) as { version: string; headers: Record<string, string> };
    expect(seen.version).toBe('candidate');
    expect(seen.headers.host).toBe('shop.test');
  });

  it('join split cookies for the upstream and forward a body without Content-Length whole', async () => {
    const body = randomBytes(300_000);
    const echo = await startBackend('echo', (req, res) => {
      const hash = createHash('sha256');
      let length = 0;
      req.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        length += chunk.length;
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ length, sha256: hash.digest('hex'), cookie: req.headers.cookie, te: req.headers['transfer-encoding'] }));
      });
      return true;
    });
    const plane = await startTlsPlane({ upstreams: { echo: { servers: [echo.url] } }, services: [{ name: 'echo', stable: 'echo' }] }, { certificates: [{ cert: shopCert.cert, key: shopCert.key }] });
    const client = await h2Connect(plane.port);
    try {
      const reply = await h2Request(client, { ':method': 'POST', ':path': '/up', cookie: ['a=1', 'b=2'] }, body);
      const seen = JSON.parse(reply.body.toString()) as { length: number; sha256: string; cookie: string; te: string };
      expect(seen.length).toBe(body.length);
      expect(seen.sha256).toBe(createHash('sha256').update(body).digest('hex'));
      expect(seen.cookie).toBe('a=1; b=2');
      expect(seen.te).toBe('chunked');
    } finally {
      client.close();
      await plane.close();
      await echo.close();
    }
  });

  it('never send connection-specific fields on HTTP/2, even when the upstream does', async () => {
    const rude = await startBackend('rude', (req, res) => {
      req.resume();
      res.writeHead(200, { connection: 'keep-alive, x-private', 'keep-alive': 'timeout=5', 'proxy-connection': 'keep-alive', upgrade: 'h2c', 'x-private': 'hop', 'transfer-encoding': 'chunked' });
      res.end('body');
      return true;
    });
    const plane = await startTlsPlane({ upstreams: { rude: { servers: [rude.url] } }, services: [{ name: 'rude', match: { host: '127.0.0.1' }, stable: 'rude' }] }, { certificates: [{ cert: shopCert.cert, key: shopCert.key }] });
    const client = await h2Connect(plane.port);
    try {
      const reply = await h2Request(client, { ':path': '/' });
      expect(reply.status).toBe(200);
      expect(reply.body.toString()).toBe('body');
      for (const name of ['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'transfer-encoding', 'x-private']) expect(reply.headers[name]).toBeUndefined();
      // The gateway's own error answer to a request whose body it did not read says `Connection:
      // close` on HTTP/1.1; on HTTP/2 it must not.
      const missing = await h2Request(client, { ':method': 'POST', ':path': '/', ':authority': 'nowhere.test' }, 'x'.repeat(100_000));
      expect(missing.status).toBe(404);
      expect(missing.headers.connection).toBeUndefined();
    } finally {
      client.close();
      await plane.close();
      await rude.close();
    }
  });

  it('advertise the stream limit, and serve HTTP/1.1 on the same port by ALPN or without it', async () => {
    expect(session.remoteSettings.maxConcurrentStreams).toBe(7);
    for (const ALPNProtocols of [['http/1.1'], undefined]) {
      const reply = await new Promise<{ status: number; version: string; body: string }>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port: gateway.port, path: '/h1', servername: 'shop.test', ca: shopCert.pem, headers: { host: 'shop.test', 'x-canary': '1' }, agent: false, ...(ALPNProtocols ? { ALPNProtocols } : {}) }, (res) => {
            let body = '';
            res.on('data', (chunk: Buffer) => (body += chunk.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, version: res.httpVersion, body }));
          })
          .on('error', reject);
      });
      expect(reply).toMatchObject({ status: 200, version: '1.1' });
      expect(JSON.parse(reply.body).version).toBe('candidate');
    }
  });

  it('refuse a header list over the limit and stay usable', async () => {
    const plane = await startTlsPlane(document(), { certificates: [{ cert: shopCert.cert, key: shopCert.key }], http2: { maxHeaderListBytes: 4_096 } });
    const client = await h2Connect(plane.port);
    try {
      const refused = await h2Request(client, { ':path': '/', 'x-big': 'x'.repeat(8_000) }).then(
        (reply) => reply.status,
        (error: Error & { code?: string }) => error.code ?? 'error',
      );
      expect(refused).toBe(431);
      const fresh = await h2Connect(plane.port);
      expect((await h2Request(fresh, { ':path': '/' })).status).toBe(200);
      fresh.close();
    } finally {
      client.destroy();
      await plane.close();
    }
  });
});

describe('backpressure over HTTP/2', () => {
  it('a slow reader pauses the upstream, and a slow upstream pauses the client upload', async () => {
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    let written = 0;
    let uploadReceived = 0;
    let uploadRequest: http.IncomingMessage | undefined;
    const chunk = randomBytes(64 * 1024);
    const backend = await startBackend('stream', (req, res) => {
      if (req.url === '/endless') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const pump = () => {
          while (!res.destroyed) {
            written += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
        };
        pump();
        return true;
      }
      uploadRequest = req;
      req.pause();
      req.on('data', (data: Buffer) => (uploadReceived += data.length));
      req.on('end', () => res.end(String(uploadReceived)));
      return true;
    });
    const plane = await startTlsPlane({ upstreams: { s: { servers: [backend.url] } }, services: [{ name: 's', stable: 's' }] }, { certificates: [{ cert: shopCert.cert, key: shopCert.key }] });
    const client = await h2Connect(plane.port);
    try {
      // Download: the client stops reading; the upstream must stop being read too.
      const download = client.request({ ':path': '/endless' });
      let seen = 0;
      download.on('data', (data: Buffer) => (seen += data.length));
      await eventually(() => expect(seen).toBeGreaterThan(1 * MB));
      download.pause();
      // The buffers on the way fill, then the upstream stops being read (it cannot write more).
      await eventually(async () => {
        const at = written;
        await sleep(300);
        expect(written - at).toBeLessThan(256 * 1024);
      });
      const pausedAt = seen;
      expect(written - pausedAt).toBeLessThan(32 * MB);
      const before = seen;
      download.resume();
      await eventually(() => expect(seen - before).toBeGreaterThan(16 * MB));
      download.close();

      // Upload: the upstream does not read; what the client can hand over stays bounded.
      const total = 64 * MB;
      const upload = client.request({ ':method': 'POST', ':path': '/upload' }, { endStream: false });
      let sent = 0;
      let ended = false;
      const pump = () => {
        while (sent < total) {
          sent += chunk.length;
          if (!upload.write(chunk)) return void upload.once('drain', pump);
        }
        upload.end();
        ended = true;
      };
      pump();
      let answer = '';
      upload.on('data', (data: Buffer) => (answer += data.toString()));
      await eventually(() => expect(uploadRequest).toBeDefined());
      await eventually(async () => {
        const at = sent;
        await sleep(300);
        expect(sent - at).toBeLessThan(256 * 1024);
      });
      // What the client could hand over is what the windows and socket buffers hold, not the body.
      expect(ended).toBe(false);
      expect(sent).toBeLessThan(total / 4);
      uploadRequest!.resume();
      await eventually(() => expect(answer).toBe(String(total)), { withinMs: 20_000 });
    } finally {
      client.destroy();
      await plane.close();
      await backend.close();
    }
  });
});

describe('live certificate reload', () => {
  it('serves a replaced pair on new handshakes, keeps open connections, refuses a mismatched pair naming the file', async () => {
    const first = factory.cert('live-1', { names: ['shop.test'] });
    const second = factory.cert('live-2', { names: ['shop.test', 'second.test'] });
    const live = { cert: `${factory.dir}/live.pem`, key: `${factory.dir}/live.key` };
    copyFileSync(first.cert, live.cert);
    copyFileSync(first.key, live.key);
    const gateway = await startTlsPlane(document(), { certificates: [live] });
    const serial = async () => (await servedCertificate(gateway.port, 'shop.test')).serialNumber;
    const firstSerial = await serial();
    const open = await h2Connect(gateway.port, { servername: 'shop.test' });
    try {
      expect((await h2Request(open, { ':path': '/' })).status).toBe(200);
      // A renewal: the key first, then the certificate (a moment where they do not match).
      copyFileSync(second.key, live.key);
      copyFileSync(second.cert, live.cert);
      await eventually(async () => expect(await serial()).not.toBe(firstSerial));
      const secondSerial = await serial();
      // The names come from the new certificate.
      expect((await servedCertificate(gateway.port, 'second.test')).serialNumber).toBe(secondSerial);
      // The connection opened before the swap still works on its own handshake.
      expect((await h2Request(open, { ':path': '/' })).status).toBe(200);
      expect((open.socket as tls.TLSSocket).getPeerCertificate().serialNumber).toBe(firstSerial);

      // A key that is not the certificate's: refused, logged with the file, the old pair stays.
      const refusedBefore = gateway.plane.tlsCertificates!.refusedReloads;
      const stray = factory.strayKey('stray');
      copyFileSync(stray, live.key);
      await eventually(() => expect(gateway.lines.some((line) => line.event === 'tls-reload-refused' && line.file === live.key)).toBe(true));
      expect(gateway.plane.tlsCertificates!.refusedReloads).toBeGreaterThan(refusedBefore);
      expect(await serial()).toBe(secondSerial);
      // Garbage in the certificate file: refused too, the served pair unchanged.
      writeFileSync(live.cert, 'not a certificate');
      await eventually(() => expect(gateway.lines.some((line) => line.event === 'tls-reload-refused' && line.file === live.cert)).toBe(true));
      expect(await serial()).toBe(secondSerial);
      expect((await h2Request(open, { ':path': '/' })).status).toBe(200);
    } finally {
      open.close();
      await gateway.close();
    }
  });
});

describe('client certificates', () => {
  let ca: CertFiles;
  let client: CertFiles;
  let stranger: CertFiles;
  beforeAll(() => {
    ca = factory.ca('client-ca');
    client = factory.cert('client', { names: ['client-1'], ca, clientAuth: true });
    stranger = factory.cert('stranger', { names: ['client-2'], clientAuth: true });
  });

  const get = (port: number, options: https.RequestOptions) =>
    new Promise<number>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false, agent: false, ...options }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        })
        .on('error', reject);
    });

  it('required: only a client with a certificate of the CA gets an answer', async () => {
    const gateway = await startTlsPlane(document(), { certificates: [{ cert: shopCert.cert, key: shopCert.key }], clientCertificates: { ca: ca.cert } });
    try {
      expect(await get(gateway.port, { cert: client.pem, key: readFileSync(client.key) })).toBe(200);
      await expect(get(gateway.port, {})).rejects.toThrow();
      await expect(get(gateway.port, { cert: stranger.pem, key: readFileSync(stranger.key) })).rejects.toThrow();
    } finally {
      await gateway.close();
    }
  });

  it('optional: a client without one is served, one with a certificate that does not verify is not', async () => {
    const gateway = await startTlsPlane(document(), { certificates: [{ cert: shopCert.cert, key: shopCert.key }], clientCertificates: { ca: ca.cert, mode: 'optional' } });
    try {
      expect(await get(gateway.port, {})).toBe(200);
      expect(await get(gateway.port, { cert: client.pem, key: readFileSync(client.key) })).toBe(200);
      await expect(get(gateway.port, { cert: stranger.pem, key: readFileSync(stranger.key) })).rejects.toThrow();
    } finally {
      await gateway.close();
    }
  });
});

describe('settings', () => {
  it('accept TLS alone with listen: off, and refuse no listener at all or both on one port', () => {
    const tlsOnly = Settings.parse({ listen: 'off', tls: { listen: 8443, certificates: [{ cert: 'a.pem', key: 'a.key' }] } });
    expect(tlsOnly.listen).toBeNull();
    expect(tlsOnly.tls?.minVersion).toBe('TLSv1.2');
    const none = Settings.safeParse({ listen: 'off' });
    expect(none.success).toBe(false);
    expect(none.error?.issues[0]?.path).toEqual(['listen']);
    const clash = Settings.safeParse({ listen: '127.0.0.1:8443', tls: { listen: 8443, certificates: [{ cert: 'a.pem', key: 'a.key' }] } });
    expect(clash.success).toBe(false);
    expect(clash.error?.issues[0]?.path).toEqual(['tls', 'listen']);
    const badName = Settings.safeParse({ tls: { listen: 8443, certificates: [{ cert: 'a.pem', key: 'a.key', names: ['bad name'] }] } });
    expect(badName.error?.issues[0]?.path).toEqual(['tls', 'certificates', 0, 'names', 0]);
  });
});

describe('start', () => {
  it('fails naming the file when a key does not match its certificate or a file is missing', () => {
    const stray = factory.strayKey('start-stray');
    const make = (tlsSettings: Record<string, unknown>) => () =>
      new NodeDataPlane({ settings: Settings.parse({ listen: 'off', tls: { listen: 0, ...tlsSettings } }), logger: createLogger({ level: 'silent' }) });
    expect(make({ certificates: [{ cert: shopCert.cert, key: stray }] })).toThrow(new RegExp(`tls.certificates\\[0\\].key ${stray}: is not the key of`));
    expect(make({ certificates: [{ cert: `${factory.dir}/nope.pem`, key: stray }] })).toThrow(/tls.certificates\[0\].cert .*nope.pem: no such file/);
    const expired = factory.cert('expired', { names: ['old.test'], days: -1 });
    expect(make({ certificates: [{ cert: expired.cert, key: expired.key }] })).toThrow(/expired on/);
  });
});
