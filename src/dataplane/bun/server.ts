import type { Logger } from 'pino';
import type { Settings } from '../../config/schema.js';
import { rateLimited } from '../../observe/log.js';
import type { IdentitySample } from '../../observe/identity-sample.js';
import { NO_OBSERVER, type RequestObserver } from '../../observe/request-observer.js';
import { compileCidrList } from '../../rules/cidr.js';
import type { Decision, RoutingSnapshot } from '../../rules/snapshot.js';
import { classifyUpstreamError, RoundRobin, type ServerHealth, type UpstreamFailure } from '../balancer.js';
import { buildUpstreamRequestHeaders, checkRequestFraming, unwrapMappedIpv4 } from '../headers.js';
import { buildUpstreams, decideOrStable, hasRequestBody, identify, type RouteGeneration, type ServerEntry, type UpstreamCounter, type UpstreamRuntime } from '../route.js';
import type { DataPlane, DataPlaneOptions, DataPlaneStats } from '../runtime.js';
import { bunRuntime, type BunFetchInit, type BunHeaders, type BunServer, type BunWebSocketHandler } from './bun-api.js';
import { BunRequestFacts } from './facts.js';
import { applyDecisionHeadersTo, headerList, stripHopByHop } from './headers.js';
import { BUN_ERROR_CODES, BunExchangeRecord, errorResponse, GatewayAbort, watchIdle } from './exchange.js';
import { openUpstreamWebSocket, Tunnel, tunnelHandlers, type TunnelHost } from './websocket.js';
import { idleGraceFor, waitForQuiet } from '../shutdown.js';
import { pathForLog } from '../../observe/redact.js';
import { unsupportedOnRuntime } from '../runtime-support.js';
import { unsupportedUpstreamSetting } from '../upstream-support.js';

const NEVER_TRUSTED = (): boolean => false;

/** Bun keeps upstream connections itself (fetch): a server is the shared entry and nothing more. */
type Generation = RouteGeneration<ServerEntry>;

/** Response bodies with a Content-Length up to this size are not timed for idleness (see attempt()). */
const WATCHED_BODY_BYTES = 256 * 1024;

/** Request headers Bun's client WebSocket writes itself, for its own handshake with the upstream. */
const OWN_HANDSHAKE_HEADERS: ReadonlySet<string> = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol']);

/**
 * The Bun data plane: Bun.serve for clients and Bun's fetch for upstreams (Bun keeps the upstream
 * connections alive itself), streaming both ways, `decompress: false` so bodies pass byte for byte.
 * Header rules, balancing and decision headers are the shared runtime-neutral code; what Bun
 * cannot do the way node:http does is listed in the README ("Bun data plane").
 */
export class BunDataPlane implements DataPlane, TunnelHost {
  readonly observer: RequestObserver;
  readonly identitySample: IdentitySample | undefined;
  private server: BunServer | undefined;
  private generation: Generation | undefined;
  private readonly health = new Map<string, ServerHealth>();
  private readonly counters = new Map<string, UpstreamCounter>();
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly isTrusted: (ip: string) => boolean;
  private readonly logFault: ReturnType<typeof rateLimited>;
  private readonly versionHeader: string | undefined;
  private inFlight = 0;
  /** Requests ever started: the drain waits for it to stop changing. */
  private requestsStarted = 0;
  /** Open WebSocket tunnels, from the upstream's 101 until either side closed. */
  private readonly tunnels = new Set<Tunnel>();
  private draining = false;
  private drainPromise: Promise<void> | undefined;

  constructor(options: DataPlaneOptions) {
    this.settings = options.settings;
    this.logger = options.logger;
    this.logFault = rateLimited(this.logger);
    this.observer = options.observer ?? NO_OBSERVER;
    this.identitySample = options.identitySample;
    this.versionHeader = options.settings.proxy.versionHeader;
    this.isTrusted = options.settings.trustedProxies.length > 0 ? compileCidrList(options.settings.trustedProxies) : NEVER_TRUSTED;
  }

  async listen(): Promise<{ host: string; port: number }> {
    const bun = bunRuntime();
    if (bun === undefined) throw new Error('the Bun data plane needs the Bun runtime (run graygate with bun)');
    const [refusal] = unsupportedOnRuntime('bun', this.settings);
    if (refusal !== undefined || this.settings.listen === null) throw new Error(refusal ?? 'listen: off needs a tls listener, which the Bun data plane cannot serve');
    const { host, port } = this.settings.listen;
    const keepAliveMs = this.settings.proxy.keepAliveTimeoutMs;
    this.server = bun.serve({
      hostname: host,
      port,
      // Several processes on one port (--workers under Bun): the kernel spreads connections.
      reusePort: true,
      idleTimeout: Math.min(255, Math.max(1, Math.ceil(keepAliveMs / 1000))),
      fetch: (request, server) => this.handle(request, server),
      websocket: tunnelHandlers as BunWebSocketHandler<unknown>,
      error: (error) => {
        this.logFault('internal', 'error', { err: error }, 'unexpected error while serving a request');
        return errorResponse('GG_INTERNAL', 'unexpected error in the gateway', false);
      },
    });
    return { host: this.server.hostname, port: this.server.port };
  }

  setSnapshot(snapshot: RoutingSnapshot): void {
    const upstreams = buildUpstreams<ServerEntry>(snapshot, this.health, this.counters, (url, _config, health) => ({ origin: url.origin, hostHeader: url.host, health }), true);
    for (const [name, upstream] of upstreams) {
      const unsupported = unsupportedUpstreamSetting('bun', name, upstream.config);
      if (unsupported === undefined) continue;
      // Not dialled with weaker settings than configured: without servers, a candidate's callers
      // stay on stable and a stable one answers 502.
      this.logger.error({ upstream: name, event: 'upstream-unsupported' }, unsupported);
      upstreams.set(name, { ...upstream, balancer: new RoundRobin<ServerEntry>([], upstream.config.health) });
    }
    // A name no longer routed to is forgotten once nothing is in flight to it (see stats()).
    this.generation = { snapshot, upstreams };
  }

  stats(): DataPlaneStats {
    // Bun exposes no count of idle keep-alive connections: only those with a request in flight,
    // and the WebSocket tunnels. Its fetch exposes no pool either, so per upstream the honest
    // figure for open connections is what is in flight to it (each holds one), open tunnels
    // included; idle pooled sockets are not seen (docs/runtimes.md).
    const upstreams: Record<string, { inFlightRequests: number; openConnections: number }> = {};
    const routed = this.generation?.upstreams;
    for (const [name, counter] of this.counters) {
      if (counter.inFlight === 0 && counter.tunnels === 0 && routed?.has(name) !== true) {
        this.counters.delete(name);
        continue;
      }
      upstreams[name] = { inFlightRequests: counter.inFlight, openConnections: counter.inFlight };
    }
    // An open tunnel to stable means stable has not drained.
    for (const tunnel of this.tunnels) {
      const load = (upstreams[tunnel.upstreamName] ??= { inFlightRequests: 0, openConnections: 0 });
      load.inFlightRequests++;
      load.openConnections++;
    }
    return { openConnections: this.inFlight + this.tunnels.size, inFlightRequests: this.inFlight, upstreams };
  }

  tunnelClosed(tunnel: Tunnel): void {
    this.tunnels.delete(tunnel);
  }

  fault(key: string, fields: object, message: string): void {
    this.logFault(key, 'warn', fields, message);
  }

  // ---- requests --------------------------------------------------------------------------

  private async handle(request: Request, server: BunServer): Promise<Response | undefined> {
    this.inFlight++;
    this.requestsStarted++;
    const record = new BunExchangeRecord(request, performance.now());
    let response: Response | undefined;
    try {
      response = await this.route(request, server, record);
    } catch (error) {
      this.logFault('internal', 'error', { err: error, path: pathForLog(request.url) }, 'unexpected error while routing a request');
      response = errorResponse('GG_INTERNAL', 'unexpected error in the gateway', this.draining);
    } finally {
      // Counts until the response head is handed to Bun; Bun's own stop() waits for the bodies.
      this.inFlight--;
    }
    // A WebSocket tunnel is not a request that closed (as on Node: not counted, not access-logged).
    if (response === undefined) return undefined;
    record.finish(response);
    try {
      this.observer.requestClosed(record);
    } catch (error) {
      // Observability must never cost a request.
      this.logFault('observer', 'error', { err: error }, 'recording a request failed');
    }
    return response;
  }

  /** The response, or undefined when the request became a WebSocket tunnel (Bun answered the 101). */
  private async route(request: Request, server: BunServer, record: BunExchangeRecord): Promise<Response | undefined> {
    const generation = this.generation;
    // Every header in one native call (Bun's toJSON), as the flat list the shared rules take.
    const headerRecord = (request.headers as BunHeaders).toJSON();
    const rawHeaders = headerList(headerRecord);
    const framing = checkRequestFraming(rawHeaders);
    if (framing !== undefined) return errorResponse('GG_BAD_REQUEST', `ambiguous request framing: ${framing}`, true);
    const upgrade = request.headers.get('upgrade');
    if (upgrade !== null) {
      if (this.draining) return errorResponse('GG_SHUTTING_DOWN', 'the gateway is shutting down', true);
      // Bun.serve hands over a connection only as a WebSocket, so other protocols (h2c…) cannot be
      // tunnelled as the Node adapter does.
      if (upgrade.toLowerCase() !== 'websocket') return errorResponse('GG_BAD_REQUEST', `the Bun data plane bridges WebSocket upgrades only, not "${upgrade}"; run graygate on Node for them`, true);
    }
    if (generation === undefined) return errorResponse('GG_UPSTREAM_UNAVAILABLE', 'no routing is loaded yet', this.draining);
    const peerIp = unwrapMappedIpv4(server.requestIP(request)?.address ?? '');
    const facts = new BunRequestFacts(request, headerRecord, peerIp, this.isTrusted);
    record.facts = facts;
    const service = generation.snapshot.matchService(facts.host, facts.path);
    if (service === undefined) return errorResponse('GG_NO_SERVICE', `no service matches host "${facts.host}" and path "${facts.path}"`, this.draining);
    const pending = identify(service, facts);
    if (pending !== undefined) await pending.catch(() => undefined);
    const decision = decideOrStable(this, service, facts);
    // RFC 9112 §6.3: the framing headers say whether a body follows, whatever the method (a GET
    // may carry one); an upgrade request has none.
    const hasBody = upgrade === null && hasRequestBody(headerRecord['transfer-encoding'] as string | undefined, headerRecord['content-length'] as string | undefined);
    // Bun.serve reads and discards the body of a GET or HEAD (its Request has none), and Bun's
    // fetch refuses to send one: forwarding the request would drop the body silently.
    if (hasBody && request.body === null) {
      record.decision = decision;
      return errorResponse('GG_BAD_REQUEST', `the Bun data plane cannot forward a request body on ${request.method} (Bun discards it); send it with another method, or run graygate on Node`, true);
    }
    if (!record.choose(this, generation, service, decision, request.method, hasBody, Date.now())) {
      return errorResponse('GG_UPSTREAM_UNAVAILABLE', `upstream "${decision.upstream}" is not defined in routing version ${generation.snapshot.version}`, this.draining || upgrade !== null);
    }
    try {
      if (upgrade !== null) return await this.bridge(request, server, rawHeaders, facts, record);
      return await this.forward(request, rawHeaders, facts, hasBody, record);
    } finally {
      // Counted in flight to its upstream until the response head is handed to Bun (as the
      // process count is), or until the upgrade became a tunnel (counted as a tunnel from then).
      record.released();
    }
  }

  /**
   * A WebSocket upgrade, routed like a request: opens a client WebSocket to a server of the chosen
   * upstream (after a failure the shared attempt policy says: another server, stable, or fail), and
   * only once that upstream answered 101 switches the client over, with the upstream's subprotocol.
   * Resolves with undefined once switched (Bun writes the 101), or with the error response.
   */
  private async bridge(request: Request, server: BunServer, rawHeaders: readonly string[], facts: BunRequestFacts, attempts: BunExchangeRecord): Promise<Response | undefined> {
    const protocols = (request.headers.get('sec-websocket-protocol') ?? '')
      .split(',')
      .map((token) => token.trim())
      .filter((token) => token !== '');
    for (;;) {
      const upstream = attempts.upstream!;
      const entry = attempts.pick(Date.now());
      if (entry === undefined) return errorResponse('GG_UPSTREAM_CONNECT', `no server of upstream "${upstream.name}" accepted a connection`, true);
      const list = buildUpstreamRequestHeaders(rawHeaders, facts, { preserveHost: this.settings.proxy.preserveHost, originHost: entry.hostHeader, bodyUntouched: true });
      const headers = new Headers();
      for (let i = 0; i < list.length; i += 2) {
        const name = list[i]!;
        if (!OWN_HANDSHAKE_HEADERS.has(name.toLowerCase())) headers.append(name, list[i + 1]!);
      }
      const timeouts = upstream.config.timeouts;
      const url = `ws${entry.origin.slice(4)}${facts.pathAndQuery}`;
      const outcome = await openUpstreamWebSocket(url, headers, protocols, timeouts.connectMs + timeouts.responseHeadersMs, request.signal);
      if (!('code' in outcome)) {
        attempts.answered();
        const tunnel = new Tunnel(this, outcome, upstream.name);
        // An empty Sec-WebSocket-Protocol keeps Bun from choosing the client's first offer itself:
        // the client gets what the upstream chose, or none when it chose none.
        const switchHeaders: Record<string, string> = { 'sec-websocket-protocol': outcome.protocol };
        // An anonymous caller minted an id to decide this upgrade: hand it back on the 101, so the
        // next connection of the same browser gets the same version.
        if (facts.mintedAnonymousCookie !== undefined) switchHeaders['set-cookie'] = facts.mintedAnonymousCookie;
        if (request.signal.aborted || !server.upgrade(request, { data: tunnel, headers: switchHeaders })) {
          outcome.close(1001, 'the client went away');
          return errorResponse('GG_BAD_REQUEST', 'the WebSocket handshake could not be completed', true);
        }
        this.tunnels.add(tunnel);
        return undefined;
      }
      // A client that left is not the upstream's failure.
      if (request.signal.aborted) return errorResponse('GG_UPSTREAM_RESET', outcome.message, true);
      if (outcome.refusedWith !== undefined) {
        // The upstream answered, with another status than 101: the server is up, and its answer is
        // not a failure to retry. Bun's client does not expose that answer, so the client gets a 502.
        attempts.answered();
        this.logFault(`upgrade-refused:${upstream.name}`, 'warn', { upstream: upstream.name, status: outcome.refusedWith }, outcome.message);
        return errorResponse(outcome.code, `${outcome.message} (upstream "${upstream.name}")`, true);
      }
      if (attempts.failed(this, outcome, false, Date.now()) === 'fail') return errorResponse(outcome.code, `${outcome.message} (upstream "${upstream.name}")`, true);
    }
  }

  private async forward(request: Request, rawHeaders: readonly string[], facts: BunRequestFacts, hasBody: boolean, record: BunExchangeRecord): Promise<Response> {
    for (;;) {
      const upstream = record.upstream!;
      const entry = record.pick(Date.now());
      if (entry === undefined) return errorResponse('GG_UPSTREAM_CONNECT', `no server of upstream "${upstream.name}" accepted a connection`, this.draining);
      const outcome = await this.attempt(request, rawHeaders, facts, hasBody, upstream, entry, record.decision!);
      if (outcome instanceof Response) return outcome;
      // A client that left is not the upstream's failure; after a failure the shared policy decides.
      if (request.signal.aborted || record.failed(this, outcome, false, Date.now()) === 'fail') {
        // A request body already (partly) read leaves the client connection in an unknown state.
        return errorResponse(outcome.code, `${outcome.message} (upstream "${upstream.name}")`, this.draining || hasBody);
      }
    }
  }

  /** One try against one server: the client response, or why it failed before any response. */
  private async attempt(
    request: Request,
    rawHeaders: readonly string[],
    facts: BunRequestFacts,
    hasBody: boolean,
    upstream: UpstreamRuntime,
    entry: ServerEntry,
    decision: Decision,
  ): Promise<Response | UpstreamFailure> {
    const list = buildUpstreamRequestHeaders(rawHeaders, facts, { preserveHost: this.settings.proxy.preserveHost, originHost: entry.hostHeader, bodyUntouched: true });
    const upstreamHeaders = new Headers();
    for (let i = 0; i < list.length; i += 2) upstreamHeaders.append(list[i]!, list[i + 1]!);
    const controller = new AbortController();
    // A client that leaves aborts the upstream request, so its connection and buffers are released.
    const onClientAbort = () => controller.abort(new GatewayAbort('GG_CLIENT_CLOSED'));
    request.signal.addEventListener('abort', onClientAbort, { once: true });
    const timeouts = upstream.config.timeouts;
    // Bun's fetch has no connect timeout of its own and does not say when the connection is up, so
    // one timer covers connecting and waiting for the head: connectMs + responseHeadersMs.
    const headersMs = timeouts.connectMs + timeouts.responseHeadersMs;
    const timer = timeouts.responseHeadersMs > 0 ? setTimeout(() => controller.abort(new GatewayAbort('UND_ERR_HEADERS_TIMEOUT')), headersMs) : undefined;
    const path = facts.pathAndQuery;
    const init: BunFetchInit = {
      method: request.method,
      headers: upstreamHeaders,
      body: hasBody ? request.body : null,
      redirect: 'manual',
      decompress: false,
      signal: controller.signal,
    };
    // A streamed request body needs half-duplex; set only then (no object spread per request).
    if (hasBody) init.duplex = 'half';
    let response: Response;
    try {
      response = await fetch(entry.origin + path, init);
    } catch (error) {
      const reason = controller.signal.aborted ? (controller.signal.reason as { code?: string }) : (error as { code?: string; name?: string });
      const raw = reason?.code ?? (error as { name?: string }).name ?? '';
      return classifyUpstreamError({ code: BUN_ERROR_CODES[raw] ?? raw });
    } finally {
      clearTimeout(timer);
    }
    entry.health.recordSuccess();
    // Bun lets a fetched Response's headers be edited, and Bun.serve sends that Response as the
    // answer: the head is edited in place (the shared rules: hop-by-hop and Connection-named
    // headers out, decision headers in) and the Response itself goes back, with no copy of the
    // headers and no JS stream over its body. The adapter tests pin that Bun still allows it.
    const headers = response.headers;
    stripHopByHop(headers);
    applyDecisionHeadersTo(headers, decision, facts, this.versionHeader, upstream.name);
    if (this.draining) headers.set('connection', 'close');
    // The upstream body goes to the client as it arrives, never buffered whole. Timing its reads
    // (watchIdle) takes it off Bun's native pipe, which costs half the throughput, so only bodies
    // that can stall for long are watched: streamed ones (no Content-Length) and large ones. A
    // short body with a length rides the native pipe, bounded by Bun's own socket idle timeout.
    // (`body` is read last: reading it makes a JS stream of the native one.)
    const length = headers.get('content-length');
    const watched = timeouts.idleMs > 0 && (length === null || Number(length) > WATCHED_BODY_BYTES) && response.body !== null;
    if (!watched) return response;
    const body = watchIdle(response.body!, timeouts.idleMs, controller, upstream.name, this);
    return new Response(body, { status: response.status, statusText: response.statusText, headers });
  }

  // ---- shutdown --------------------------------------------------------------------------

  drain(graceMs: number): Promise<void> {
    this.drainPromise ??= this.runDrain(graceMs);
    return this.drainPromise;
  }

  private async runDrain(graceMs: number): Promise<void> {
    this.draining = true;
    const server = this.server;
    if (server === undefined) return;
    const startedAt = Date.now();
    const deadline = startedAt + Math.max(0, graceMs);
    // Bun's stop() closes every idle keep-alive connection at once, under a request its client
    // may already be sending, and Bun cannot close one connection alone. So the listener stays
    // open (answering with `Connection: close`) until nothing has been in flight or started for
    // the idle grace: then every connection left has been idle that long, and stop() is safe.
    await waitForQuiet({ startedAt, deadline, idleGraceMs: idleGraceFor(graceMs), activity: () => this.requestsStarted, inFlight: () => server.pendingRequests });
    // Resolves once every connection is done, WebSockets included.
    const stopped = Promise.resolve(server.stop(false)).then(() => 'done' as const);
    // Tunnels (WebSockets) have no natural end: like the Node adapter, they are closed once the
    // HTTP requests are done, with 1001 "going away" to both sides.
    for (const tunnel of this.tunnels) tunnel.close(1001, 'the gateway is shutting down');
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cap = new Promise<'cap'>((resolve) => {
      timer = setTimeout(() => resolve('cap'), Math.max(0, deadline - Date.now()));
    });
    const outcome = await Promise.race([stopped, cap]);
    clearTimeout(timer);
    if (outcome === 'cap') {
      this.logger.warn({ inFlight: server.pendingRequests, tunnels: server.pendingWebSockets }, 'shutdown grace ended with requests in flight; closing them');
      await server.stop(true);
    }
  }
}
