import { ErrorCodes, type ErrorCode } from '../errors.js';

/**
 * The one error answer of the data plane, for every runtime and path (a node:http response, a raw
 * socket after a parse error or a refused upgrade, a Bun Response): status from the error table,
 * body `{"error":{"code","message"}}`, never a stack. Errors are off the hot path: allocating is fine.
 */
export interface ErrorAnswer {
  readonly status: number;
  /** The status line's reason phrase. */
  readonly statusText: string;
  readonly body: string;
  /** Body length in bytes, stated as Content-Length (the access log reports it too). */
  readonly length: number;
  readonly headers: Record<string, string>;
}

/** RFC 9110 §15 reason phrases of every status the error table uses. */
const REASONS: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  404: 'Not Found',
  408: 'Request Timeout',
  409: 'Conflict',
  413: 'Content Too Large',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** The reason phrase of `status` ('' for one the table does not use). */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? '';
}

/** The answer for `code`; `close` adds `Connection: close` (the connection cannot carry another request). */
export function errorAnswer(code: ErrorCode, message: string, close: boolean): ErrorAnswer {
  const status = ErrorCodes[code].status;
  const body = JSON.stringify({ error: { code, message } });
  const length = Buffer.byteLength(body);
  const headers: Record<string, string> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(length),
    'cache-control': 'no-store',
  };
  if (close) headers.connection = 'close';
  return { status, statusText: reasonPhrase(status), body, length, headers };
}

/** The whole HTTP/1.1 response as text, for a raw socket; always `Connection: close`. */
export function rawErrorResponse(code: ErrorCode, message: string): string {
  const answer = errorAnswer(code, message, true);
  let head = `HTTP/1.1 ${answer.status} ${answer.statusText}\r\n`;
  for (const name in answer.headers) head += `${name}: ${answer.headers[name]}\r\n`;
  return `${head}\r\n${answer.body}`;
}
