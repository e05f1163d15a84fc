import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest } from 'node:http2';
import type { ErrorCode } from '../../errors.js';

/**
 * HTTP/2 requests take the same route path as HTTP/1.1 ones. node:http2's compatibility API
 * (Http2ServerRequest/Response) offers what the exchange reads of an IncomingMessage and a
 * ServerResponse (method, url, headers, rawHeaders, socket address, complete, a readable body;
 * writeHead, write with 'drain', end, destroy, 'close'); what differs is settled here, once per
 * request, before the request is routed.
 */

/** True for a request or response of node:http2's compatibility API. */
export function isHttp2(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 2;
}

/**
 * Rewrites an HTTP/2 request's header list, in place, to the form the route path reads:
 *
 * - pseudo-header fields (`:method`, `:path`, `:scheme`, `:authority`) are dropped: they are this
 *   hop's framing, and the method and path are read from the request itself;
 * - RFC 9113 §8.3.1: the Host an intermediary sends on is `:authority`, which replaces any Host
 *   field (two hosts would let routing and the upstream disagree about the target);
 * - RFC 9113 §8.2.3: cookie fields a client split apart are joined with "; " for HTTP/1.1;
 * - a body with no Content-Length (HTTP/2 ends a body with a flag, not a length) is marked
 *   `transfer-encoding: chunked` in the parsed headers (not in the list sent on), which is what
 *   HTTP/1.1 calls a body of unknown length: it is streamed to the upstream as it arrives.
 *
 * A header list larger than `maxHeaderListBytes` (counted as RFC 9113 §6.5.2 does: name, value
 * and 32 bytes per field) is refused: the limit is advertised in SETTINGS, which a client may
 * ignore, and nothing below enforces it.
 *
 * Returns why the request is refused, or `undefined`.
 */
export function adoptHttp2Request(request: IncomingMessage, maxHeaderListBytes: number): { code: ErrorCode; message: string } | undefined {
  const req = request as unknown as Http2ServerRequest;
  const headers = req.headers;
  if (req.method === 'CONNECT') return { code: 'GG_BAD_REQUEST', message: 'CONNECT is not served over HTTP/2' };
  const authority = headers[':authority'];
  // The compatibility API returns the same array on every read: editing it edits the request.
  const raw = req.rawHeaders;
  let write = 0;
  let cookie: string | undefined;
  let cookies = 0;
  let size = 0;
  for (let read = 0; read < raw.length; read += 2) {
    const name = raw[read]!;
    size += name.length + raw[read + 1]!.length + 32;
    if (name.charCodeAt(0) === 58 /* : */) continue;
    if (name === 'host' && authority !== undefined) continue;
    if (name === 'cookie') {
      cookie = cookie === undefined ? raw[read + 1]! : `${cookie}; ${raw[read + 1]!}`;
      cookies++;
      continue;
    }
    raw[write++] = name;
    raw[write++] = raw[read + 1]!;
  }
  raw.length = write;
  if (size > maxHeaderListBytes) return { code: 'GG_HEADERS_TOO_LARGE', message: `the request header list is ${size} bytes; at most ${maxHeaderListBytes}` };
  if (cookie !== undefined) {
    raw.push('cookie', cookie);
    if (cookies > 1) headers.cookie = cookie;
  }
  if (authority !== undefined) {
    raw.push('host', authority);
    headers.host = authority;
  }
  if (!req.stream.endAfterHeaders && headers['content-length'] === undefined) headers['transfer-encoding'] = 'chunked';
  return undefined;
}

/** Response header fields HTTP/2 forbids (RFC 9113 §8.2.2); node:http2 throws on most of them. */
const CONNECTION_SPECIFIC = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'] as const;

/** Drops the connection-specific fields from response headers about to be written on HTTP/2. */
export function stripConnectionSpecific(headers: Record<string, unknown>): void {
  for (const name of CONNECTION_SPECIFIC) if (name in headers) delete headers[name];
}

/** True when `res` answers an HTTP/2 stream. */
export function isHttp2Response(res: ServerResponse): boolean {
  return (res as unknown as { stream?: unknown }).stream !== undefined;
}
