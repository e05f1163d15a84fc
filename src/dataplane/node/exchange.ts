import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';
import type { Dispatcher } from 'undici';
import type { ErrorCode } from '../../errors.js';
import type { ExchangeRecord } from '../../observe/request-observer.js';
import type { CompiledService, Decision } from '../../rules/snapshot.js';
import { classifyUpstreamError } from '../balancer.js';
import { applyDecisionHeaders } from '../decision-headers.js';
import { errorAnswer } from '../error-response.js';
import { encodeGrpcMessage, grpcErrorFields, grpcStatusFor, isGrpcContentType, parseGrpcTimeout } from '../grpc.js';
import { buildClientResponseHeaders, buildUpstreamRequestHeaders } from '../headers.js';
import { hasRequestBody, UpstreamAttempts, type RouteHost } from '../route.js';
import type { NodeRequestFacts } from './facts.js';
import { isHttp2Response, stripConnectionSpecific } from './http2-request.js';
import type { Generation, NodeServer } from './upstream.js';

/** What an exchange needs from the data plane that owns it. */
export interface ExchangeHost extends RouteHost {
  readonly preserveHost: boolean;
  readonly isDraining: boolean;
  /** Called once, when the client response has closed (finished or not). */
  exchangeClosed(exchange: Exchange): void;
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

/** A gRPC call's deadline (grpc-timeout) passed: the exchange answers DEADLINE_EXCEEDED. */
function onGrpcDeadline(exchange: Exchange): void {
  exchange.deadlineReached();
}

/** The error the upstream request is aborted with when a gRPC call's deadline passes. */
class DeadlineError extends Error {
  readonly code = 'GG_GRPC_DEADLINE';
  constructor() {
    super("the call's deadline (grpc-timeout) passed");
  }
}

/** The error a client abort passes to undici, so its request and socket are released. */
class ClientClosedError extends Error {
  readonly code = 'GG_CLIENT_CLOSED';
  constructor() {
    super('the client closed the connection');
  }
}

/**
 * One proxied request on node:http: forwards through undici's dispatch API with backpressure both
 * ways and maps what happens to the shared attempt policy (UpstreamAttempts: which server, retry,
 * stable, fail). It is undici's handler for the request, so its methods are the handler callbacks
 * and no per-request closures are needed. It is also the record of the request the observer gets
 * when it closes (ExchangeRecord), so reporting it allocates nothing.
 */
export class Exchange extends UpstreamAttempts<NodeServer> implements Dispatcher.DispatchHandler, ExchangeRecord {
  controller: Controller | undefined = undefined;
  waitingForDrain = false;
  private responseStarted = false;
  private clientGone = false;
  private settled = false;
  status = 0;
  bytesSent = 0;
  durationMs = 0;
  aborted = false;
  private readonly startedAt = performance.now();
  private hasBody = false;
  private chunkedResponse = false;
  /** A gRPC call (Content-Type application/grpc…): errors are answered as gRPC statuses. */
  private isGrpc = false;
  private deadlineTimer: NodeJS.Timeout | undefined = undefined;
  private deadlineExpired = false;
  /** The upstream answered trailers-only (grpc-status in its one header block) and it was passed on. */
  private trailersOnlySent = false;

  constructor(
    private readonly host: ExchangeHost,
    readonly generation: Generation | undefined,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly facts: NodeRequestFacts,
  ) {
    super();
    this.isGrpc = isGrpcContentType(req.headers['content-type']);
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

  /** Forwards the request as `decision` says (after the service was matched and decided). */
  forward(service: CompiledService, decision: Decision, now: number): void {
    // The client may have left while identity was being looked up: nothing to forward.
    if (this.clientGone) return;
    const headers = this.req.headers;
    this.hasBody = hasRequestBody(headers['transfer-encoding'], headers['content-length']);
    if (this.isGrpc) {
      // HTTP/2 requests carry no framing headers: a gRPC call always has a body (its messages).
      this.hasBody = true;
      const deadlineMs = parseGrpcTimeout(headers['grpc-timeout'] as string | undefined);
      // The call's own deadline bounds the whole exchange; the upstream's configured timeouts
      // (connect, response headers, idle body) still apply within it, so the earlier one wins.
      if (deadlineMs !== undefined) this.deadlineTimer = setTimeout(onGrpcDeadline, deadlineMs, this);
    }
    const generation = this.generation!;
    if (!this.choose(this.host, generation, service, decision, this.method, this.hasBody, now)) {
      this.respondError('GG_UPSTREAM_UNAVAILABLE', `upstream "${decision.upstream}" is not defined in routing version ${generation.snapshot.version}`);
      return;
    }
    this.attempt(now);
  }

  private attempt(now: number): void {
    const server = this.pick(now);
    if (server === undefined) {
      this.respondError('GG_UPSTREAM_CONNECT', `no server of upstream "${this.upstream!.name}" accepted a connection`);
      return;
    }
    const req = this.req;
    const timeouts = this.upstream!.config.timeouts;
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
    else if (this.deadlineExpired) controller.abort(new DeadlineError());
  }

  onResponseStart(controller: Controller, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    this.controller = controller;
    // 1xx informational (103 Early Hints…): Node already answered any 100-continue itself;
    // the final response follows on the same exchange.
    if (statusCode < 200) return;
    this.answered();
    if (this.clientGone || this.settled) return;
    const out = buildClientResponseHeaders(headers);
    applyDecisionHeaders(out, this.decision!, this.facts, this.host.versionHeader, this.upstream!.name);
    // HTTP/2 has neither Connection nor a reason phrase: a drain there is the session's GOAWAY.
    const h2 = this.req.httpVersionMajor === 2;
    if (this.isGrpc && headers['grpc-status'] !== undefined) {
      // gRPC's trailers-only answer (an error without messages): one header block ending the
      // stream. Written as headers and then an end, it would reach the client as headers without
      // a status (Node's response API sends the end as a separate empty frame).
      this.responseStarted = true;
      this.trailersOnlySent = true;
      this.settled = true;
      this.clearDeadline();
      writeTrailersOnly(this.res, statusCode, out, this.host.isDraining && !h2);
      return;
    }
    if (this.host.isDraining && !h2) out.connection = 'close';
    this.chunkedResponse = headers['content-length'] === undefined;
    this.responseStarted = true;
    if (statusMessage && !h2) this.res.writeHead(statusCode, statusMessage, out);
    else this.res.writeHead(statusCode, out);
  }

  onResponseData(controller: Controller, chunk: Buffer): void {
    // undici hands over an empty chunk each time the parser resumes after a pause; written, it
    // costs a cork, a tick and a zero-length write(2) on the client socket (seen in strace).
    if (this.clientGone || chunk.length === 0 || this.trailersOnlySent) return;
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
    if (this.clientGone || this.trailersOnlySent || (this.settled && this.deadlineExpired)) return;
    this.settled = true;
    this.clearDeadline();
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
    // A client that left is not the upstream's failure.
    if (this.clientGone || this.settled) return;
    if (this.deadlineExpired) {
      this.deadlineAnswer();
      return;
    }
    const failure = classifyUpstreamError(error);
    // An HTTP/2 upstream says when connecting failed before any byte of the request left.
    const requestNotSent = (error as { requestNotSent?: boolean }).requestNotSent === true;
    const step = this.failed(this.host, failure, this.responseStarted, Date.now(), requestNotSent);
    if (step !== 'fail') {
      this.attempt(Date.now());
      return;
    }
    this.settled = true;
    this.clearDeadline();
    if (this.responseStarted) {
      this.failStartedResponse(failure.code, `${failure.message} (upstream "${this.upstream!.name}")`);
      return;
    }
    this.respondError(failure.code, `${failure.message} (upstream "${this.upstream!.name}")`);
  }

  /** The gRPC call's deadline passed: the upstream request is cancelled and the call ends DEADLINE_EXCEEDED. */
  deadlineReached(): void {
    this.deadlineTimer = undefined;
    if (this.clientGone || this.settled) return;
    this.deadlineExpired = true;
    // Aborting reports back through onResponseError, which answers; without a dispatched
    // request yet (queued, or identity still pending) it is answered here.
    this.controller?.abort(new DeadlineError());
    if (!this.settled) this.deadlineAnswer();
  }

  private deadlineAnswer(): void {
    const message = `the call's deadline (grpc-timeout) passed before the upstream${this.upstream === undefined ? '' : ` "${this.upstream.name}"`} finished`;
    if (this.responseStarted) {
      this.settled = true;
      this.failStartedResponse('GG_UPSTREAM_TIMEOUT', message);
    } else {
      this.respondError('GG_UPSTREAM_TIMEOUT', message);
    }
  }

  /**
   * The exchange failed after the response head went out. A gRPC call still gets its status: the
   * response ends with grpc-status trailers (UNAVAILABLE, DEADLINE_EXCEEDED…) where trailers can
   * be sent; otherwise the only honest signal left is to cut the connection.
   */
  private failStartedResponse(code: ErrorCode, message: string): void {
    const res = this.res;
    if (this.isGrpc && !this.clientGone && !res.writableEnded && (this.chunkedResponse || (res as { stream?: unknown }).stream !== undefined)) {
      res.addTrailers({ 'grpc-status': String(grpcStatusFor(code)), 'grpc-message': encodeGrpcMessage(`${message} (${code})`) });
      res.end();
      return;
    }
    res.destroy();
  }

  private clearDeadline(): void {
    if (this.deadlineTimer !== undefined) {
      clearTimeout(this.deadlineTimer);
      this.deadlineTimer = undefined;
    }
  }

  /**
   * Answers with `{"error":{"code","message"}}` (a gRPC call: HTTP 200 and the matching
   * grpc-status, trailers-only) unless a response was already started.
   */
  respondError(code: ErrorCode, message: string): void {
    this.settled = true;
    this.clearDeadline();
    const res = this.res;
    if (res.headersSent || this.clientGone) {
      res.destroy();
      return;
    }
    if (this.isGrpc) {
      const close = this.host.isDraining || (this.hasBody && !this.req.complete);
      writeTrailersOnly(res, 200, grpcErrorFields(code, message), close);
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
    this.clearDeadline();
    // node:http2's compatibility response reports writableFinished once its stream closed, reset
    // or not; there, whether end() was called says if the answer was complete.
    if (this.req.httpVersionMajor === 2 ? !res.writableEnded : !res.writableFinished) {
      this.aborted = true;
      this.clientGone = true;
      // A client that left aborts the upstream request, so its socket and buffers are released.
      this.controller?.abort(new ClientClosedError());
    }
    // 'close' fires once per response, so the count is released exactly once.
    this.released();
    this.host.exchangeClosed(this);
  }
}

/** Writes the data plane's error answer on a node:http response that has not started; returns the body's length. */
export function writeErrorResponse(res: ServerResponse, code: ErrorCode, message: string, close: boolean): number {
  const answer = errorAnswer(code, message, close);
  if (isHttp2Response(res)) stripConnectionSpecific(answer.headers);
  res.writeHead(answer.status, answer.headers);
  res.end(answer.body);
  return answer.length;
}

/**
 * A response that is one header block ending the stream (gRPC's trailers-only form). On HTTP/2
 * it must be a single HEADERS frame with END_STREAM, which Node's compatibility API cannot send
 * (it follows the head with an empty DATA frame), so it goes on the stream directly. On
 * HTTP/1.1 it is a head with an empty body. `close` ends an HTTP/1.1 connection after it.
 */
export function writeTrailersOnly(res: ServerResponse, status: number, headers: OutgoingHttpHeaders, close: boolean): void {
  const stream = (res as { stream?: ServerHttp2Stream }).stream;
  if (stream !== undefined && typeof stream.respond === 'function') {
    stripConnectionSpecific(headers);
    if (stream.headersSent || stream.destroyed) return;
    stream.respond({ ...headers, ':status': status }, { endStream: true });
    // The stream has ended; this marks the response ended too (it sends nothing more), so the
    // exchange closes as a complete answer.
    res.end();
    return;
  }
  headers['content-length'] = '0';
  if (close) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end();
}
