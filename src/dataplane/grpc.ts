import type { ErrorCode } from '../errors.js';

/**
 * gRPC over the proxy, runtime-neutral: recognising a call, its deadline (`grpc-timeout`), and the
 * gateway's own errors as gRPC statuses. A gRPC client reads the outcome of a call from
 * `grpc-status` (HTTP status 200 whatever happened), so a JSON error body with a 502 would reach
 * it as a protocol error; the gateway answers as a gRPC server would.
 */

/** The gRPC status codes the gateway itself answers with (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** True for a gRPC request's Content-Type (`application/grpc`, `application/grpc+proto` …). */
export function isGrpcContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.length >= 16 && contentType.startsWith('application/grpc') && (contentType.length === 16 || contentType.charCodeAt(16) === 43 /* + */ || contentType.charCodeAt(16) === 59 /* ; */);
}

// grpc-timeout: 1 to 8 digits and a unit (PROTOCOL-HTTP2.md "Timeout").
const UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * The deadline a `grpc-timeout` value gives, in whole milliseconds (at least 1, so a sub-
 * millisecond deadline still expires rather than meaning "none"); undefined when absent or
 * malformed (a malformed value is ignored, as gRPC servers do: the call has no deadline).
 */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined || value.length < 2 || value.length > 9) return undefined;
  const unit = UNIT_MS[value[value.length - 1]!];
  if (unit === undefined) return undefined;
  let amount = 0;
  for (let i = 0; i < value.length - 1; i++) {
    const digit = value.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return undefined;
    amount = amount * 10 + digit;
  }
  return Math.max(1, Math.ceil(amount * unit));
}

/**
 * The gRPC status of one of the gateway's error codes, after gRPC's HTTP-to-gRPC mapping
 * (doc/http-grpc-status-mapping.md) where one applies: an upstream that cannot be reached is
 * UNAVAILABLE (clients may retry it), a timeout DEADLINE_EXCEEDED, no matching service
 * UNIMPLEMENTED.
 */
export function grpcStatusFor(code: ErrorCode): number {
  switch (code) {
    case 'GG_UPSTREAM_CONNECT':
    case 'GG_UPSTREAM_RESET':
    case 'GG_UPSTREAM_UNAVAILABLE':
    case 'GG_UPSTREAM_TLS':
    case 'GG_SHUTTING_DOWN':
    case 'GG_NOT_READY':
    case 'GG_STORE_UNAVAILABLE':
      return GrpcStatus.UNAVAILABLE;
    case 'GG_UPSTREAM_TIMEOUT':
    case 'GG_REQUEST_TIMEOUT':
      return GrpcStatus.DEADLINE_EXCEEDED;
    case 'GG_NO_SERVICE':
    case 'GG_NOT_FOUND':
      return GrpcStatus.UNIMPLEMENTED;
    case 'GG_UNAUTHORIZED':
      return GrpcStatus.UNAUTHENTICATED;
    case 'GG_HEADERS_TOO_LARGE':
    case 'GG_BODY_TOO_LARGE':
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case 'GG_BAD_REQUEST':
    case 'GG_INTERNAL':
      return GrpcStatus.INTERNAL;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** grpc-message is percent-encoded: bytes outside printable ASCII, and `%` itself. */
export function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * The fields of the gateway's gRPC error: HTTP 200, `content-type: application/grpc`, and the
 * status with its message (`… (GG_CODE)`, so logs and clients name the same code). Sent as a
 * trailers-only response: these are the only header block, and the stream ends with it.
 */
export function grpcErrorFields(code: ErrorCode, message: string): Record<string, string> {
  return {
    'content-type': 'application/grpc',
    'grpc-status': String(grpcStatusFor(code)),
    'grpc-message': encodeGrpcMessage(`${message} (${code})`),
  };
}
