/**
 * Every error code graygate can report, in one table. A code never changes meaning once
 * released: callers and tests match on `code`, not on the message. `docs/errors.md` is
 * generated from this table (see `src/config/reference.ts`).
 */
export const ErrorCodes = {
  GG_CONFIG_INVALID: { status: 400, doc: 'The config document failed validation (shape or meaning); the message names each failing field.' },
  GG_CONFIG_UNREADABLE: { status: 400, doc: 'The config file could not be read or parsed as YAML/JSON.' },
  GG_VERSION_CONFLICT: { status: 409, doc: 'The write named a version that is no longer current; read again and retry.' },
  GG_VERSION_UNKNOWN: { status: 404, doc: 'No stored version has that number.' },
  GG_STORE_UNAVAILABLE: { status: 503, doc: 'The store could not be reached or did not answer in time.' },
  GG_STORE_CORRUPT: { status: 500, doc: 'The store holds data graygate cannot read (a history entry or a value is malformed).' },
  GG_STORE_EMPTY: { status: 503, doc: 'The store is reachable but holds no routing document yet; seed it by writing version 1 (expectedVersion 0).' },
  GG_STORE_READONLY: {
    status: 503,
    doc: 'The store refused the write because the Redis node graygate reached is a read-only replica (READONLY); nothing was written. Point store.url at the master, or use Sentinel so graygate finds it.',
  },
  GG_NO_SERVICE: { status: 404, doc: 'No service matches the request host and path.' },
  GG_BAD_REQUEST: { status: 400, doc: 'The request framing is ambiguous or malformed (e.g. Content-Length with Transfer-Encoding).' },
  GG_REQUEST_TIMEOUT: { status: 408, doc: 'The client did not send a complete request (headers, or the whole request) within proxy.clientHeadersTimeoutMs / proxy.clientRequestTimeoutMs; the connection is closed.' },
  GG_HEADERS_TOO_LARGE: { status: 431, doc: 'The request headers exceed what the gateway parses (Node: 16 KiB in total); the connection is closed.' },
  GG_UPSTREAM_CONNECT: { status: 502, doc: 'No server of the upstream accepted a connection.' },
  GG_UPSTREAM_RESET: { status: 502, doc: 'The upstream closed the connection or sent an invalid response.' },
  GG_UPSTREAM_TLS: {
    status: 502,
    doc: "TLS with an upstream server failed: its certificate did not verify (unknown CA, another name, expired), it refused the gateway's client certificate or wanted one, it does not speak TLS, or the upstream's certificate files could not be read. Counted as a connect failure (the next server, then stable); the log names the upstream and server.",
  },
  GG_UPSTREAM_TIMEOUT: { status: 504, doc: 'The upstream did not answer in time (connect, response headers, or idle body).' },
  GG_UPSTREAM_UNAVAILABLE: { status: 503, doc: 'The upstream has no server that can take the request.' },
  GG_SHUTTING_DOWN: { status: 503, doc: 'The gateway is draining for shutdown and takes no new requests.' },
  GG_EXPLAIN_INVALID: { status: 400, doc: 'A request description given to explain is malformed; the message names the field.' },
  GG_INTERNAL: { status: 500, doc: 'An unexpected error inside graygate; the log has the details.' },
  GG_ILLEGAL_TRANSITION: { status: 409, doc: 'The release action makes no sense in the release\'s current state (e.g. full before canary); the message says why and what to do.' },
  GG_UNAUTHORIZED: { status: 401, doc: 'The admin API needs a bearer token (Authorization: Bearer …) and none, or an unknown one, was given.' },
  GG_NOT_FOUND: { status: 404, doc: 'The admin API has no such resource (service, upstream, release or route); the message names it.' },
  GG_BODY_TOO_LARGE: { status: 413, doc: 'The admin API request body is larger than admin.bodyLimitBytes.' },
  GG_REQUEST_INVALID: { status: 400, doc: 'An admin API request is malformed (body, parameter or header); the message names the field.' },
  GG_LEASE_LOST: {
    status: 409,
    doc: 'A write made under a lease (the gateway driving rollouts) was refused because another gateway holds the lease now; nothing was written, and the new holder carries on.',
  },
  GG_ROLLOUT_NOT_RUNNING: { status: 409, doc: 'The rollout action needs a rollout in progress (or paused) and there is none; nothing was changed, stable included.' },
  GG_NOT_READY: { status: 503, doc: 'The gateway serves no routing snapshot yet.' },
  GG_OPENRESTY_UNSUPPORTED: {
    status: 400,
    doc: 'The config uses something the OpenResty data plane cannot evaluate exactly as graygate does (e.g. JWT identity); the message names each field and what to use instead.',
  },
} as const satisfies Record<string, { status: number; doc: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

/** The one error type graygate throws on purpose; `code` is stable, `message` is for people. */
export class GraygateError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }

  get status(): number {
    return ErrorCodes[this.code].status;
  }

  /** The body clients get: never a stack trace. */
  toJSON(): { error: { code: ErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** A config document or value was refused; `issues` are `path: message` lines, one per problem. */
export class ConfigError extends GraygateError {
  constructor(
    readonly issues: readonly string[],
    options?: ErrorOptions & { code?: 'GG_CONFIG_INVALID' | 'GG_CONFIG_UNREADABLE' | 'GG_OPENRESTY_UNSUPPORTED'; source?: string },
  ) {
    const where = options?.source ? `${options.source}: ` : '';
    super(options?.code ?? 'GG_CONFIG_INVALID', `${where}${issues.join('; ')}`, options);
  }
}

export function isGraygateError(error: unknown): error is GraygateError {
  return error instanceof GraygateError;
}
