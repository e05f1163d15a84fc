import type { ErrorCode } from '../errors.js';
import type { Decision, VersionName } from '../rules/snapshot.js';

/**
 * What one request did, as the data plane reports it once its response has closed. Node's
 * Exchange implements it directly and the Bun adapter fills one small object, so reporting a
 * request allocates nothing beyond what the adapter has already.
 */
export interface ExchangeRecord {
  readonly method: string;
  /** The path without the query string: a query parameter may carry a token. */
  readonly path: string;
  /** The identity source that named the caller (`tokenLookup`, `header:x-user-id`…), never its value. */
  readonly identitySource: string | undefined;
  /** The decision; undefined when the request was answered before one (no service matched, bad framing, no routing). */
  readonly decision: Decision | undefined;
  /** The upstream that served it (stable after a fail-safe fallback); undefined when none was dialled. */
  readonly upstreamName: string | undefined;
  /** The origin of the server that served it (`http://host:port`); undefined when none was dialled. */
  readonly serverOrigin: string | undefined;
  /** Status sent to the client; 499 when the client left before a response was started (nginx's convention). */
  readonly status: number;
  /** Body bytes sent to the client; -1 when the runtime does not tell (Bun without a Content-Length). */
  readonly bytesSent: number;
  readonly durationMs: number;
  /** True when the client went away (or the upstream broke) before the response was complete. */
  readonly aborted: boolean;
}

/**
 * The one seam between a data plane and observability (metrics, access log): both adapters call
 * it, and only it, so Node and Bun count and log the same things. Calls are on the hot path:
 * implementations do no I/O and allocate nothing they can prepare ahead.
 */
export interface RequestObserver {
  /** Once per request, when its response has closed (finished or not). */
  requestClosed(record: ExchangeRecord): void;
  /** One failed attempt at an upstream (a retried attempt counts too), classified by its error code. */
  upstreamFailed(upstream: string, code: ErrorCode, isConnectFailure: boolean): void;
  /** Passive health ejected one server of `upstream` (once per ejection, however many requests fail on it meanwhile). */
  serverEjected(upstream: string, origin: string): void;
  /**
   * The rules sent the request (or upgrade) to a candidate that could not take it, and it goes to
   * stable upstream `to` instead. At most once per request.
   */
  fellBack(decision: Decision, to: string, reason: FallbackReason): void;
}

/**
 * Why a request the rules sent to a candidate went to stable: the candidate upstream has no
 * server (`no_server`), every server of it is ejected (`unhealthy`), or none of its servers
 * accepted a connection for this request (`connect_failure`).
 */
export type FallbackReason = 'no_server' | 'unhealthy' | 'connect_failure';

/** Every FallbackReason, in a fixed order (metrics index cells by it). */
export const FALLBACK_REASONS: readonly FallbackReason[] = ['no_server', 'unhealthy', 'connect_failure'];

/** Observes nothing: the data planes' default, for tests and embedders that want no metrics. */
export const NO_OBSERVER: RequestObserver = Object.freeze({
  requestClosed() {},
  upstreamFailed() {},
  serverEjected() {},
  fellBack() {},
});

/** Calls every observer in turn (metrics first, then the access log). */
export function combineObservers(...observers: RequestObserver[]): RequestObserver {
  if (observers.length === 1) return observers[0]!;
  const [a, b] = observers;
  if (observers.length === 2) {
    return {
      requestClosed: (record) => {
        a!.requestClosed(record);
        b!.requestClosed(record);
      },
      upstreamFailed: (upstream, code, isConnectFailure) => {
        a!.upstreamFailed(upstream, code, isConnectFailure);
        b!.upstreamFailed(upstream, code, isConnectFailure);
      },
      serverEjected: (upstream, origin) => {
        a!.serverEjected(upstream, origin);
        b!.serverEjected(upstream, origin);
      },
      fellBack: (decision, to, reason) => {
        a!.fellBack(decision, to, reason);
        b!.fellBack(decision, to, reason);
      },
    };
  }
  return {
    requestClosed: (record) => {
      for (const observer of observers) observer.requestClosed(record);
    },
    upstreamFailed: (upstream, code, isConnectFailure) => {
      for (const observer of observers) observer.upstreamFailed(upstream, code, isConnectFailure);
    },
    serverEjected: (upstream, origin) => {
      for (const observer of observers) observer.serverEjected(upstream, origin);
    },
    fellBack: (decision, to, reason) => {
      for (const observer of observers) observer.fellBack(decision, to, reason);
    },
  };
}

/**
 * The version that actually served the request: the decision's, except that a candidate decision
 * served by another upstream (the fail-safe to stable) was served by stable. Metrics and the
 * version header report this, so a candidate is never credited with stable's answers.
 */
export function servedVersion(decision: Decision, upstreamName: string | undefined): VersionName {
  if (decision.version === 'candidate' && upstreamName !== undefined && upstreamName !== decision.upstream) return 'stable';
  return decision.version;
}
