import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { ErrorCodes, type ErrorCode } from '../../errors.js';
import type { ExchangeRecord, RequestObserver } from '../../observe/request-observer.js';
import type { CompiledService, Decision } from '../../rules/snapshot.js';
import { classifyUpstreamError, isRetryableRequest, type UpstreamFailure } from '../balancer.js';
import { applyDecisionHeaders } from '../decision-headers.js';
import { buildClientResponseHeaders, buildUpstreamRequestHeaders } from '../headers.js';
import type { NodeRequestFacts } from './facts.js';
import type { Generation, UpstreamRuntime } from './upstream.js';

/** What an exchange needs from the data plane that owns it. */
export interface ExchangeHost {
  readonly preserveHost: boolean;
  readonly isDraining: boolean;
  /** Called once, when the client response has closed (finished or not). */
  exchangeClosed(exchange: Exchange): void;
  fault(key: string, fields: object, message: string): void;
  /** Metrics and access log: told of upstream failures here, of the request in `exchangeClosed`. */
  readonly observer: RequestObserver;
  /** The response header naming the served version (`proxy.versionHeader`), if any. */
  readonly versionHeader: string | undefined;
}

type Controller = Dispatcher.DispatchController;

// The exchange is reached from `res` through this symbol, so the 'close' and 'drain'
// listeners are two module-level functions instead of two closures per request.
const kExchange = Symbol('graygate.exchange');
type TaggedResponse = ServerResponse & { [kExchange]?: Exchange };

function onResponseClose(this: TaggedResponse): void {
  this[kExchange]?.clientClosed();
}

function onResponseDrain(this: TaggedResponse): void {
  const exchange = this[kExchange];
  if (exchange === undefined) return;
  exchange.waitingForDrain = false;
  exchange.controller?.resume();
}

/** The error a client abort passes to undici, so its request and socket are released. */
class ClientClosedError extends Error {
  readonly code = 'GG_CLIENT_CLOSED';
  constructor() {
    super('the client closed the connection');
  }
}

/**
 * One proxied request: chooses a server, forwards through undici's dispatch API with
 * backpressure both ways, retries connect failures where that is safe, and maps failures to
 * coded error responses. It is undici's handler for the request, so its methods are the
 * handler callbacks and no per-request closures are needed. It is also the record of the request
 * the observer gets when it closes (ExchangeRecord), so reporting it allocates nothing.
 */
export class Exchange implements Dispatcher.DispatchHandler, ExchangeRecord {
  controller: Controller | undefined = undefined;
  waitingForDrain = false;
  private responseStarted = false;
  private clientGone = false;
  private settled = false;
  private upstream: UpstreamRuntime | undefined = undefined;
  decision: Decision | undefined = undefined;
  status = 0;
  bytesSent = 0;
  durationMs = 0;
  aborted = false;
  private readonly startedAt = performance.now();
  private service: CompiledService | undefined = undefined;
  private serverIndex = -1;
  private tried: Set<number> | undefined = undefined;
  private hasBody = false;
  private chunkedResponse = false;
  private resetRetried = false;

  constructor(
    private readonly host: ExchangeHost,
    readonly generation: Generation | undefined,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly facts: NodeRequestFacts,
  ) {
    (res as TaggedResponse)[kExchange] = this;
    res.once('close', onResponseClose);
  }

  get method(): string {
    return this.req.method ?? 'GET';
  }

  get path(): string {
    return this.facts.path;
  }

  get identitySource(): string | undefined {
    return this.facts.identitySource;
  }

  get upstreamName(): string | undefined {
    return this.upstream?.name;
  }

  get serverOrigin(): string | undefined {
    return this.serverIndex < 0 ? undefined : this.upstream?.balancer.servers[this.serverIndex]?.origin;
  }

  /** Forwards the request as `decision` says (after the service was matched and decided). */
  forward(service: CompiledService, decision: Decision, now: number): void {
    // The client may have left while identity was being looked up: nothing to forward.
    if (this.clientGone) return;
    this.service = service;
    this.decision = decision;
    const req = this.req;
    const headers = req.headers;
    this.hasBody = headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0');
    const generation = this.generation!;
    let upstream = generation.upstreams.get(decision.upstream);
    // Fail safe: a candidate with no server that can take the request sends it to stable.
    if (decision.version === 'candidate' && (upstream === undefined || !upstream.balancer.hasAvailable(now))) {
      upstream = generation.upstreams.get(service.stableDecision.upstream);
    }
    if (upstream === undefined) {
      this.respondError('GG_UPSTREAM_UNAVAILABLE', `upstream "${decision.upstream}" is not defined in routing version ${generation.snapshot.version}`);
      return;
    }
    this.moveTo(upstream);
    this.attempt(now);
  }

  /** Counts this request in flight to `upstream` (and no longer to the one it was going to). */
  private moveTo(upstream: UpstreamRuntime): void {
    if (this.upstream !== undefined) this.upstream.counter.inFlight--;
    upstream.counter.inFlight++;
    this.upstream = upstream;
  }

  private attempt(now: number): void {
    const upstream = this.upstream!;
    const index = upstream.balancer.pick(now, this.tried);
    if (index < 0) {
      this.respondError('GG_UPSTREAM_CONNECT', `no server of upstream "${upstream.name}" accepted a connection`);
      return;
    }
    this.serverIndex = index;
    const server = upstream.balancer.servers[index]!;
    const req = this.req;
    const timeouts = upstream.config.timeouts;
    try {
      server.pool.dispatch(
        {
          origin: server.origin,
          path: req.url ?? '/',
          method: req.method ?? 'GET',
          headers: buildUpstreamRequestHeaders(req.rawHeaders, this.facts, {
            preserveHost: this.host.preserveHost,
            originHost: server.hostHeader,
            bodyUntouched: true,
          }),
          body: this.hasBody ? req : null,
          headersTimeout: timeouts.responseHeadersMs,
          bodyTimeout: timeouts.idleMs,
        },
        this,
      );
    } catch (error) {
      this.onResponseError(undefined, error as Error);
    }
  }

  // ---- undici handler ------------------------------------------------------------------

  onRequestStart(controller: Controller): void {
    this.controller = controller;
    if (this.clientGone) controller.abort(new ClientClosedError());
  }

  onResponseStart(controller: Controller, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    this.controller = controller;
    // 1xx informational (103 Early Hints…): Node already answered any 100-continue itself;
    // the final response follows on the same exchange.
    if (statusCode < 200) return;
    this.upstream!.balancer.servers[this.serverIndex]!.health.recordSuccess();
    if (this.clientGone) return;
    const out = buildClientResponseHeaders(headers);
    applyDecisionHeaders(out, this.decision!, this.facts, this.host.versionHeader, this.upstream!.name);
    if (this.host.isDraining) out.connection = 'close';
    this.chunkedResponse = headers['content-length'] === undefined;
    this.responseStarted = true;
    if (statusMessage) this.res.writeHead(statusCode, statusMessage, out);
    else this.res.writeHead(statusCode, out);
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    // undici hands over an empty chunk each time the parser resumes after a pause; written, it
    // costs a cork, a tick and a zero-length write(2) on the client socket (seen in strace).
    if (this.clientGone || chunk.length === 0) return;
    this.bytesSent += chunk.length;
    // Backpressure: a slow client pauses the upstream socket instead of buffering in memory.
    // This pauses after nearly every 64 KiB read (write() answers false past the socket's 16 KiB
    // high-water mark); pausing only past 128 KiB queued was tried and measured no better (CPU
    // per 1 MiB request worse in 2 of 3 interleaved runs, p99 worse), so it stays per chunk.
    if (!this.res.write(chunk) && !this.waitingForDrain) {
      this.waitingForDrain = true;
      controller.pause();
      this.res.once('drain', onResponseDrain);
    }
  }

  onResponseEnd(_controller: Controller, trailers: Record<string, string | string[] | undefined>): void {
    if (this.clientGone) return;
    this.settled = true;
    // Trailers can only follow a chunked body; with a Content-Length there is nowhere to put them.
    if (this.chunkedResponse) {
      let any = false;
      for (const _ in trailers) {
        any = true;
        break;
      }
      if (any) this.res.addTrailers(trailers as Record<string, string>);
    }
    this.res.end();
  }

  onResponseError(_controller: Controller | undefined, error: Error): void {
    if (this.clientGone || this.settled) return;
    const failure = classifyUpstreamError(error);
    const upstream = this.upstream;
    if (upstream !== undefined) this.host.observer.upstreamFailed(upstream.name, failure.code, failure.isConnectFailure);
    if (upstream !== undefined && this.serverIndex >= 0 && failure.isConnectFailure && !this.responseStarted) {
      const now = Date.now();
      const server = upstream.balancer.servers[this.serverIndex]!;
      if (server.health.recordConnectFailure(now, upstream.balancer.policy)) this.host.observer.serverEjected(upstream.name, server.origin);
      if (this.retryAfterConnectFailure(now, failure)) return;
    }
    // LESSONS "Stale pooled sockets": a pooled connection the server closed just as we reused
    // it fails before any response byte. A body-less idempotent request is sent once more.
    if (failure.code === 'GG_UPSTREAM_RESET' && !this.responseStarted && !this.resetRetried && upstream !== undefined && isRetryableRequest(this.req.method ?? 'GET', this.hasBody)) {
      this.resetRetried = true;
      this.attempt(Date.now());
      return;
    }
    this.fail(failure, error);
  }

  /** Tries another server, or stable instead of the candidate; false when there is nothing left. */
  private retryAfterConnectFailure(now: number, failure: UpstreamFailure): boolean {
    if (!isRetryableRequest(this.req.method ?? 'GET', this.hasBody)) return false;
    const upstream = this.upstream!;
    (this.tried ??= new Set()).add(this.serverIndex);
    this.host.fault(`upstream-connect:${upstream.name}`, { upstream: upstream.name, server: upstream.balancer.servers[this.serverIndex]!.origin, code: failure.code }, `${failure.message}; trying another server`);
    if (this.tried.size < upstream.balancer.servers.length) {
      this.attempt(now);
      return true;
    }
    const stableName = this.service!.stableDecision.upstream;
    if (upstream.name !== stableName) {
      const stable = this.generation!.upstreams.get(stableName);
      if (stable !== undefined) {
        this.moveTo(stable);
        this.tried = undefined;
        this.attempt(now);
        return true;
      }
    }
    return false;
  }

  private fail(failure: UpstreamFailure, error: Error): void {
    this.settled = true;
    const upstream = this.upstream?.name ?? '?';
    this.host.fault(`upstream:${failure.code}`, { upstream, code: failure.code, cause: (error as { code?: string }).code ?? error.message }, failure.message);
    if (this.responseStarted) {
      // Headers are gone: the only honest signal left is to cut the connection.
      this.res.destroy();
      return;
    }
    this.respondError(failure.code, `${failure.message} (upstream "${upstream}")`);
  }

  /** Answers with `{"error":{"code","message"}}` unless a response was already started. */
  respondError(code: ErrorCode, message: string): void {
    this.settled = true;
    const res = this.res;
    if (res.headersSent || this.clientGone) {
      res.destroy();
      return;
    }
    // An unread request body leaves the connection in an unknown state: close it.
    const close = this.host.isDraining || (this.hasBody && !this.req.complete);
    this.bytesSent = writeErrorResponse(res, code, message, close);
  }

  /** The client response closed: finished, or the client went away mid-way. */
  clientClosed(): void {
    const res = this.res;
    this.durationMs = performance.now() - this.startedAt;
    this.status = res.headersSent ? res.statusCode : 499;
    if (!res.writableFinished) {
      this.aborted = true;
      this.clientGone = true;
      // LESSONS "Client aborts": abort upstream so its socket and buffers are released.
      this.controller?.abort(new ClientClosedError());
    }
    // 'close' fires once per response, so the count is released exactly once.
    if (this.upstream !== undefined) this.upstream.counter.inFlight--;
    this.host.exchangeClosed(this);
  }
}

/** Writes a JSON error response on a node:http response that has not started; returns the body's length. */
export function writeErrorResponse(res: ServerResponse, code: ErrorCode, message: string, close: boolean): number {
  const body = JSON.stringify({ error: { code, message } });
  const length = Buffer.byteLength(body);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': length,
    'cache-control': 'no-store',
  };
  if (close) headers.connection = 'close';
  res.writeHead(ErrorCodes[code].status, headers);
  res.end(body);
  return length;
}
