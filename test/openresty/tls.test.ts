import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Settings } from '../../src/config/schema.js';
import { openRestySettingsIssues } from '../../src/openresty/normalize.js';
import { mainConf } from '../../src/openresty/conf.js';
import { splitCiphers } from '../../src/openresty/tls.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { runCli, startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';
import { certFactory, h2Connect, h2Request, servedCertificate, type CertFactory, type CertFiles } from '../helpers/tls.js';

// TLS through `graygate start --data-plane openresty`: nginx terminates it with the certificates
// graygate reads, checks, watches and pushes; the certificate is chosen per handshake by the
// server name in Lua, so SNI and a renewal need no nginx reload.

/** One HTTPS request over HTTP/1.1 on a new connection; resolves with the status and the backend's JSON. */
function httpsGet(port: number, options: { servername?: string; headers?: Record<string, string>; agent?: https.Agent; client?: CertFiles } = {}): Promise<{ status: number; json: Record<string, unknown>; text: string; socket: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: '/',
        rejectUnauthorized: false,
        ...(options.client ? { cert: readFileSync(options.client.cert), key: readFileSync(options.client.key) } : {}),
        ...(options.servername ? { servername: options.servername } : {}),
        headers: { host: options.servername ?? 'localhost', ...(options.agent ? {} : { connection: 'close' }), ...(options.headers ?? {}) },
        ...(options.agent ? { agent: options.agent } : { agent: false }),
        timeout: 30_000,
      },
      (res) => {
        // Taken now: a keep-alive agent takes the socket back once the response ends.
        const socket = res.socket as tls.TLSSocket;
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let json: Record<string, unknown> = {};
          try {
            json = JSON.parse(text) as Record<string, unknown>;
          } catch {
            // nginx's own error pages are HTML.
          }
          resolve({ status: res.statusCode ?? 0, json, text, socket });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.end();
  });
}

/** The listening line's TLS port. */
function tlsPortOf(gateway: OpenRestyGateway): number {
  const line = gateway.logs().find((entry) => entry.event === 'listening') as { tls?: { port: number } } | undefined;
  if (!line?.tls) throw new Error(`no tls address in the listening line:\n${gateway.output().slice(-2_000)}`);
  return line.tls.port;
}

// nginx answers its 495 and 496 (a certificate that did not verify, none sent) with status 400 and these pages.
const CERT_ERROR = 'The SSL certificate error';
const NO_CERT = 'No required SSL certificate was sent';

let factory: CertFactory;
let stable: Backend;
let candidate: Backend;
let shop: CertFiles;
let wild: CertFiles;
let other: CertFiles;
let caA: CertFiles;
let caB: CertFiles;
let clientA: CertFiles;
let clientB: CertFiles;

const routing = () => ({
  upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
  services: [{ name: 'app', stable: 'app-v1', release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals: '1' } }] } }],
});

beforeAll(async () => {
  factory = certFactory();
  shop = factory.cert('shop', { names: ['shop.test', 'localhost'] });
  wild = factory.cert('wild', { names: ['*.wild.test'] });
  other = factory.cert('other', { names: ['other.test'] });
  caA = factory.ca('ca-a');
  caB = factory.ca('ca-b');
  clientA = factory.cert('client-a', { names: ['client-a'], ca: caA, clientAuth: true });
  clientB = factory.cert('client-b', { names: ['client-b'], ca: caB, clientAuth: true });
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
}, 60_000);

afterAll(async () => {
  await Promise.allSettled([stable?.close(), candidate?.close()]);
  factory?.remove();
});

describe('HTTPS on the OpenResty data plane (plain and TLS listeners, HTTP/2 on)', () => {
  let gateway: OpenRestyGateway;
  let port: number;
  /** The files the first certificate is read from: replaced by the reload test. */
  let live: { cert: string; key: string };

  beforeAll(async () => {
    live = { cert: path.join(factory.dir, 'live.pem'), key: path.join(factory.dir, 'live.key') };
    copyFileSync(shop.cert, live.cert);
    copyFileSync(shop.key, live.key);
    gateway = await startOpenRestyGateway({
      config: {
        log: { format: 'json' },
        tls: { listen: '127.0.0.1:0', watchMs: 100, certificates: [{ cert: live.cert, key: live.key }, { cert: wild.cert, key: wild.key }, { cert: other.cert, key: other.key }] },
        ...routing(),
      },
      workers: 2,
    });
    port = tlsPortOf(gateway);
    await eventually(async () => expect((await httpsGet(port, { servername: 'shop.test' })).json.version).toBe('stable'));
  }, 180_000);

  afterAll(async () => {
    await gateway?.stop();
  });

  it('routes HTTPS requests by the rules, stable and candidate, beside the plain listener', async () => {
    const plain = await httpsGet(port, { servername: 'shop.test' });
    expect(plain.status).toBe(200);
    expect(plain.json.version).toBe('stable');
    const tester = await httpsGet(port, { servername: 'shop.test', headers: { 'x-canary': '1' } });
    expect(tester.json.version).toBe('candidate');
    expect(tester.socket.getProtocol()).toMatch(/^TLSv1\.[23]$/);
    // The plain listener still serves, with the same rules.
    const http = await fetch(gateway.url, { headers: { 'x-canary': '1' } });
    expect(((await http.json()) as { version: string }).version).toBe('candidate');
  });

  it('chooses the certificate by server name: exact, a one-label wildcard, and the first otherwise', async () => {
    expect((await servedCertificate(port, 'shop.test')).subject.CN).toBe('shop.test');
    expect((await servedCertificate(port, 'other.test')).subject.CN).toBe('other.test');
    expect((await servedCertificate(port, 'a.wild.test')).subject.CN).toBe('*.wild.test');
    expect((await servedCertificate(port, 'A.Wild.TEST')).subject.CN).toBe('*.wild.test');
    // A wildcard covers one label only: deeper names, unknown names and no name get the first.
    expect((await servedCertificate(port, 'a.b.wild.test')).subject.CN).toBe('shop.test');
    expect((await servedCertificate(port, 'unknown.test')).subject.CN).toBe('shop.test');
    expect((await servedCertificate(port, undefined)).subject.CN).toBe('shop.test');
  });

  it('speaks HTTP/2 by ALPN through the same rules, and HTTP/1.1 to a client that asks for it', async () => {
    const session = await h2Connect(port, { servername: 'shop.test' });
    try {
      expect(session.alpnProtocol).toBe('h2');
      const [a, b] = await Promise.all([
        h2Request(session, { ':method': 'GET', ':path': '/', ':authority': 'shop.test' }),
        h2Request(session, { ':method': 'GET', ':path': '/', ':authority': 'shop.test', 'x-canary': '1' }),
      ]);
      expect(a.status).toBe(200);
      expect((JSON.parse(a.body.toString()) as { version: string }).version).toBe('stable');
      expect((JSON.parse(b.body.toString()) as { version: string }).version).toBe('candidate');
    } finally {
      session.close();
    }
    const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'shop.test', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => resolve(s));
      s.on('error', reject);
    });
    expect(socket.alpnProtocol).toBe('http/1.1');
    socket.destroy();
  });

  it('keeps the private key out of reach: nginx.conf names an owner-only copy in an owner-only prefix dir', () => {
    const started = gateway.logs().find((line) => line.event === 'nginx-started') as { prefix: string } | undefined;
    expect(started).toBeDefined();
    const conf = readFileSync(path.join(started!.prefix, 'nginx.conf'), 'utf8');
    const keyFile = /ssl_certificate_key (\S+);/.exec(conf)![1]!;
    expect(statSync(keyFile).mode & 0o077).toBe(0);
    expect(statSync(path.dirname(keyFile)).mode & 0o077).toBe(0);
    expect(readFileSync(keyFile, 'utf8')).toBe(readFileSync(shop.key, 'utf8'));
  });

  it('serves replaced files on new handshakes without an nginx reload, keeps open connections, and refuses a mismatched pair naming the file', async () => {
    const pidsBefore = gateway.nginxPids().sort();
    const workersBefore = gateway.workerPids().sort();
    expect(workersBefore).toHaveLength(2);
    const oldPrint = (await servedCertificate(port, 'shop.test')).fingerprint256;
    // A keep-alive connection made with the old certificate.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await httpsGet(port, { servername: 'shop.test', agent });
      expect(first.socket.getPeerCertificate().fingerprint256).toBe(oldPrint);
      const openSocket = first.socket;

      const renewed = factory.cert('shop-renewed', { names: ['shop.test', 'localhost'] });
      copyFileSync(renewed.cert, live.cert);
      copyFileSync(renewed.key, live.key);
      const newPrint = new X509Certificate(renewed.pem).fingerprint256;
      await eventually(async () => expect((await servedCertificate(port, 'shop.test')).fingerprint256).toBe(newPrint));
      // Without a name too: the first certificate is the renewed one.
      expect((await servedCertificate(port, undefined)).fingerprint256).toBe(newPrint);
      // The other names are untouched.
      expect((await servedCertificate(port, 'a.wild.test')).subject.CN).toBe('*.wild.test');
      // The connection opened before still works, on its certificate.
      const again = await httpsGet(port, { servername: 'shop.test', agent, headers: { 'x-canary': '1' } });
      expect(again.socket).toBe(openSocket);
      expect(again.socket.getPeerCertificate().fingerprint256).toBe(oldPrint);
      expect(again.json.version).toBe('candidate');
      // No reload: nginx's master and workers are the same processes.
      expect(gateway.nginxPids().sort()).toEqual(pidsBefore);
      expect(gateway.workerPids().sort()).toEqual(workersBefore);
      expect(gateway.logs().some((line) => line.event === 'tls-reloaded')).toBe(true);

      // A key that is not the certificate's: refused, the file named, the renewed pair still served.
      const since = gateway.logs().length;
      copyFileSync(factory.strayKey('stray'), live.key);
      const refused = await gateway.waitForLog((line) => line.event === 'tls-reload-refused', { since });
      expect(refused.file).toBe(live.key);
      expect(String(refused.msg)).toContain('tls.certificates[0].key');
      expect((await servedCertificate(port, 'shop.test')).fingerprint256).toBe(newPrint);
      expect((await httpsGet(port, { servername: 'shop.test' })).json.version).toBe('stable');
      expect(gateway.workerPids().sort()).toEqual(workersBefore);
      copyFileSync(renewed.key, live.key);
    } finally {
      agent.destroy();
    }
  });
});

describe('HTTPS alone on the OpenResty data plane (listen: off, HTTP/2 off, TLS 1.3 only, optional client certificates)', () => {
  let gateway: OpenRestyGateway;
  let port: number;

  beforeAll(async () => {
    gateway = await startOpenRestyGateway({
      config: {
        log: { format: 'json' },
        listen: 'off',
        tls: { listen: '127.0.0.1:0', minVersion: 'TLSv1.3', http2: { enabled: false }, certificates: [{ cert: shop.cert, key: shop.key }], clientCertificates: { ca: caA.cert, mode: 'optional' } },
        ...routing(),
      },
      workers: 1,
    });
    port = tlsPortOf(gateway);
    await eventually(async () => expect((await httpsGet(port, { servername: 'shop.test' })).json.version).toBe('stable'));
  }, 180_000);

  afterAll(async () => {
    await gateway?.stop();
  });

  it('answers HTTP/1.1 to a client offering h2, refuses TLS 1.2, and routes by the rules', async () => {
    const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'shop.test', rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'] }, () => resolve(s));
      s.on('error', reject);
    });
    expect(socket.alpnProtocol).toBe('http/1.1');
    expect(socket.getProtocol()).toBe('TLSv1.3');
    socket.destroy();
    await expect(servedCertificate(port, 'shop.test', { maxVersion: 'TLSv1.2' })).rejects.toThrow();
    expect((await httpsGet(port, { servername: 'shop.test', headers: { 'x-canary': '1' } })).json.version).toBe('candidate');
  });

  it('lets a client without a certificate in, and one with a certificate of the CA, and refuses one whose certificate does not verify', async () => {
    expect((await httpsGet(port, { servername: 'shop.test' })).status).toBe(200);
    const verified = await httpsGet(port, { servername: 'shop.test', client: clientA, headers: { 'x-canary': '1' } });
    expect(verified.status).toBe(200);
    expect(verified.json.version).toBe('candidate');
    const stranger = await httpsGet(port, { servername: 'shop.test', client: clientB });
    expect(stranger.status).toBe(400);
    expect(stranger.text).toContain(CERT_ERROR);
  });
});

describe('required client certificates on the OpenResty data plane, the CA file reloaded live', () => {
  let gateway: OpenRestyGateway;
  let port: number;
  let caFile: string;

  beforeAll(async () => {
    caFile = path.join(factory.dir, 'live-ca.pem');
    copyFileSync(caA.cert, caFile);
    gateway = await startOpenRestyGateway({
      config: {
        log: { format: 'json' },
        tls: { listen: '127.0.0.1:0', watchMs: 100, certificates: [{ cert: shop.cert, key: shop.key }], clientCertificates: { ca: caFile } },
        ...routing(),
      },
      workers: 2,
    });
    port = tlsPortOf(gateway);
    await eventually(async () => expect((await httpsGet(port, { servername: 'shop.test', client: clientA })).json.version).toBe('stable'));
  }, 180_000);

  afterAll(async () => {
    await gateway?.stop();
  });

  it('serves a client with a certificate of the CA, answers nginx 400 pages without one and with another CA certificate, and follows a replaced CA file without a reload', async () => {
    expect((await httpsGet(port, { servername: 'shop.test', client: clientA, headers: { 'x-canary': '1' } })).json.version).toBe('candidate');
    expect((await httpsGet(port, { servername: 'shop.test' })).text).toContain(NO_CERT);
    expect((await httpsGet(port, { servername: 'shop.test', client: clientB })).text).toContain(CERT_ERROR);
    // The plain listener is not asked for a certificate.
    expect((await fetch(gateway.url)).status).toBe(200);

    const workers = gateway.workerPids().sort();
    copyFileSync(caB.cert, caFile);
    await eventually(async () => expect((await httpsGet(port, { servername: 'shop.test', client: clientB })).status).toBe(200));
    const refusedA = await httpsGet(port, { servername: 'shop.test', client: clientA });
    expect(refusedA.status).toBe(400);
    expect(refusedA.text).toContain(CERT_ERROR);
    expect(gateway.workerPids().sort()).toEqual(workers);

    // A CA file that holds no certificate is refused, naming it; the CA before stays.
    const since = gateway.logs().length;
    copyFileSync(shop.key, caFile);
    const refused = await gateway.waitForLog((line) => line.event === 'tls-reload-refused', { since });
    expect(refused.file).toBe(caFile);
    expect((await httpsGet(port, { servername: 'shop.test', client: clientB })).status).toBe(200);
  });
});

describe('the settings the OpenResty data plane takes', () => {
  const settings = (extra: Record<string, unknown>) => Settings.parse({ tls: { listen: '127.0.0.1:8443', certificates: [{ cert: '/c.pem', key: '/k.pem' }] }, ...extra });

  it('accepts tls (with or without the plain listener, with client certificates), and still refuses proxyProtocol, naming it', () => {
    expect(openRestySettingsIssues(settings({}), undefined)).toEqual([]);
    expect(openRestySettingsIssues(settings({ listen: 'off' }), undefined)).toEqual([]);
    const refused = openRestySettingsIssues(
      Settings.parse({ tls: { listen: 8443, certificates: [{ cert: '/c.pem', key: '/k.pem' }], clientCertificates: { ca: '/ca.pem' } }, proxyProtocol: { trustedFrom: ['10.0.0.0/8'] } }),
      undefined,
    );
    expect(refused).toEqual([expect.stringMatching(/^proxyProtocol: /)]);
  });

  it('refuses TLS 1.3 only with no TLS 1.3 suite in the cipher list', () => {
    const issues = openRestySettingsIssues(Settings.parse({ tls: { listen: 8443, minVersion: 'TLSv1.3', ciphers: 'ECDHE-RSA-AES128-GCM-SHA256', certificates: [{ cert: '/c.pem', key: '/k.pem' }] } }), undefined);
    expect(issues).toEqual([expect.stringMatching(/^tls\.ciphers: /)]);
  });

  it('writes the listener, protocols and ciphers of the settings into nginx.conf (TLS 1.2 ciphers and 1.3 suites apart)', () => {
    const s = settings({ tls: { listen: '127.0.0.1:8443', certificates: [{ cert: '/c.pem', key: '/k.pem' }], http2: { maxConcurrentStreams: 64 } } });
    const conf = mainConf({ settings: s, outDir: '/tmp/gg', listen: { host: '127.0.0.1', port: 8080 }, tlsListen: { host: '127.0.0.1', port: 8443 }, workers: 1, metricsPort: 9 });
    expect(conf).toContain('listen 127.0.0.1:8080 backlog=4096;');
    expect(conf).toContain('listen 127.0.0.1:8443 ssl http2 backlog=4096;');
    expect(conf).toContain('ssl_protocols TLSv1.2 TLSv1.3;');
    const { ciphers, suites } = splitCiphers(s.tls!.ciphers);
    expect(suites.length).toBeGreaterThan(0);
    expect(conf).toContain(`ssl_ciphers ${ciphers.join(':')};`);
    expect(conf).toContain(`ssl_conf_command Ciphersuites ${suites.join(':')};`);
    expect(conf).toContain('http2_max_concurrent_streams 64;');
    expect(conf).toContain('ssl_certificate_by_lua_block');
    const noH2 = mainConf({ settings: settings({ listen: 'off', tls: { listen: 8443, http2: { enabled: false }, ciphers: 'ECDHE-RSA-AES128-GCM-SHA256', certificates: [{ cert: '/c.pem', key: '/k.pem' }] } }), outDir: '/tmp/gg', listen: undefined, tlsListen: { host: '127.0.0.1', port: 8443 }, workers: 1, metricsPort: 9 });
    expect(noH2).toContain('listen 127.0.0.1:8443 ssl backlog=4096;');
    expect(noH2).not.toContain('listen 127.0.0.1:8080');
    // A list without TLS 1.3 suites means no TLS 1.3, as on Node.
    expect(noH2).toContain('ssl_protocols TLSv1.2;');
    expect(noH2).not.toContain('Ciphersuites');
  });

  it('`openresty conf` (for your own nginx) says it leaves tls to your server block', async () => {
    const file = path.join(factory.dir, 'conf-tls.yaml');
    writeFileSync(file, `tls: { listen: 8443, certificates: [{ cert: ${shop.cert}, key: ${shop.key} }] }\n`);
    const out = path.join(factory.dir, 'conf-out');
    const result = await runCli(['openresty', 'conf', '--config', file, '--out', out]);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/tls is not written into these files/);
    expect(readFileSync(path.join(out, 'graygate-server.conf'), 'utf8')).not.toContain('ssl_certificate');
  });

  it('`start --nginx external` refuses tls, naming it (TLS is then your own server block)', async () => {
    const file = path.join(factory.dir, 'external-tls.yaml');
    writeFileSync(file, `listen: 127.0.0.1:0\ntls: { listen: 127.0.0.1:0, certificates: [{ cert: ${shop.cert}, key: ${shop.key} }] }\nupstreams: { a: { servers: [${stable.url}] } }\nservices: [{ name: app, stable: a }]\n`);
    const result = await runCli(['start', '--config', file, '--data-plane', 'openresty', '--nginx', 'external', '--openresty-dir', path.join(factory.dir, 'external')]);
    expect(result.code).not.toBe(0);
    expect(`${result.stdout}${result.stderr}`).toMatch(/tls: with --nginx external the TLS listener is your own nginx server block/);
  });

  it('refuses a cipher list nginx could not take in a directive, naming the field', () => {
    expect(() => mainConf({ settings: settings({ tls: { listen: 8443, ciphers: 'A B;', certificates: [{ cert: '/c.pem', key: '/k.pem' }] } }), outDir: '/tmp/gg', listen: undefined, tlsListen: { host: '127.0.0.1', port: 8443 }, workers: 1, metricsPort: 9 })).toThrow(/tls\.ciphers/);
  });
});
