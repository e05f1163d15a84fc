import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RoutingDocument, Settings } from '../../src/config/schema.js';
import { createNodeDataPlane } from '../../src/dataplane/node/index.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileRouting } from '../../src/rules/compile.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { makeTestPki, type CertFiles, type TestPki } from '../helpers/upstream-certs.js';
import { send } from './harness.js';

/** What an https backend saw of one request's TLS: the SNI name and the client certificate. */
interface TlsSeen {
  servername: string | false | null | undefined;
  clientCn: string | undefined;
}

interface TlsBackend {
  readonly url: string;
  readonly port: number;
  readonly seen: TlsSeen[];
  close(): Promise<void>;
}

/** A real node:https backend answering `{"version": name}`, recording SNI and client certificate. */
async function startTlsBackend(name: string, certificate: CertFiles, options: { requireClientCertFrom?: CertFiles } = {}): Promise<TlsBackend> {
  const seen: TlsSeen[] = [];
  const server = https.createServer(
    {
      cert: certificate.certPem,
      key: certificate.keyPem,
      ...(options.requireClientCertFrom ? { requestCert: true, rejectUnauthorized: true, ca: options.requireClientCertFrom.certPem } : {}),
    },
    (req, res) => {
      const socket = req.socket as TLSSocket;
      const peer = socket.getPeerCertificate();
      seen.push({ servername: socket.servername, clientCn: peer && 'subject' in peer ? (peer.subject?.CN as string | undefined) : undefined });
      req.resume();
      req.on('end', () => {
        const body = JSON.stringify({ version: name });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `https://127.0.0.1:${port}`,
    port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A node data plane with a logger whose JSON lines the test reads. */
async function startLoggedPlane(document: unknown) {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const plane = createNodeDataPlane({ settings: Settings.parse({ listen: '127.0.0.1:0' }), logger });
  plane.setSnapshot(compileRouting(RoutingDocument.parse(document), 1, { identity: identityCompiler() }));
  const { port } = await plane.listen();
  return { url: `http://127.0.0.1:${port}`, lines, close: () => plane.drain(1_000) };
}

/** stable (plain http) and candidate (the given https upstream); `x-canary: 1` picks the candidate. */
function candidateOver(candidate: Record<string, unknown>, stableUrl: string) {
  return {
    upstreams: { stable: { servers: [stableUrl] }, candidate },
    services: [{ name: 'web', stable: 'stable', release: { candidate: 'candidate', rules: [{ header: { name: 'x-canary', equals: '1' } }] } }],
  };
}

/** One service whose stable upstream is the given one. */
function stableOnly(upstream: Record<string, unknown>) {
  return { upstreams: { api: upstream }, services: [{ name: 'api', stable: 'api' }] };
}

let pki: TestPki;
let plain: Backend;
let verified: TlsBackend;
let named: TlsBackend;
let mutual: TlsBackend;

beforeAll(async () => {
  pki = makeTestPki();
  plain = await startBackend('stable');
  verified = await startTlsBackend('tls', pki.server);
  named = await startTlsBackend('named', pki.namedServer);
  mutual = await startTlsBackend('mutual', pki.server, { requireClientCertFrom: pki.ca });
});

afterAll(async () => {
  await Promise.all([plain?.close(), verified?.close(), named?.close(), mutual?.close()]);
  pki?.remove();
});

describe('upstream TLS', () => {
  it('verifies an https:// server against the CA bundle the upstream names', async () => {
    const gateway = await startLoggedPlane(stableOnly({ servers: [verified.url], tls: { ca: pki.ca.cert } }));
    try {
      const reply = await send(gateway.url, { path: '/ok' });
      expect(reply.status).toBe(200);
      expect(reply.json()).toEqual({ version: 'tls' });
    } finally {
      await gateway.close();
    }
  });

  it('refuses a server whose certificate the system CAs do not vouch for, by default', async () => {
    const gateway = await startLoggedPlane(stableOnly({ servers: [verified.url] }));
    try {
      const reply = await send(gateway.url, { path: '/default' });
      expect(reply.status).toBe(502);
      expect(reply.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_TLS' } });
    } finally {
      await gateway.close();
    }
  });

  it('refuses a server signed by another CA with an error naming the upstream, and logs the server', async () => {
    const gateway = await startLoggedPlane(stableOnly({ servers: [verified.url], tls: { ca: pki.otherCa.cert } }));
    try {
      const before = verified.seen.length;
      const reply = await send(gateway.url, { path: '/wrong-ca' });
      expect(reply.status).toBe(502);
      const error = reply.json<{ error: { code: string; message: string } }>().error;
      expect(error.code).toBe('GG_UPSTREAM_TLS');
      expect(error.message).toContain('upstream "api"');
      expect(error.message).toMatch(/certificate/i);
      const line = gateway.lines.find((entry) => entry.code === 'GG_UPSTREAM_TLS');
      expect(line).toMatchObject({ upstream: 'api', server: verified.url });
      expect(String(line!.msg)).toMatch(/TLS with the upstream server failed/);
      // The handshake failed: the server's application never saw the request.
      expect(verified.seen.length).toBe(before);
    } finally {
      await gateway.close();
    }
  });

  it('sends a candidate whose server fails verification to stable, never a 5xx', async () => {
    const gateway = await startLoggedPlane(candidateOver({ servers: [verified.url], tls: { ca: pki.otherCa.cert } }, plain.url));
    try {
      for (let i = 0; i < 5; i++) {
        const reply = await send(gateway.url, { path: `/fallback-${i}`, headers: { 'x-canary': '1' } });
        expect(reply.status, `request ${i}`).toBe(200);
        expect(reply.json(), `request ${i}`).toMatchObject({ version: 'stable' });
      }
      expect(gateway.lines.some((entry) => entry.code === 'GG_UPSTREAM_TLS' && entry.upstream === 'candidate' && entry.server === verified.url)).toBe(true);
    } finally {
      await gateway.close();
    }
  });

  it('sends the configured serverName as SNI and checks the certificate against it', async () => {
    const gateway = await startLoggedPlane(stableOnly({ servers: [named.url], tls: { ca: pki.ca.cert, serverName: 'api.internal.test' } }));
    try {
      const before = named.seen.length;
      const reply = await send(gateway.url, { path: '/sni' });
      expect(reply.status).toBe(200);
      expect(reply.json()).toEqual({ version: 'named' });
      expect(named.seen[before]!.servername).toBe('api.internal.test');
    } finally {
      await gateway.close();
    }
  });

  it('refuses a certificate that does not name the expected server', async () => {
    // The certificate names api.internal.test only; the server URL is an IP address.
    const byIp = await startLoggedPlane(stableOnly({ servers: [named.url], tls: { ca: pki.ca.cert } }));
    const byOtherName = await startLoggedPlane(stableOnly({ servers: [named.url], tls: { ca: pki.ca.cert, serverName: 'billing.internal.test' } }));
    try {
      for (const gateway of [byIp, byOtherName]) {
        const reply = await send(gateway.url, { path: '/name' });
        expect(reply.status).toBe(502);
        expect(reply.json<{ error: { code: string; message: string } }>().error).toMatchObject({ code: 'GG_UPSTREAM_TLS' });
      }
      expect(byOtherName.lines.find((entry) => entry.code === 'GG_UPSTREAM_TLS')?.msg).toMatch(/billing\.internal\.test/);
    } finally {
      await Promise.all([byIp.close(), byOtherName.close()]);
    }
  });

  it('sends the server URL host as SNI by default, and none for an IP address', async () => {
    const byName = `https://localhost:${verified.port}`;
    const gateway = await startLoggedPlane({
      upstreams: { byName: { servers: [byName], tls: { ca: pki.ca.cert } }, byIp: { servers: [verified.url], tls: { ca: pki.ca.cert } } },
      services: [
        { name: 'by-name', match: { pathPrefix: '/name' }, stable: 'byName' },
        { name: 'by-ip', match: { pathPrefix: '/ip' }, stable: 'byIp' },
      ],
    });
    try {
      let before = verified.seen.length;
      expect((await send(gateway.url, { path: '/name' })).status).toBe(200);
      expect(verified.seen[before]!.servername).toBe('localhost');
      before = verified.seen.length;
      expect((await send(gateway.url, { path: '/ip' })).status).toBe(200);
      expect(verified.seen[before]!.servername).toBeFalsy();
    } finally {
      await gateway.close();
    }
  });

  it('presents the client certificate to a server that requires one (mTLS), and fails without it', async () => {
    const withCert = await startLoggedPlane(stableOnly({ servers: [mutual.url], tls: { ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key } }));
    const withoutCert = await startLoggedPlane(stableOnly({ servers: [mutual.url], tls: { ca: pki.ca.cert } }));
    try {
      const reply = await send(withCert.url, { path: '/mtls' });
      expect(reply.status).toBe(200);
      expect(reply.json()).toEqual({ version: 'mutual' });
      expect(mutual.seen.at(-1)!.clientCn).toBe('graygate-client');
      const seenBefore = mutual.seen.length;
      const refused = await send(withoutCert.url, { path: '/mtls' });
      expect(refused.status).toBe(502);
      expect(refused.json()).toMatchObject({ error: { code: 'GG_UPSTREAM_TLS' } });
      expect(refused.json<{ error: { message: string } }>().error.message).toMatch(/client certificate/);
      expect(mutual.seen.length).toBe(seenBefore);
    } finally {
      await Promise.all([withCert.close(), withoutCert.close()]);
    }
  });

  it('accepts any certificate only with verify: false, and says so in the log', async () => {
    const gateway = await startLoggedPlane(stableOnly({ servers: [verified.url], tls: { verify: false } }));
    try {
      const reply = await send(gateway.url, { path: '/unverified' });
      expect(reply.status).toBe(200);
      const warning = gateway.lines.find((entry) => entry.event === 'upstream-tls-unverified');
      expect(warning).toMatchObject({ upstream: 'api', level: 40 });
    } finally {
      await gateway.close();
    }
  });

  it('logs unusable TLS files with the field and path, and degrades the candidate to stable', async () => {
    const missing = `${pki.dir}/no-such-ca.pem`;
    const gateway = await startLoggedPlane(candidateOver({ servers: [verified.url], tls: { ca: missing } }, plain.url));
    try {
      const line = gateway.lines.find((entry) => entry.event === 'upstream-tls-files');
      expect(line).toMatchObject({ upstream: 'candidate', level: 50 });
      expect(String(line!.msg)).toContain(`upstreams.candidate.tls.ca: cannot read ${missing} (ENOENT)`);
      const reply = await send(gateway.url, { path: '/files', headers: { 'x-canary': '1' } });
      expect(reply.status).toBe(200);
      expect(reply.json()).toMatchObject({ version: 'stable' });
    } finally {
      await gateway.close();
    }
  });
});
