import type { Logger } from 'pino';
import type { Settings, Upstream } from '../../config/schema.js';
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import { rateLimited } from '../../observe/log.js';
import { NO_OBSERVER, type ExchangeRecord, type RequestObserver } from '../../observe/request-observer.js';
import { compileCidrList } from '../../rules/cidr.js';
import type { CompiledService, Decision, RoutingSnapshot } from '../../rules/snapshot.js';
import { RoundRobin, ServerHealth, classifyUpstreamError, isRetryableRequest } from '../balancer.js';
import { applyDecisionHeaders } from '../decision-headers.js';
import { buildClientResponseHeaders, buildUpstreamRequestHeaders, checkRequestFraming, unwrapMappedIpv4 } from '../headers.js';
import type { DataPlane, DataPlaneOptions, DataPlaneStats } from '../runtime.js';
import { bunRuntime, type BunFetchInit, type BunServer } from './bun-api.js';
import { BunRequestFacts } from './facts.js';

const NEVER_TRUSTED = (): boolean => false;

interface ServerEntry {
  readonly origin: string;
  readonly hostHeader: string;
  readonly health: ServerHealth;
}

interface UpstreamRuntime {
  readonly name: string;
  readonly config: Upstream;
  readonly balancer: RoundRobin<ServerEntry>;
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
export class BunDataPlane implements DataPlane {
  private server: BunServer | undefined;
  private generation: Generation | undefined;
  private readonly health = new Map<string, ServerHealth>();
  private readonly settings: Settings;
  private readonly logger: Logger;
  private readonly isTrusted: (ip: string) => boolean;
  private readonly logFault: ReturnType<typeof rateLimited>;
  private readonly observer: RequestObserver;
  private readonly versionHeader: string | undefined;
  private inFlight = 0;
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
      upstreams.set(name, { name, config, balancer: new RoundRobin(servers, config.health) });
    }
    for (const origin of this.health.keys()) if (!origins.has(origin)) this.health.delete(origin);
    this.generation = { snapshot, upstreams };
  }

  stats(): DataPlaneStats {
    // Bun exposes no count of idle keep-alive connections: only those with a request in flight.
    return { openConnections: this.inFlight + (this.server?.pendingWebSockets ?? 0), inFlightRequests: this.inFlight, upstreams: {} }; // TODO(h1)
  }

  // ---- requests --------------------------------------------------------------------------

  private async handle(request: Request, server: BunServer): Promise<Response> {
    this.inFlight++;
    const record = new BunExchangeRecord(request, performance.now());
    let response: Response;
    try {
      response = await this.route(request, server, record);
    } catch (error) {
      this.logFault('internal', 'error', { err: error, url: request.url }, 'unexpected error while routing a request');
      response = errorResponse('GG_INTERNAL', 'unexpected error in the gateway', this.draining);
    } finally {
      // Counts until the response head is handed to Bun; Bun's own stop() waits for the bodies.
      this.inFlight--;
    }
    record.finish(response);
    try {
      this.observer.requestClosed(record);
    } catch (error) {
      // Observability must never cost a request.
      this.logFault('observer', 'error', { err: error }, 'recording a request failed');
    }
    return response;
  }

  private async route(request: Request, server: BunServer, record: BunExchangeRecord): Promise<Response> {
    const generation = this.generation;
    const rawHeaders: string[] = [];
    request.headers.forEach((value, name) => rawHeaders.push(name, value));
    const framing = checkRequestFraming(rawHeaders);
    if (framing !== undefined) return errorResponse('GG_BAD_REQUEST', `ambiguous request framing: ${framing}`, true);
    if (request.headers.get('upgrade') !== null) {
      // Not bridged yet on Bun (README "Bun data plane"): refused plainly rather than half-done.
      return errorResponse('GG_BAD_REQUEST', 'protocol upgrades (WebSocket) are not bridged by the Bun data plane; run graygate on Node for them', this.draining);
    }
    if (generation === undefined) return errorResponse('GG_UPSTREAM_UNAVAILABLE', 'no routing is loaded yet', this.draining);
    const peerIp = unwrapMappedIpv4(server.requestIP(request)?.address ?? '');
    const facts = new BunRequestFacts(request, peerIp, this.isTrusted(peerIp), this.isTrusted);
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
    return this.forward(request, rawHeaders, facts, generation, service, decision, record);
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
    const now = Date.now();
    let upstream = generation.upstreams.get(decision.upstream);
    // Fail safe: a candidate with no server that can take the request sends it to stable.
    if (decision.version === 'candidate' && (upstream === undefined || !upstream.balancer.hasAvailable(now))) {
      upstream = generation.upstreams.get(service.stableDecision.upstream);
    }
    if (upstream === undefined) return errorResponse('GG_UPSTREAM_UNAVAILABLE', `upstream "${decision.upstream}" is not defined in routing version ${generation.snapshot.version}`, this.draining);
    const hasBody = request.body !== null && request.method !== 'GET' && request.method !== 'HEAD';
    const retryable = isRetryableRequest(request.method, hasBody);
    let tried: Set<number> | undefined;
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
            upstream = stable;
            tried = undefined;
            continue;
          }
        }
      }
      this.logFault(`upstream:${failure.code}`, 'warn', { upstream: upstream.name, code: failure.code }, failure.message);
      return errorResponse(failure.code, `${failure.message} (upstream "${upstream.name}")`, this.draining || hasBody);
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
    const headers = new Headers();
    for (let i = 0; i < list.length; i += 2) headers.append(list[i]!, list[i + 1]!);
    const controller = new AbortController();
    // A client that leaves aborts the upstream request, so its connection and buffers are released.
    const onClientAbort = () => controller.abort(new GatewayAbort('GG_CLIENT_CLOSED'));
    request.signal.addEventListener('abort', onClientAbort, { once: true });
    const headersMs = upstream.config.timeouts.responseHeadersMs;
    const timer = headersMs > 0 ? setTimeout(() => controller.abort(new GatewayAbort('UND_ERR_HEADERS_TIMEOUT')), headersMs) : undefined;
    const path = facts.pathAndQuery;
    const init: BunFetchInit = {
      method: request.method,
      headers,
      body: hasBody ? request.body : null,
      redirect: 'manual',
      decompress: false,
      signal: controller.signal,
      ...(hasBody ? { duplex: 'half' as const } : {}),
    };
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
    const upstreamHeaders: Record<string, string | string[] | undefined> = {};
    response.headers.forEach((value, name) => {
      if (name !== 'set-cookie') upstreamHeaders[name] = value;
    });
    const cookies = response.headers.getSetCookie();
    if (cookies.length > 0) upstreamHeaders['set-cookie'] = cookies;
    const out = buildClientResponseHeaders(upstreamHeaders);
    applyDecisionHeaders(out, decision, facts, this.versionHeader, upstream.name);
    if (this.draining) out.connection = 'close';
    const clientHeaders = new Headers();
    for (const name in out) {
      const value = out[name]!;
      if (typeof value === 'string') clientHeaders.set(name, value);
      else for (const item of value) clientHeaders.append(name, item);
    }
    // The upstream body stream goes to the client as it arrives, never buffered whole.
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers: clientHeaders });
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
    // Stop accepting; Bun closes idle keep-alive connections and resolves once the requests in
    // flight (bodies included) are done. After the grace, whatever remains is cut.
    const stopped = Promise.resolve(server.stop(false)).then(() => 'done' as const);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cap = new Promise<'cap'>((resolve) => {
      timer = setTimeout(() => resolve('cap'), Math.max(0, graceMs));
    });
    const outcome = await Promise.race([stopped, cap]);
    clearTimeout(timer);
    if (outcome === 'cap') {
      this.logger.warn({ inFlight: this.inFlight }, 'shutdown grace ended with requests in flight; closing them');
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
