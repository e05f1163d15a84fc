import type { ErrorCode } from '../errors.js';

/**
 * Runtime-neutral balancing inside one version: round robin over an upstream's servers,
 * passive health (eject a server that refuses connections), the retry decision, and the
 * mapping of upstream failures to graygate error codes. The version is chosen first, by the
 * rules; only then does this pick a server, so a failing server never moves a caller to another
 * version (only the explicit fallback to stable does).
 */

/** Passive health of one server origin; shared by every snapshot that names the origin. */
export class ServerHealth {
  /** Connect failures in a row since the last success. */
  consecutiveFailures = 0;
  /** `Date.now()` before which the server gets no requests (0: not ejected). */
  ejectedUntil = 0;

  isAvailable(now: number): boolean {
    return this.ejectedUntil <= now;
  }

  /**
   * A connection was refused or timed out; ejects after `ejectAfterFailures` in a row, and then
   * returns true (for the metric). While the server is ejected, failures of requests that were
   * already under way (or that tried it because nothing else was left) are part of the same
   * outage: they neither count towards a new ejection nor prolong this one.
   */
  recordConnectFailure(now: number, policy: HealthPolicy): boolean {
    if (this.ejectedUntil > now) return false;
    this.consecutiveFailures++;
    if (this.consecutiveFailures >= policy.ejectAfterFailures) {
      this.ejectedUntil = now + policy.ejectForMs;
      // A server back from ejection gets a fresh count: one more failure ejects it again only
      // once the threshold is reached anew.
      this.consecutiveFailures = 0;
      return true;
    }
    return false;
  }

  recordSuccess(): void {
    this.consecutiveFailures = 0;
    this.ejectedUntil = 0;
  }
}

export interface HealthPolicy {
  readonly ejectAfterFailures: number;
  readonly ejectForMs: number;
}

/** Round robin over servers that each carry a `ServerHealth`. */
export class RoundRobin<S extends { readonly health: ServerHealth }> {
  private cursor = 0;

  constructor(
    readonly servers: readonly S[],
    readonly policy: HealthPolicy,
  ) {}

  /** True when at least one server is not ejected. */
  hasAvailable(now: number): boolean {
    for (let i = 0; i < this.servers.length; i++) if (this.servers[i]!.health.isAvailable(now)) return true;
    return false;
  }

  /**
   * The index of the next server to try, skipping ejected ones and those in `tried`; when only
   * ejected servers remain it returns one of them anyway (trying beats failing without trying).
   * -1 when every server was tried.
   */
  pick(now: number, tried?: ReadonlySet<number>): number {
    const n = this.servers.length;
    let fallback = -1;
    let fallbackUntil = Infinity;
    for (let k = 0; k < n; k++) {
      const i = (this.cursor + k) % n;
      if (tried !== undefined && tried.has(i)) continue;
      const health = this.servers[i]!.health;
      if (health.isAvailable(now)) {
        this.cursor = (i + 1) % n;
        return i;
      }
      // Of the ejected ones, the one that comes back soonest is the best bet.
      if (health.ejectedUntil < fallbackUntil) {
        fallback = i;
        fallbackUntil = health.ejectedUntil;
      }
    }
    if (fallback >= 0) this.cursor = (fallback + 1) % n;
    return fallback;
  }
}

/** RFC 9110 §9.2.2 idempotent methods: safe to send again when no byte reached a server. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * Whether a request that could not connect may go to another server: only an idempotent
 * method without a request body (a streamed body cannot be replayed).
 */
export function isRetryableRequest(method: string, hasBody: boolean): boolean {
  return !hasBody && IDEMPOTENT.has(method);
}

/** How the proxy treats one upstream failure. */
export interface UpstreamFailure {
  readonly code: ErrorCode;
  /** The server could not be connected to: counts against its health, and nothing was sent. */
  readonly isConnectFailure: boolean;
  /** Short text for the client and the log. */
  readonly message: string;
}

/** OpenSSL's certificate verification results, as Node reports them in `error.code`. */
const CERTIFICATE_ERRORS: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_TLS_CERT_ALTNAME_FORMAT',
  // The upstream's certificate files could not be read (the message names the file).
  'GG_TLS_FILES',
]);

/** What to look at, for the failures whose cause is not obvious from OpenSSL's words. */
const TLS_HINTS: Readonly<Record<string, string>> = {
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: "the server wants a client certificate: set the upstream's tls.cert and tls.key",
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: "the server refused the gateway's client certificate (tls.cert)",
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: "the server does not trust the CA of the gateway's client certificate (tls.cert)",
  ERR_SSL_WRONG_VERSION_NUMBER: 'the server does not speak TLS: is it an http:// server?',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "the server's CA is not trusted: name it in the upstream's tls.ca",
  SELF_SIGNED_CERT_IN_CHAIN: "the server's CA is not trusted: name it in the upstream's tls.ca",
  DEPTH_ZERO_SELF_SIGNED_CERT: "the server's certificate is self-signed: name it in the upstream's tls.ca",
  ERR_TLS_CERT_ALTNAME_INVALID: "the certificate names another server: set the upstream's tls.serverName to a name it holds",
};

/** A TLS handshake or verification failure, from Node's error code. */
function isTlsFailure(code: string): boolean {
  return CERTIFICATE_ERRORS.has(code) || code.startsWith('ERR_SSL_') || code === 'ERR_TLS_HANDSHAKE_TIMEOUT';
}

const CONNECT_ERRORS: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
]);

/**
 * Maps an error from the upstream client (undici codes, or Node socket codes) to a graygate
 * error code: connect failures → 502 GG_UPSTREAM_CONNECT, timeouts → 504 GG_UPSTREAM_TIMEOUT,
 * a closed or broken connection or an invalid response → 502 GG_UPSTREAM_RESET.
 */
export function classifyUpstreamError(error: unknown): UpstreamFailure {
  const code = (error as { code?: unknown } | null)?.code;
  const text = typeof code === 'string' ? code : '';
  if (CONNECT_ERRORS.has(text)) return { code: 'GG_UPSTREAM_CONNECT', isConnectFailure: true, message: `could not connect to the upstream (${text})` };
  if (isTlsFailure(text)) {
    // The server's application never saw the request: the handshake failed (or, in TLS 1.3, the
    // server refused the client certificate right after it), so it is treated as a connect failure.
    // OpenSSL's own message is a library trace; Node keeps its readable part in `reason`.
    const reason = (error as { reason?: string }).reason ?? (error as Error).message ?? text;
    const hint = TLS_HINTS[text];
    return {
      code: 'GG_UPSTREAM_TLS',
      isConnectFailure: true,
      message: `TLS with the upstream server failed: ${reason}${reason.includes(text) ? '' : ` (${text})`}${hint === undefined ? '' : `; ${hint}`}`,
    };
  }
  // llhttp parse errors (HPE_*) and anything unknown: the upstream broke the exchange.
  return FAILURE_BY_CODE.get(text) ?? UPSTREAM_RESET;
}

function failure(code: ErrorCode, isConnectFailure: boolean, message: string): UpstreamFailure {
  return Object.freeze({ code, isConnectFailure, message });
}

const UPSTREAM_RESET = failure('GG_UPSTREAM_RESET', false, 'the upstream closed the connection or sent an invalid response');

/** The client's error codes other than connect failures, by what they mean for the request. */
const FAILURE_BY_CODE: ReadonlyMap<string, UpstreamFailure> = new Map(
  (
    [
      [['UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT'], failure('GG_UPSTREAM_TIMEOUT', true, 'connecting to the upstream timed out')],
      [['UND_ERR_HEADERS_TIMEOUT'], failure('GG_UPSTREAM_TIMEOUT', false, 'the upstream did not send response headers in time')],
      [['UND_ERR_BODY_TIMEOUT'], failure('GG_UPSTREAM_TIMEOUT', false, 'the upstream response body stalled')],
      [['UND_ERR_CLOSED', 'UND_ERR_DESTROYED'], failure('GG_UPSTREAM_UNAVAILABLE', false, 'the upstream connection pool is closed')],
      [['UND_ERR_REQ_CONTENT_LENGTH_MISMATCH'], failure('GG_BAD_REQUEST', false, 'the request body did not match its Content-Length')],
      [['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED'], failure('GG_BAD_REQUEST', false, 'the request cannot be forwarded as sent')],
      [['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'UND_ERR_RES_EXCEEDED_MAX_SIZE', 'UND_ERR_INFO'], UPSTREAM_RESET],
    ] as const
  ).flatMap(([codes, row]) => codes.map((code) => [code, row] as const)),
);