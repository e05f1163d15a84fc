import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { UpstreamTlsMaterial } from '../upstream-tls.js';

/**
 * An HTTP/2 client for one upstream server (`protocol: h2` over TLS, or `h2c` by prior knowledge),
 * on node:http2, shaped like an undici Pool for the data plane: `dispatch(options, handler)` calls
 * the same handler methods (onRequestStart … onResponseEnd with the trailers), so an Exchange
 * forwards over HTTP/1.1 and HTTP/2 alike.
 *
 * Why not undici's `allowH2`: with the undici locked here, its HTTP/2 client hands the response
 * trailers to the new handler API as an empty object (they are parsed as a raw header list), and
 * with the old API it completes the request on the 'trailers' event, dropping body chunks still
 * buffered while the response was paused for a slow client. gRPC puts its status in trailers and
 * streams under backpressure, so both lose calls. Here the trailers are kept when they arrive
 * and delivered on 'end', after every buffered chunk.
 *
 * One session per server carries every request (HTTP/2 multiplexes; requests beyond the server's
 * stream limit wait in nghttp2's queue). Requests wait for the session to connect before their
 * stream is opened, so when connecting fails nothing was sent and the request body is unread:
 * the error says so (`requestNotSent`), and the request may go to another server or to stable.
 */
export class H2Origin {
  private session: ClientHttp2Session | undefined;
  private connected = false;
  private pending: PendingRequest[] = [];
  private closing = false;
  private readonly sessions = new Set<ClientHttp2Session>();

  constructor(
    readonly origin: string,
    private readonly options: H2OriginOptions,
  ) {}

  /** Sessions open now (what `stats().upstreams` counts as connections). */
  get stats(): { readonly connected: number } {
    return { connected: this.sessions.size };
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const request = new H2Request(this, options, handler);
    if (this.closing) {
      request.fail(Object.assign(new Error('the upstream connection pool is closed'), { code: 'UND_ERR_CLOSED' }));
      return false;
    }
    handler.onRequestStart?.(request, undefined);
    if (request.aborted) return true;
    const session = this.usableSession();
    if (session !== undefined && this.connected) request.start(session);
    else this.pending.push(request);
    return true;
  }

  /** The session new streams go on, opening one when there is none (or it is going away). */
  private usableSession(): ClientHttp2Session | undefined {
    const current = this.session;
    if (current !== undefined && !current.closed && !current.destroyed) return current;
    this.connect();
    return this.session;
  }

  private connect(): void {
    const { tls, connectMs, idleMs } = this.options;
    this.connected = false;
    const session = http2.connect(this.origin, {
      ...(tls === undefined
        ? {}
        : {
            ca: tls.ca,
            cert: tls.cert,
            key: tls.key,
            servername: tls.servername,
            rejectUnauthorized: tls.rejectUnauthorized,
          }),
      ALPNProtocols: ['h2'],
    });
    this.session = session;
    this.sessions.add(session);
    const timer =
      connectMs > 0
        ? setTimeout(() => session.destroy(Object.assign(new Error('connecting to the upstream timed out'), { code: 'UND_ERR_CONNECT_TIMEOUT' })), connectMs)
        : undefined;
    session.once('connect', () => {
      clearTimeout(timer);
      if (this.session !== session) return;
      this.connected = true;
      // A session no request uses for idleMs is closed (gracefully: streams still open finish).
      if (idleMs > 0) session.setTimeout(idleMs, () => session.close());
      const waiting = this.pending;
      this.pending = [];
      for (const request of waiting) if (!request.aborted) request.start(session);
    });
    session.on('error', (error: Error) => {
      clearTimeout(timer);
      if (this.session === session && !this.connected) {
        // Nothing went out: every waiting request fails as a connect failure with its body unread.
        const waiting = this.pending;
        this.pending = [];
        for (const request of waiting) request.fail(Object.assign(error, { requestNotSent: true }));
      }
      // Streams already open on the session get their own 'error' or 'close'.
    });
    // GOAWAY: the server takes no new streams on this session; open streams run to their end.
    session.on('goaway', () => {
      if (this.session === session) this.session = undefined;
    });
    session.once('close', () => {
      clearTimeout(timer);
      this.sessions.delete(session);
      if (this.session !== session) return;
      this.session = undefined;
      if (this.pending.length > 0 && !this.connected) {
        const waiting = this.pending;
        this.pending = [];
        const error = Object.assign(new Error('the upstream closed the connection before it was ready'), { code: 'ECONNRESET', requestNotSent: true });
        for (const request of waiting) request.fail(error);
      } else if (this.pending.length > 0 && !this.closing) {
        this.connect();
      }
    });
  }

  /** Takes no new requests; resolves once every open stream has finished and sessions are closed. */
  async close(): Promise<void> {
    this.closing = true;
    this.failPending();
    await Promise.all([...this.sessions].map((session) => new Promise<void>((resolve) => (session.closed ? resolve() : session.close(resolve)))));
  }

  /** Closes every session at once. */
  async destroy(): Promise<void> {
    this.closing = true;
    this.failPending();
    for (const session of this.sessions) session.destroy();
    this.sessions.clear();
  }

  private failPending(): void {
    const waiting = this.pending;
    this.pending = [];
    const error = Object.assign(new Error('the upstream connection pool is closed'), { code: 'UND_ERR_CLOSED', requestNotSent: true });
    for (const request of waiting) request.fail(error);
  }
}

export interface H2OriginOptions {
  readonly connectMs: number;
  /** A session without traffic for this long is closed; 0 keeps it. */
  readonly idleMs: number;
  /** For https:// servers; undefined for h2c. */
  readonly tls: UpstreamTlsMaterial | undefined;
}

type PendingRequest = H2Request;

/**
 * RFC 9113 §8.2.2: connection-specific fields must not appear in HTTP/2; `host` becomes
 * `:authority`. Pseudo-headers of an HTTP/2 client request are rebuilt, never copied.
 */
const NOT_ON_H2: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'host', 'http2-settings']);

/** One request on an H2Origin; also its handler's controller (pause, resume, abort). */
class H2Request implements Dispatcher.DispatchController {
  private stream: ClientHttp2Stream | undefined;
  private isAborted = false;
  private isPaused = false;
  private abortReason: Error | null = null;
  private done = false;
  private responseStarted = false;
  private trailers: IncomingHttpHeaders | undefined;
  private headersTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly owner: H2Origin,
    private readonly options: Dispatcher.DispatchOptions,
    private readonly handler: Dispatcher.DispatchHandler,
  ) {}

  get aborted(): boolean {
    return this.isAborted;
  }

  get paused(): boolean {
    return this.isPaused;
  }

  get reason(): Error | null {
    return this.abortReason;
  }

  pause(): void {
    this.isPaused = true;
    this.stream?.pause();
  }

  resume(): void {
    this.isPaused = false;
    this.stream?.resume();
  }

  abort(reason: Error): void {
    if (this.isAborted || this.done) return;
    this.isAborted = true;
    this.abortReason = reason;
    this.finish();
    // RST_STREAM(CANCEL): the server stops the call; the session stays for other streams.
    if (this.stream !== undefined && !this.stream.destroyed) this.stream.close(http2.constants.NGHTTP2_CANCEL);
    this.unpipeBody();
    this.handler.onResponseError?.(this, reason);
  }

  /** Fails before a stream was opened (the session did not connect, or the pool is closed). */
  fail(error: Error): void {
    if (this.done || this.isAborted) return;
    this.finish();
    this.handler.onResponseError?.(this, error);
  }

  start(session: ClientHttp2Session): void {
    const options = this.options;
    const headers: OutgoingHttpHeaders = {
      ':method': options.method,
      ':path': options.path,
      ':scheme': this.owner.origin.startsWith('https:') ? 'https' : 'http',
    };
    let authority: string | undefined;
    let isGrpc = false;
    const list = options.headers as string[] | null | undefined;
    if (list) {
      for (let i = 0; i < list.length; i += 2) {
        const name = list[i]!.toLowerCase();
        const value = list[i + 1]!;
        if (name.charCodeAt(0) === 58 /* : */) continue;
        if (name === 'host') {
          authority ??= value;
          continue;
        }
        if (NOT_ON_H2.has(name)) continue;
        if (name === 'content-type' && value.startsWith('application/grpc')) isGrpc = true;
        const existing = headers[name];
        if (existing === undefined) headers[name] = value;
        else if (Array.isArray(existing)) existing.push(value);
        else headers[name] = [existing as string, value];
      }
    }
    headers[':authority'] = authority ?? new URL(this.owner.origin).host;
    // gRPC servers may insist on it, and TE: trailers is the one TE value HTTP/2 allows.
    if (isGrpc) headers.te = 'trailers';
    const body = options.body as Readable | null | undefined;
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(headers, { endStream: body === null || body === undefined });
    } catch (error) {
      this.fail(Object.assign(error as Error, { requestNotSent: true }));
      return;
    }
    this.stream = stream;
    if (this.isPaused) stream.pause();
    // As over HTTP/1.1, the wait for the response head starts once the request is sent whole: a
    // client-streaming call may upload for longer than responseHeadersMs.
    if ((options.headersTimeout ?? 0) > 0) {
      if (body === null || body === undefined) this.startHeadersTimer();
      else stream.once('finish', () => this.startHeadersTimer());
    }
    stream.on('response', (responseHeaders: IncomingHttpHeaders) => this.onResponse(responseHeaders));
    stream.on('data', (chunk: Buffer) => {
      if (!this.done) this.handler.onResponseData?.(this, chunk);
    });
    stream.on('trailers', (trailers: IncomingHttpHeaders) => {
      // Kept until 'end': chunks still buffered (paused for a slow client) go out first.
      this.trailers = trailers;
    });
    stream.on('end', () => {
      if (this.done) return;
      // A stream the server reset (RST_STREAM with an error) also ends its readable side first:
      // that is a broken response, not a complete one.
      const rstCode = stream.rstCode;
      if (rstCode !== undefined && rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
        this.streamFailed(Object.assign(new Error(`the upstream reset the HTTP/2 stream (code ${rstCode})`), { code: 'UND_ERR_SOCKET' }));
        return;
      }
      if (!this.responseStarted) {
        this.streamFailed(Object.assign(new Error('the upstream ended the stream without a response'), { code: 'UND_ERR_SOCKET' }));
        return;
      }
      this.finish();
      // The server is done; a request body it did not wait for is not sent on.
      this.unpipeBody();
      this.handler.onResponseEnd?.(this, this.trailers === undefined ? {} : withoutPseudo(this.trailers));
      if (!stream.destroyed && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
    stream.on('error', (error: Error) => this.streamFailed(error));
    stream.on('close', () => {
      if (this.done) return;
      const code = stream.rstCode ?? 0;
      this.streamFailed(Object.assign(new Error(`the upstream reset the HTTP/2 stream (code ${code})`), { code: 'UND_ERR_SOCKET' }));
    });
    if (body !== null && body !== undefined) {
      body.on('error', onBodyError);
      body.pipe(stream);
    }
  }

  private startHeadersTimer(): void {
    if (this.done || this.responseStarted) return;
    this.headersTimer = setTimeout(
      () => this.streamFailed(Object.assign(new Error('the upstream did not send response headers in time'), { code: 'UND_ERR_HEADERS_TIMEOUT' })),
      this.options.headersTimeout!,
    );
  }

  private onResponse(responseHeaders: IncomingHttpHeaders): void {
    if (this.done) return;
    clearTimeout(this.headersTimer);
    this.headersTimer = undefined;
    const status = Number(responseHeaders[':status']);
    this.responseStarted = true;
    const bodyTimeout = this.options.bodyTimeout ?? 0;
    if (bodyTimeout > 0) {
      this.stream!.setTimeout(bodyTimeout, () => this.streamFailed(Object.assign(new Error('the upstream response body stalled'), { code: 'UND_ERR_BODY_TIMEOUT' })));
    }
    this.handler.onResponseStart?.(this, status, withoutPseudo(responseHeaders), '');
  }

  private streamFailed(error: Error): void {
    if (this.done) return;
    this.finish();
    const stream = this.stream;
    if (stream !== undefined && !stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
    this.unpipeBody();
    this.handler.onResponseError?.(this, error);
  }

  private finish(): void {
    this.done = true;
    clearTimeout(this.headersTimer);
    this.headersTimer = undefined;
  }

  private unpipeBody(): void {
    const body = this.options.body as Readable | null | undefined;
    if (body === null || body === undefined || typeof body.unpipe !== 'function') return;
    if (this.stream !== undefined) body.unpipe(this.stream);
    body.removeListener('error', onBodyError);
  }
}

/** A client body that fails (the client left) is handled by the Exchange's close; this only keeps the error from being unhandled. */
function onBodyError(): void {}

function withoutPseudo(headers: IncomingHttpHeaders): Record<string, string | string[] | undefined> {
  const out: Record<string, string | string[] | undefined> = {};
  for (const name in headers) if (name.charCodeAt(0) !== 58 /* : */) out[name] = headers[name];
  return out;
}
