import type { Logger } from 'pino';
import type { Settings, Upstream } from '../../config/schema.js';
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import { rateLimited } from '../../observe/log.js';
import { NO_OBSERVER, type ExchangeRecord, type RequestObserver } from '../../observe/request-observer.js';
import { compileCidrList } from '../../rules/cidr.js';
import type { CompiledService, Decision, RoutingSnapshot } from '../../rules/snapshot.js';
import { RoundRobin, ServerHealth, classifyUpstreamError, isRetryableRequest } from '../balancer.js';
import { buildUpstreamRequestHeaders, checkRequestFraming, unwrapMappedIpv4 } from '../headers.js';
import type { DataPlane, DataPlaneOptions, DataPlaneStats } from '../runtime.js';
import { bunRuntime, type BunFetchInit, type BunHeaders, type BunServer, type BunWebSocketHandler } from './bun-api.js';
import { BunRequestFacts } from './facts.js';
import { applyDecisionHeadersTo, headerList, stripHopByHop } from './headers.js';
import { openUpstreamWebSocket, Tunnel, tunnelHandlers, type TunnelHost } from './websocket.js';
import { idleGraceFor, waitForQuiet } from '../shutdown.js';
import { pathForLog } from '../../observe/redact.js';

const NEVER_TRUSTED = (): boolean => false;

interface ServerEntry {
  readonly origin: string;
  readonly hostHeader: string;
  readonly health: ServerHealth;
}

/** Requests in flight to one upstream name, shared by every snapshot that names it. */
interface UpstreamCounter {
  inFlight: number;
}

interface UpstreamRuntime {
  readonly name: string;
  readonly config: Upstream;
  readonly balancer: RoundRobin<ServerEntry>;
  readonly counter: UpstreamCounter;
}

interface Generation {
  readonly snapshot: RoutingSnapshot;
  readonly upstreams: ReadonlyMap<string, UpstreamRuntime>;
}

/** Bun's fetch reports failures by `code` names of its own; mapped to the errno names the shared classifier knows. */
const BUN_ERROR_CODES: Readonly<Record<string, string>> = {
  ConnectionRefused: 'ECONNREFUSED',
  FailedToOpenSocket: 'ECONNREFUSED',
  ConnectionClosed: 'ECONNRESET',
  ECONNRESET: 'ECONNRESET',
  TimeoutError: 'UND_ERR_HEADERS_TIMEOUT',
};

/** Response bodies with a Content-Length up to this size are not timed for idleness (see attempt()). */
const WATCHED_BODY_BYTES = 256 * 1024;

/** Request headers Bun's client WebSocket writes itself, for its own handshake with the upstream. */
const OWN_HANDSHAKE_HEADERS: ReadonlySet<string> = new Set(['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol']);

function isPromise(value: unknown): value is Promise<void> {
  return value !== undefined && typeof (value as Promise<void>).then === 'function';
}

/**
 * What the observer is told of one request. Bun hands the response body to the client after
 * `fetch` has returned, so a request is reported when its response head is handed over: the
 * duration is time to the response head, and bytes are the Content-Length (-1 without one).
 */
class BunExchangeRecord implements ExchangeRecord {
  facts: BunRequestFacts | undefined = undefined;
  decision: Decision | undefined = undefined;
  upstreamName: string | undefined = undefined;
  serverOrigin: string | undefined = undefined;
  status = 0;
  bytesSent = -1;
  durationMs = 0;
  readonly aborted = false;

  constructor(
    private readonly request: Request,
    private readonly startedAt: number,
  ) {}

  get method(): string {
    return this.request.method;
  }

  get path(): string {
    if (this.facts !== undefined) return this.facts.path;
    // Refused before facts were made (framing, upgrade): cut the path out of the absolute URL.
    const url = this.request.url;
    const start = url.indexOf('/', url.indexOf('://') + 3);
    if (start < 0) return '/';
    const query = url.indexOf('?', start);
    return query < 0 ? url.slice(start) : url.slice(start, query);
  }

  get identitySource(): string | undefined {
    return this.facts?.identitySource;
  }

  finish(response: Response): void {
    this.durationMs = performance.now() - this.startedAt;
    this.status = response.status;
    const length = response.headers.get('content-length');
    this.bytesSent = length === null ? -1 : Number(length);
  }
}

/** The error a client abort or a timeout passes to fetch. */
class GatewayAbort extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/**
 * The Bun data plane: Bun.serve for clients and Bun's fetch for upstreams (Bun keeps the upstream
 * connections alive itself), streaming both ways, `decompress: false` so bodies pass byte for byte.
 * Header rules, balancing and decision headers are the shared runtime-neutral code; what Bun
 * cannot do the way node:http does is listed in the README ("Bun data plane").
 */
export class BunDataPlane implements DataPlane, TunnelHost {
  private server: BunServer | undefined;
  private generation: Generation | undefined;
  private readonly health = new Map<string, ServerHealth>();
  private readonly counters = new Map<string, UpstreamCounter>();
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly isTrusted: (ip: string) => boolean;
  private readonly logFault: ReturnType<typeof rateLimited>;
  private readonly observer: RequestObserver;
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
    this.versionHeader = options.settings.proxy.versionHeader;
    this.isTrusted = options.settings.trustedProxies.length > 0 ? compileCidrList(options.settings.trustedProxies) : NEVER_TRUSTED;
  }

  async listen(): Promise<{ host: string; port: number }> {
    const bun = bunRuntime();
    if (bun === undefined) throw new Error('the Bun data plane needs the Bun runtime (run graygate with bun)');
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
    const upstreams = new Map<string, UpstreamRuntime>();
    const origins = new Set<string>();
    for (const [name, config] of Object.entries(snapshot.upstreams)) {
      const servers = config.servers.map((server): ServerEntry => {
        const url = new URL(server);
        origins.add(url.origin);
        let health = this.health.get(url.origin);
        if (health === undefined) {
          health = new ServerHealth();
          this.health.set(url.origin, health);
        }
        return { origin: url.origin, hostHeader: url.host, health };
      });
      let counter = this.counters.get(name);
      if (counter === undefined) this.counters.set(name, (counter = { inFlight: 0 }));
      upstreams.set(name, { name, config, balancer: new RoundRobin(servers, config.health), counter });
    }
    for (const origin of this.health.keys()) if (!origins.has(origin)) this.health.delete(origin);
    // A name no longer routed to is forgotten once nothing is in flight to it (see stats()).
    this.generation = { snapshot, upstreams };
  }

  stats(): DataPlaneStats {
    // Bun exposes no count of idle keep-alive connections: only those with a request in flight,
    // and the WebSocket tunnels. Its fetch exposes no pool either, so per upstream the honest
    // figure for open connections is what is in flight to it (each holds one), open tunnels
    // included; idle pooled sockets are not seen (README).
    const upstreams: Record<string, { inFlightRequests: number; openConnections: number }> = {};
    const routed = this.generation?.upstreams;
    for (const [name, counter] of this.counters) {
      if (counter.inFlight === 0 && routed?.has(name) !== true) {
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
      // tunnelled as the Node adapter does (README "Bun data plane").
      if (upgrade.toLowerCase() !== 'websocket') return errorResponse('GG_BAD_REQUEST', `the Bun data plane bridges WebSocket upgrades only, not "${upgrade}"; run graygate on Node for them`, true);
    }
    if (generation === undefined) return errorResponse('GG_UPSTREAM_UNAVAILABLE', 'no routing is loaded yet', this.draining);
    const peerIp = unwrapMappedIpv4(server.requestIP(request)?.address ?? '');
    const facts = new BunRequestFacts(request, headerRecord, peerIp, this.isTrusted(peerIp), this.isTrusted);
    record.facts = facts;
    const service = generation.snapshot.matchService(facts.host, facts.path);
    if (service === undefined) return errorResponse('GG_NO_SERVICE', `no service matches host "${facts.host}" and path "${facts.path}"`, this.draining);
    if (service.needsIdentity) {
      const pending = service.resolveIdentity(facts);
      if (isPromise(pending)) await pending.catch(() => undefined);
    }
    let decision: Decision;
    try {
      decision = service.decide(facts);
    } catch (error) {
      this.logFault('decide', 'warn', { service: service.name, err: error }, 'deciding failed; routing to stable');
      decision = service.stableDecision;
    }
    record.decision = decision;
    if (upgrade !== null) return this.bridge(request, server, rawHeaders, facts, generation, service, decision);
    return this.forward(request, rawHeaders, facts, generation, service, decision, record);
  }

  /**
   * The decided upstream, or stable when the decision is a candidate with no server available
   * (fail safe: a candidate that cannot take the request never fails it).
   */
  private chooseUpstream(generation: Generation, service: CompiledService, decision: Decision): UpstreamRuntime | undefined {
    const upstream = generation.upstreams.get(decision.upstream);
    if (decision.version === 'candidate' && (upstream === undefined || !upstream.balancer.hasAvailable(Date.now()))) {
      return generation.upstreams.get(service.stableDecision.upstream);
    }
    return upstream;
  }

  /**
   * A WebSocket upgrade, routed like a request: opens a client WebSocket to a server of the chosen
   * upstream (connect failures try the next server, then stable), and only once that upstream
   * answered 101 switches the client over, with the upstream's subprotocol. Resolves with
   * undefined once switched (Bun writes the 101), or with the error response.
   */
  private async bridge(
    request: Request,
    server: BunServer,
    rawHeaders: readonly string[],
    facts: BunRequestFacts,
    generation: Generation,
    service: CompiledService,
    decision: Decision,
  ): Promise<Response | undefined> {
    let upstream = this.chooseUpstream(generation, service, decision);
    if (upstream === undefined) return errorResponse('GG_UPSTREAM_UNAVAILABLE', `upstream "${decision.upstream}" is not defined in routing version ${generation.snapshot.version}`, true);
    const protocols = (request.headers.get('sec-websocket-protocol') ?? '')
      .split(',')
      .map((token) => token.trim())
      .filter((token) => token !== '');
    let tried: Set<number> | undefined;
    for (;;) {
      const index = upstream.balancer.pick(Date.now(), tried);
      if (index < 0) return errorResponse('GG_UPSTREAM_CONNECT', `no server of upstream "${upstream.name}" accepted a connection`, true);
      const entry = upstream.balancer.servers[index]!;
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
        entry.health.recordSuccess();
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
      if (request.signal.aborted) return errorResponse('GG_UPSTREAM_RESET', outcome.message, true);
      if (outcome.isConnectFailure) {
        entry.health.recordConnectFailure(Date.now(), upstream.balancer.policy);
        (tried ??= new Set()).add(index);
        this.logFault(`upstream-connect:${upstream.name}`, 'warn', { upstream: upstream.name, server: entry.origin, code: outcome.code }, `${outcome.message}; trying another server`);
        if (tried.size < upstream.balancer.servers.length) continue;
        const stable = generation.upstreams.get(service.stableDecision.upstream);
        if (stable !== undefined && stable !== upstream) {
          upstream = stable;
          tried = undefined;
          continue;
        }
      }
      this.logFault(`upgrade:${outcome.code}`, 'warn', { upstream: upstream.name, code: outcome.code }, outcome.message);
      return errorResponse(outcome.code, `${outcome.message} (upstream "${upstream.name}")`, true);
    }
  }

  private async forward(
    request: Request,
    rawHeaders: readonly string[],
    facts: BunRequestFacts,
    generation: Generation,
    service: CompiledService,
    decision: Decision,
    record: BunExchangeRecord,
  ): Promise<Response> {
    let upstream = this.chooseUpstream(generation, service, decision);
    if (upstream === undefined) return errorResponse('GG_UPSTREAM_UNAVAILABLE', `upstream "${decision.upstream}" is not defined in routing version ${generation.snapshot.version}`, this.draining);
    // Counted in flight to the upstream it goes to until the response head is handed to Bun (as
    // the process count is); a fallback to stable moves the count.
    upstream.counter.inFlight++;
    try {
      const hasBody = request.body !== null && request.method !== 'GET' && request.method !== 'HEAD';
      const retryable = isRetryableRequest(request.method, hasBody);
      let tried: Set<number> | undefined;
      let resetRetried = false;
      for (;;) {
        const index = upstream.balancer.pick(Date.now(), tried);
        if (index < 0) return errorResponse('GG_UPSTREAM_CONNECT', `no server of upstream "${upstream.name}" accepted a connection`, this.draining);
        const entry = upstream.balancer.servers[index]!;
        record.upstreamName = upstream.name;
        record.serverOrigin = entry.origin;
        const outcome = await this.attempt(request, rawHeaders, facts, hasBody, upstream, entry, decision);
        if (outcome instanceof Response) return outcome;
        const failure = outcome;
        // A client that left is not the upstream's failure.
        if (!request.signal.aborted) this.observer.upstreamFailed(upstream.name, failure.code, failure.isConnectFailure);
        if (failure.isConnectFailure) {
          if (entry.health.recordConnectFailure(Date.now(), upstream.balancer.policy)) this.observer.serverEjected(upstream.name, entry.origin);
          if (retryable) {
            (tried ??= new Set()).add(index);
            this.logFault(`upstream-connect:${upstream.name}`, 'warn', { upstream: upstream.name, server: entry.origin, code: failure.code }, `${failure.message}; trying another server`);
            if (tried.size < upstream.balancer.servers.length) continue;
            const stable = generation.upstreams.get(service.stableDecision.upstream);
            if (stable !== undefined && stable !== upstream) {
              upstream.counter.inFlight--;
              stable.counter.inFlight++;
              upstream = stable;
              tried = undefined;
              continue;
            }
          }
        }
        // LESSONS "Stale pooled sockets": a pooled connection the server closed just as it was reused
        // fails before any response byte. A body-less idempotent request is sent once more.
        if (failure.code === 'GG_UPSTREAM_RESET' && retryable && !resetRetried && !request.signal.aborted) {
          resetRetried = true;
          continue;
        }
        this.logFault(`upstream:${failure.code}`, 'warn', { upstream: upstream.name, code: failure.code }, failure.message);
        return errorResponse(failure.code, `${failure.message} (upstream "${upstream.name}")`, this.draining || hasBody);
      }
    } finally {
      upstream.counter.inFlight--;
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
  ): Promise<Response | { code: ErrorCode; isConnectFailure: boolean; message: string }> {
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
    const body = this.watchIdle(response.body!, timeouts.idleMs, controller, upstream.name);
    return new Response(body, { status: response.status, statusText: response.statusText, headers });
  }

  /**
   * The upstream body, failing when the upstream stays silent for `idleMs` while the client waits
   * for more (Bun's fetch has no body timeout). The silence is timed only while a read is pending,
   * so a slow client is never mistaken for a stalled upstream. On timeout the upstream request is
   * aborted and the client's response is cut (its head is gone), as the Node adapter does.
   */
  private watchIdle(source: ReadableStream<Uint8Array>, idleMs: number, controller: AbortController, upstreamName: string): ReadableStream<Uint8Array> {
    const reader = source.getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stalled = false;
    return new ReadableStream<Uint8Array>(
      {
        pull: async (out) => {
          timer = setTimeout(() => {
            stalled = true;
            this.logFault('upstream:GG_UPSTREAM_TIMEOUT', 'warn', { upstream: upstreamName, code: 'GG_UPSTREAM_TIMEOUT' }, 'the upstream response body stalled');
            controller.abort(new GatewayAbort('UND_ERR_BODY_TIMEOUT'));
            out.error(new GatewayAbort('UND_ERR_BODY_TIMEOUT'));
          }, idleMs);
          let result: Awaited<ReturnType<typeof reader.read>>;
          try {
            result = await reader.read();
          } catch (error) {
            if (!stalled) out.error(error);
            return;
          } finally {
            clearTimeout(timer);
          }
          if (stalled) return;
          if (result.done) out.close();
          else out.enqueue(result.value);
        },
        cancel: (reason) => {
          clearTimeout(timer);
          return reader.cancel(reason);
        },
      },
      { highWaterMark: 0 },
    );
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

/** A JSON error response `{"error":{"code","message"}}`. */
function errorResponse(code: ErrorCode, message: string, close: boolean): Response {
  const body = JSON.stringify({ error: { code, message } });
  // Stated, so the access log and metrics can report the bytes of error answers too.
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': String(Buffer.byteLength(body)) };
  if (close) headers.connection = 'close';
  return new Response(body, { status: ErrorCodes[code].status, headers });
}
