import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { constants as http2Constants, type Http2ServerRequest, type Http2Session } from 'node:http2';
import net, { type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Settings } from '../../config/schema.js';
import { rateLimited } from '../../observe/log.js';
import type { IdentitySample } from '../../observe/identity-sample.js';
import { NO_OBSERVER, type RequestObserver } from '../../observe/request-observer.js';
import { compileCidrList } from '../../rules/cidr.js';
import type { CompiledService, RoutingSnapshot } from '../../rules/snapshot.js';
import { checkRequestFraming, unwrapMappedIpv4 } from '../headers.js';
import { decideOrStable, identify, UpstreamAttempts } from '../route.js';
import type { DataPlane, DataPlaneOptions, DataPlaneStats, ListenAddresses } from '../runtime.js';
import { ClientConnections, idleGraceFor } from '../shutdown.js';
import { pathForLog } from '../../observe/redact.js';
import { Exchange, writeErrorResponse, type ExchangeHost } from './exchange.js';
import { NodeRequestFacts } from './facts.js';
import { adoptHttp2Request, isHttp2 } from './http2-request.js';
import { createTlsServer, TlsCertificates, type TlsServer } from './tls-listener.js';
import { startMemoryGuard } from './memory-guard.js';
import { proxyUpgrade, writeRawError, type UpgradeHost } from './upgrade.js';
import { PoolRegistry, type NodeServer } from './upstream.js';
import { listenBehindProxyProtocol, PROXY_PROTOCOL_OUTCOMES } from './proxy-protocol.js';
import { registerProxyProtocolMetrics, type Registry } from '../../observe/metrics.js';

const NEVER_TRUSTED = (): boolean => false;

/** Per HTTP/2 session: streams the client abandoned before their response ended, in the current second. */
const kAbandoned = Symbol('graygate.abandoned');
/** Per HTTP/2 session: its requests not yet answered in full. */
const kBusy = Symbol('graygate.busy');
type CountedSession = Http2Session & { [kAbandoned]?: { since: number; count: number }; [kBusy]?: number };
/** The session of an HTTP/2 request, kept on it: a stream forgets its session once it closes. */
const kSession = Symbol('graygate.session');
type SessionTagged = IncomingMessage & { [kSession]?: CountedSession };

/**
 * RFC 9112 §3.2.2: a request target in absolute form (`GET http://app.example/x HTTP/1.1`, as
 * clients configured with an HTTP proxy send) names the host, and the Host header is ignored. The
 * request is rewritten to origin form with that host, so it matches and is forwarded like any
 * other, byte for byte in its path. Other forms (`*`, authority form) are left to match nothing.
 */
function adoptAbsoluteForm(req: IncomingMessage): void {
  const url = req.url!;
  const schemeEnd = url.indexOf('://');
  if (schemeEnd < 0) return;
  const scheme = url.slice(0, schemeEnd).toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') return;
  const authorityStart = schemeEnd + 3;
  let pathStart = authorityStart;
  while (pathStart < url.length && url.charCodeAt(pathStart) !== 47 /* / */ && url.charCodeAt(pathStart) !== 63 /* ? */) pathStart++;
  let authority = url.slice(authorityStart, pathStart);
  const at = authority.lastIndexOf('@');
  if (at >= 0) authority = authority.slice(at + 1); // userinfo is not part of the host
  if (authority.length === 0) return;
  const rest = url.slice(pathStart);
  req.url = rest.length === 0 ? '/' : rest.charCodeAt(0) === 63 ? `/${rest}` : rest;
  req.headers.host = authority;
  // node:http already refused a request without Host (HTTP/1.1 requires one, RFC 9112 §3.2).
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'host') raw[i + 1] = authority;
}

/**
 * The node:http + undici data plane. Per request: one read of the current generation (snapshot
 * + pools), facts over the IncomingMessage, then the shared route (`dataplane/route.ts`: match →
 * identity → decide → choose → attempt policy); this file and its neighbours only move bytes.
 */
export class NodeDataPlane implements DataPlane, ExchangeHost, UpgradeHost {
  readonly preserveHost: boolean;
  readonly observer: RequestObserver;
  readonly identitySample: IdentitySample | undefined;
  readonly versionHeader: string | undefined;
  /** The plain HTTP listener (absent with `listen: off`). */
  private readonly server: http.Server | undefined;
  /** The TLS listener (HTTP/2 and HTTP/1.1), when `tls` is configured. */
  private readonly tlsServer: TlsServer | undefined;
  readonly tlsCertificates: TlsCertificates | undefined;
  private readonly maxHeaderListBytes: number;
  private readonly abandonedStreamsPerSecond: number;
  /** Open HTTP/2 sessions: a drain sends each a GOAWAY and lets its streams finish. */
  private readonly sessions = new Set<Http2Session>();
  private readonly registry: PoolRegistry;
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly metricsRegistry: Registry | undefined;
  private readonly isTrusted: (ip: string) => boolean;
  private readonly logFault: ReturnType<typeof rateLimited>;
  private readonly sockets = new Set<Socket>();
  /** Connections that sent ambiguous framing: whatever else arrives on them is dropped. */
  private readonly poisoned = new WeakSet<Socket>();
  private readonly tunnels = new Map<Duplex, Duplex>();
  private inFlight = 0;
  private draining = false;
  private drainPromise: Promise<void> | undefined;
  private stopMemoryGuard: (() => void) | undefined;
  /** Which connections have a request in flight, for a drain that closes only idle ones. */
  private readonly connections = new ClientConnections<Socket>();

  constructor(options: DataPlaneOptions) {
    this.settings = options.settings;
    this.logger = options.logger;
    this.metricsRegistry = options.registry;
    this.preserveHost = options.settings.proxy.preserveHost;
    this.observer = options.observer ?? NO_OBSERVER;
    this.identitySample = options.identitySample;
    this.versionHeader = options.settings.proxy.versionHeader;
    this.logFault = rateLimited(this.logger);
    this.isTrusted = options.settings.trustedProxies.length > 0 ? compileCidrList(options.settings.trustedProxies) : NEVER_TRUSTED;
    this.registry = new PoolRegistry(this.logger, (origin) => this.logger.debug({ origin }, 'closed the pool of a server no snapshot uses'));
    const proxy = options.settings.proxy;
    const requestTimeout = proxy.clientRequestTimeoutMs;
    // Node refuses headersTimeout > requestTimeout; the request timeout covers the headers too.
    const headersTimeout = requestTimeout > 0 ? Math.min(proxy.clientHeadersTimeoutMs, requestTimeout) : proxy.clientHeadersTimeoutMs;
    const http1 = {
      headersTimeout,
      requestTimeout,
      keepAliveTimeout: proxy.keepAliveTimeoutMs,
      // Node checks these timeouts on an interval (30 s by default): keep it below the timeouts.
      connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(headersTimeout / 4) || 1_000)),
    };
    if (options.settings.listen !== null) {
      const server = http.createServer(
        {
          ...http1,
          // Never the lenient parser: it is what request smuggling rides on.
          insecureHTTPParser: false,
          noDelay: true,
        },
        (req, res) => this.handleRequest(req, res),
      );
      server.on('connection', (socket: Socket) => {
        this.tcpOpened(socket);
        this.connections.opened(socket);
      });
      this.attachHttp1(server);
      this.server = server;
    }
    const tls = options.settings.tls;
    this.maxHeaderListBytes = tls?.http2.maxHeaderListBytes ?? 0;
    this.abandonedStreamsPerSecond = 2 * (tls?.http2.maxConcurrentStreams ?? 0);
    if (tls !== undefined) {
      // Reads and checks every file now: a start with a broken pair fails, naming the file.
      this.tlsCertificates = new TlsCertificates(tls, this.logger);
      const server = createTlsServer(tls, proxy, this.tlsCertificates);
      // HTTP/1.1 on the TLS listener runs node:http's own connection handling with these.
      Object.assign(server, http1);
      server.on('connection', (socket: Socket) => this.tcpOpened(socket));
      server.on('secureConnection', (socket: TLSSocket) => {
        // HTTP/1.1 connections are drained like the plain listener's; HTTP/2 ones by GOAWAY.
        if (socket.alpnProtocol === 'h2') return;
        this.connections.opened(socket);
        socket.on('close', this.onConnectionClose);
      });
      server.on('tlsClientError', (error: Error & { code?: string }, socket: TLSSocket) => {
        this.logger.debug({ code: error.code, err: error }, 'TLS handshake failed');
        socket.destroy();
      });
      server.on('session', (session: Http2Session) => this.sessionOpened(session));
      server.on('request', (req: IncomingMessage, res: ServerResponse) => this.handleRequest(req, res));
      this.attachHttp1(server);
      this.tlsServer = server;
    }
  }

  /** What node:http's connection handling emits, on either listener. */
  private attachHttp1(server: http.Server | TlsServer): void {
    server.on('clientError', (error: Error & { code?: string }, socket: Duplex) => this.handleClientError(error, socket));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.handleUpgrade(req, socket, head));
  }

  private tcpOpened(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', this.onConnectionClose);
  }

  /**
   * Every connection's 'close' listener, one function for all of them (`this` is the socket): a
   * server taking a new TLS connection per request would otherwise make closures per connection.
   * 'close' is emitted once, so `on` is enough (no `once` wrapper either).
   */
  private readonly onConnectionClose = ((plane: NodeDataPlane) =>
    function (this: Socket): void {
      plane.sockets.delete(this);
      plane.connections.forget(this);
    })(this);

  private sessionOpened(session: Http2Session): void {
    this.sessions.add(session);
    session.once('close', () => this.sessions.delete(session));
    // Without this a stream or session error would be an uncaught 'error' event.
    session.on('error', (error: Error & { code?: string }) => this.logger.debug({ code: error.code, err: error }, 'HTTP/2 session error'));
    // An idle connection is closed like an idle HTTP/1.1 keep-alive one: GOAWAY, then close.
    // A session with a request still waiting for its upstream is not idle, however silent.
    session.setTimeout(this.settings.proxy.keepAliveTimeoutMs, () => {
      if (((session as CountedSession)[kBusy] ?? 0) === 0) session.close();
    });
    if (this.draining) session.close();
  }

  get isDraining(): boolean {
    return this.draining;
  }

  async listen(): Promise<ListenAddresses> {
    // Each listener listens itself, or behind a PROXY protocol front that hands it each connection
    // (the header comes before the TLS handshake); both fronts count into one metric.
    const proxyProtocol = this.settings.proxyProtocol;
    const onOutcome = proxyProtocol !== undefined && this.metricsRegistry !== undefined ? registerProxyProtocolMetrics(this.metricsRegistry, PROXY_PROTOCOL_OUTCOMES) : undefined;
    const listenOn = async (server: net.Server, address: { host: string; port: number }): Promise<{ host: string; port: number }> => {
      const bound = await listenBehindProxyProtocol(server, address, proxyProtocol, { logger: this.logger, onOutcome });
      server.on('error', (error) => this.logger.error({ err: error }, 'proxy server error'));
      return { host: bound.address, port: bound.port };
    };
    let plain: { host: string; port: number } | undefined;
    let secure: { host: string; port: number } | undefined;
    if (this.server !== undefined) plain = await listenOn(this.server, this.settings.listen!);
    if (this.tlsServer !== undefined) {
      try {
        secure = await listenOn(this.tlsServer, this.settings.tls!.listen);
      } catch (error) {
        this.server?.close();
        throw error;
      }
      this.tlsCertificates!.watch(this.tlsServer);
    }
    this.stopMemoryGuard = startMemoryGuard();
    return { ...(plain ?? secure!), ...(secure ? { tls: secure } : {}) };
  }

  setSnapshot(snapshot: RoutingSnapshot): void {
    this.registry.install(snapshot);
  }

  stats(): DataPlaneStats {
    return { openConnections: this.sockets.size, inFlightRequests: this.inFlight, upstreams: this.registry.loads() };
  }

  tlsReloads(): { applied: number; refused: number } {
    return { applied: this.tlsCertificates?.appliedReloads ?? 0, refused: this.tlsCertificates?.refusedReloads ?? 0 };
  }

  fault(key: string, fields: object, message: string): void {
    this.logFault(key, 'warn', fields, message);
  }

  // ---- requests --------------------------------------------------------------------------

  private handleRequest(req: IncomingMessage, res: ServerResponse): void {
    try {
      if (isHttp2(req)) {
        (req as SessionTagged)[kSession] = (req as unknown as Http2ServerRequest).stream.session as CountedSession;
        const refusal = adoptHttp2Request(req, this.maxHeaderListBytes);
        if (refusal !== undefined) {
          req.resume();
          writeErrorResponse(res, refusal.code, refusal.message, false);
          return;
        }
      }
      this.routeRequest(req, res);
    } catch (error) {
      // A bug must cost one request, never the process and every connection on it.
      this.logFault('internal', 'error', { err: error, path: pathForLog(req.url) }, 'unexpected error while routing a request');
      if (!res.headersSent) writeErrorResponse(res, 'GG_INTERNAL', 'unexpected error in the gateway', true);
      else res.destroy();
    }
  }

  private routeRequest(req: IncomingMessage, res: ServerResponse): void {
    // Origin form ("/path") is the rule; anything else is rare enough to be checked here.
    if (req.url !== undefined && req.url.charCodeAt(0) !== 47 /* / */) adoptAbsoluteForm(req);
    const generation = this.registry.acquire();
    this.inFlight++;
    const session = (req as SessionTagged)[kSession];
    if (session !== undefined) session[kBusy] = (session[kBusy] ?? 0) + 1;
    const socket = req.socket;
    this.connections.requestStarted(socket);
    const peerIp = unwrapMappedIpv4(socket.remoteAddress ?? '');
    const facts = new NodeRequestFacts(req, peerIp, this.isTrusted);
    const exchange = new Exchange(this, generation, req, res, facts);
    // HTTP/2 says the same with GOAWAY, sent to every session when the drain starts.
    if (this.draining && req.httpVersionMajor !== 2) res.setHeader('connection', 'close');
    if (this.poisoned.has(socket)) {
      // Node hands us requests pipelined behind a refused one; after ambiguous framing their
      // boundaries are exactly what cannot be trusted, so none of them is forwarded.
      res.destroy();
      return;
    }
    const framing = checkRequestFraming(req.rawHeaders);
    if (framing !== undefined) {
      // Framing we cannot trust leaves the rest of the connection unreadable: answer and close.
      this.poisoned.add(socket);
      exchange.bytesSent = writeErrorResponse(res, 'GG_BAD_REQUEST', `ambiguous request framing: ${framing}`, true);
      req.resume();
      return;
    }
    if (generation === undefined) {
      exchange.respondError('GG_UPSTREAM_UNAVAILABLE', 'no routing is loaded yet');
      return;
    }
    const service = generation.snapshot.matchService(facts.host, facts.path);
    if (service === undefined) {
      exchange.respondError('GG_NO_SERVICE', `no service matches host "${facts.host}" and path "${facts.path}"`);
      return;
    }
    const pending = identify(service, facts);
    if (pending !== undefined) {
      // Only a cache miss waits (one store lookup); the steady state stays synchronous.
      pending.then(
        () => this.decideAndForward(exchange, service),
        () => this.decideAndForward(exchange, service),
      );
      return;
    }
    this.decideAndForward(exchange, service);
  }

  private decideAndForward(exchange: Exchange, service: CompiledService): void {
    const decision = decideOrStable(this, service, exchange.facts);
    try {
      exchange.forward(service, decision, Date.now());
    } catch (error) {
      this.logFault('internal', 'error', { err: error, service: service.name }, 'unexpected error while forwarding a request');
      exchange.respondError('GG_INTERNAL', 'unexpected error in the gateway');
    }
  }

  exchangeClosed(exchange: Exchange): void {
    if (exchange.aborted && exchange.req.httpVersionMajor === 2) this.streamAbandoned(exchange.req);
    if (exchange.generation !== undefined) this.registry.release(exchange.generation);
    this.inFlight--;
    const session = (exchange.req as SessionTagged)[kSession];
    if (session !== undefined) session[kBusy]!--;
    this.connections.requestEnded(exchange.req.socket);
    try {
      this.observer.requestClosed(exchange);
    } catch (error) {
      // Observability must never cost a request or the process.
      this.logFault('observer', 'error', { err: error }, 'recording a request failed');
    }
  }

  /**
   * Rapid reset (CVE-2023-44487): a client that opens streams and resets them at once makes the
   * gateway start a request upstream for each, at no cost to itself, while staying under the
   * concurrent-stream limit. A browser cancels a few streams a second; a session that abandons more
   * than twice its stream limit within one second is told ENHANCE_YOUR_CALM and closed.
   */
  private streamAbandoned(req: IncomingMessage): void {
    const session = (req as SessionTagged)[kSession];
    if (session === undefined || session.destroyed) return;
    const now = Date.now();
    let window = session[kAbandoned];
    if (window === undefined || now - window.since >= 1_000) window = session[kAbandoned] = { since: now, count: 0 };
    if (++window.count <= this.abandonedStreamsPerSecond) return;
    this.logFault('h2-rapid-reset', 'warn', { peer: session.socket?.remoteAddress, streams: window.count }, 'an HTTP/2 client reset streams faster than any browser would (rapid reset); its connection was closed');
    session.destroy(new Error('HTTP/2 rapid reset: the client abandoned too many streams'), http2Constants.NGHTTP2_ENHANCE_YOUR_CALM);
  }

  private handleClientError(error: Error & { code?: string }, socket: Duplex): void {
    if (error.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // Node's parser gave up on the request; the answer says why, with the status of its own code.
    if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') writeRawError(socket, 'GG_REQUEST_TIMEOUT', 'the request was not received in time');
    else if (error.code === 'HPE_HEADER_OVERFLOW') writeRawError(socket, 'GG_HEADERS_TOO_LARGE', 'the request headers are too large');
    else writeRawError(socket, 'GG_BAD_REQUEST', `malformed request (${error.code ?? 'parse error'})`);
  }

  // ---- upgrades --------------------------------------------------------------------------

  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // The connection leaves HTTP: tunnels are closed by the drain once requests are done.
    this.connections.forget(req.socket);
    // Before any I/O: a reset on either side must never become an uncaught 'error'.
    socket.on('error', (error: Error & { code?: string }) => {
      this.logger.debug({ code: error.code }, 'client socket error on an upgraded connection');
      socket.destroy();
    });
    if (this.draining) {
      writeRawError(socket, 'GG_SHUTTING_DOWN', 'the gateway is shutting down');
      return;
    }
    const framing = checkRequestFraming(req.rawHeaders);
    if (framing !== undefined) {
      writeRawError(socket, 'GG_BAD_REQUEST', `ambiguous request framing: ${framing}`);
      return;
    }
    // The generation is only needed to choose; the tunnel does not use the pools.
    const generation = this.registry.acquire();
    if (generation === undefined) {
      writeRawError(socket, 'GG_UPSTREAM_UNAVAILABLE', 'no routing is loaded yet');
      return;
    }
    const peerIp = unwrapMappedIpv4(req.socket.remoteAddress ?? '');
    const facts = new NodeRequestFacts(req, peerIp, this.isTrusted);
    const service = generation.snapshot.matchService(facts.host, facts.path);
    if (service === undefined) {
      this.registry.release(generation);
      writeRawError(socket, 'GG_NO_SERVICE', `no service matches host "${facts.host}" and path "${facts.path}"`);
      return;
    }
    const proceed = (): void => {
      const decision = decideOrStable(this, service, facts);
      const attempts = new UpstreamAttempts<NodeServer>();
      // An upgrade request has no body (RFC 9110 §7.8): it may go to another server or stable.
      const chosen = attempts.choose(this, generation, service, decision, req.method ?? 'GET', false, Date.now());
      this.registry.release(generation);
      if (!chosen) {
        writeRawError(socket, 'GG_UPSTREAM_UNAVAILABLE', `upstream "${decision.upstream}" is not defined in routing version ${generation.snapshot.version}`);
        return;
      }
      if (socket.destroyed) {
        attempts.released();
        return;
      }
      proxyUpgrade(this, req, socket, head, facts, attempts);
    };
    const pending = identify(service, facts);
    if (pending !== undefined) {
      pending.then(proceed, proceed);
      return;
    }
    proceed();
  }

  tunnelOpened(client: Duplex, upstream: Duplex): void {
    this.tunnels.set(client, upstream);
  }

  tunnelClosed(client: Duplex): void {
    this.tunnels.delete(client);
  }

  // ---- shutdown --------------------------------------------------------------------------

  drain(graceMs: number): Promise<void> {
    this.drainPromise ??= this.runDrain(graceMs);
    return this.drainPromise;
  }

  private async runDrain(graceMs: number): Promise<void> {
    const startedAt = Date.now();
    const deadline = startedAt + Math.max(0, graceMs);
    this.draining = true;
    // Stop accepting, but not through http.Server#close(): it also closes every idle keep-alive
    // connection at once, under a request its client may already be sending. Idle connections
    // are closed by the drain after a grace; busy ones close after their `Connection: close`.
    const closed = Promise.all(
      [this.server, this.tlsServer].map((server) => (server === undefined ? undefined : new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve())))),
    );
    this.tlsCertificates?.close();
    // GOAWAY: the client opens no new stream on the session, the streams it has finish, and the
    // session closes once they have (streams it sent after the GOAWAY are refused, safe to retry).
    for (const session of this.sessions) session.close();
    await this.connections.drain({ startedAt, deadline, idleGraceMs: idleGraceFor(graceMs), close: (socket) => socket.destroy(), inFlight: () => this.inFlight });
    if (this.inFlight > 0) this.logger.warn({ inFlight: this.inFlight }, 'shutdown grace ended with requests in flight; closing them');
    // Tunnels (WebSockets) have no natural end: they are closed once HTTP requests are done.
    for (const [client, upstream] of this.tunnels) {
      client.destroy();
      upstream.destroy();
    }
    this.server?.closeAllConnections();
    for (const session of this.sessions) session.destroy();
    // A destroyed socket emits 'close' a loop turn later, after the server has already counted it
    // gone: wait for each, so a finished drain means no connection is open, as stats() then says.
    const socketsClosed = [...this.sockets].map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    for (const socket of this.sockets) socket.destroy();
    await Promise.all([closed, ...socketsClosed]);
    await this.registry.close(Math.max(0, deadline - Date.now()));
    this.stopMemoryGuard?.();
  }
}

