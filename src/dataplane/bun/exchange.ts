import type { ErrorCode } from '../../errors.js';
import type { ExchangeRecord } from '../../observe/request-observer.js';
import { errorAnswer } from '../error-response.js';
import { UpstreamAttempts, type RouteHost } from '../route.js';
import type { BunRequestFacts } from './facts.js';

// One request's parts on Bun besides routing: its record, the mapping of Bun's fetch errors, the
// idle watch over an upstream body, and the error answer as a Response.

/** Bun's fetch reports failures by `code` names of its own; mapped to the errno names the shared classifier knows. */
export const BUN_ERROR_CODES: Readonly<Record<string, string>> = {
  ConnectionRefused: 'ECONNREFUSED',
  FailedToOpenSocket: 'ECONNREFUSED',
  ConnectionClosed: 'ECONNRESET',
  ECONNRESET: 'ECONNRESET',
  TimeoutError: 'UND_ERR_HEADERS_TIMEOUT',
};

/**
 * What the observer is told of one request. Bun hands the response body to the client after
 * `fetch` has returned, so a request is reported when its response head is handed over: the
 * duration is time to the response head, and bytes are the Content-Length (-1 without one).
 */
export class BunExchangeRecord extends UpstreamAttempts implements ExchangeRecord {
  facts: BunRequestFacts | undefined = undefined;
  status = 0;
  bytesSent = -1;
  durationMs = 0;
  readonly aborted = false;

  constructor(
    private readonly request: Request,
    private readonly startedAt: number,
  ) {
    super();
  }

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
export class GatewayAbort extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/**
 * The upstream body, failing when the upstream stays silent for `idleMs` while the client waits
 * for more (Bun's fetch has no body timeout). The silence is timed only while a read is pending,
 * so a slow client is never mistaken for a stalled upstream. On timeout the upstream request is
 * aborted and the client's response is cut (its head is gone), as the Node adapter does.
 */
export function watchIdle(source: ReadableStream<Uint8Array>, idleMs: number, controller: AbortController, upstreamName: string, host: RouteHost): ReadableStream<Uint8Array> {
  const reader = source.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stalled = false;
  return new ReadableStream<Uint8Array>(
    {
      pull: async (out) => {
        timer = setTimeout(() => {
          stalled = true;
          // Counted and logged as on Node, where the same stall is a failed attempt after the head.
          host.observer.upstreamFailed(upstreamName, 'GG_UPSTREAM_TIMEOUT', false);
          host.fault(`upstream:${upstreamName}:GG_UPSTREAM_TIMEOUT`, { upstream: upstreamName, code: 'GG_UPSTREAM_TIMEOUT' }, 'the upstream response body stalled');
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

/** The data plane's error answer as a Bun Response (Content-Length stated, so the access log and metrics report its bytes). */
export function errorResponse(code: ErrorCode, message: string, close: boolean): Response {
  const answer = errorAnswer(code, message, close);
  return new Response(answer.body, { status: answer.status, headers: answer.headers });
}
