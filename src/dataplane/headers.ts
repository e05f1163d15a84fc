/**
 * Runtime-neutral header handling for the proxy: hop-by-hop stripping, X-Forwarded-* and the
 * request-smuggling guard. The node and bun adapters both build on these functions; nothing
 * here touches a runtime's HTTP API.
 */

/**
 * RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies still meet
 * (Keep-Alive, Proxy-Connection) and Trailer (a framing promise of this hop only).
 * `expect` and `http2-settings` are also hop-level: Node answers 100-continue itself, and undici
 * refuses an `expect` header.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'expect',
  'http2-settings',
]);

/**
 * The header names listed in a `Connection` value, lower case; `undefined` when there are none
 * besides the usual keep-alive/close/upgrade tokens (the common case allocates nothing).
 */
export function connectionTokens(value: string | readonly string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const text = typeof value === 'string' ? value : value.join(',');
  let tokens: Set<string> | undefined;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    if (i === text.length || text.charCodeAt(i) === 44 /* , */) {
      const token = text.slice(start, i).trim().toLowerCase();
      start = i + 1;
      // These name connection options, not headers; skipping them keeps the common case cheap.
      if (token === '' || token === 'keep-alive' || token === 'close' || token === 'upgrade') continue;
      (tokens ??= new Set()).add(token);
    }
  }
  return tokens;
}

/** True for the X-Forwarded-* family and RFC 7239 `Forwarded`, which only a trusted peer may set. */
export function isForwardingHeader(lowerName: string): boolean {
  return lowerName === 'forwarded' || (lowerName.length > 12 && lowerName.startsWith('x-forwarded-'));
}

/** What the proxy knows about the hop the request arrived on. */
export interface ForwardingContext {
  /** The peer that connected to graygate (IPv4-mapped IPv6 already unwrapped). */
  readonly peerIp: string;
  /** True when the peer is one of the configured trusted proxies. */
  readonly peerIsTrusted: boolean;
  /** `http` or `https`: the protocol of this hop. */
  readonly proto: string;
}

export interface UpstreamHeaderOptions {
  /** Send the client's Host (true) or `originHost` (false). */
  readonly preserveHost: boolean;
  /** `host[:port]` of the chosen server origin, used when the client's Host is not kept. */
  readonly originHost: string;
  /** Keep `content-length`: true when the body is forwarded byte for byte (always, today). */
  readonly bodyUntouched: boolean;
}

/**
 * Builds the upstream request headers from the client's raw header list (name, value, …) as a
 * flat list in the same form: hop-by-hop headers and every name in `Connection` dropped, Host
 * per `preserveHost`, and X-Forwarded-For/-Proto/-Host appended to (trusted peer) or written
 * fresh (anyone else: the client's X-Forwarded-* and `Forwarded` are dropped, since a client
 * could otherwise claim any address and pass CIDR rules or the upstream's own checks).
 */
export function buildUpstreamRequestHeaders(
  rawHeaders: readonly string[],
  forwarding: ForwardingContext,
  options: UpstreamHeaderOptions,
): string[] {
  let named: Set<string> | undefined;
  let host: string | undefined;
  let xff: string | undefined;
  let xfProto: string | undefined;
  let xfHost: string | undefined;
  // First pass only when a Connection header exists: it can name headers that came before it.
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      const tokens = connectionTokens(rawHeaders[i + 1]);
      if (tokens) for (const token of tokens) (named ??= new Set()).add(token);
    }
  }
  const out: string[] = [];
  let sawContentLength = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const value = rawHeaders[i + 1]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named?.has(lower)) continue;
    if (lower === 'host') {
      host ??= value;
      continue;
    }
    if (lower === 'content-length') {
      // The smuggling guard already refused conflicting values; send exactly one.
      if (options.bodyUntouched && !sawContentLength) out.push(name, value);
      sawContentLength = true;
      continue;
    }
    if (isForwardingHeader(lower)) {
      if (!forwarding.peerIsTrusted) continue;
      if (lower === 'x-forwarded-for') {
        xff = xff === undefined ? value : `${xff}, ${value}`;
        continue;
      }
      if (lower === 'x-forwarded-proto') {
        xfProto ??= value;
        continue;
      }
      if (lower === 'x-forwarded-host') {
        xfHost ??= value;
        continue;
      }
    }
    out.push(name, value);
  }
  const upstreamHost = options.preserveHost && host !== undefined ? host : options.originHost;
  out.push('host', upstreamHost);
  out.push('x-forwarded-for', xff === undefined ? forwarding.peerIp : `${xff}, ${forwarding.peerIp}`);
  out.push('x-forwarded-proto', xfProto ?? forwarding.proto);
  const forwardedHost = xfHost ?? host;
  if (forwardedHost !== undefined) out.push('x-forwarded-host', forwardedHost);
  return out;
}

/**
 * Copies response headers (lower-case names, arrays for repeated ones, as undici parses them)
 * without hop-by-hop headers or any name listed in the response's `Connection`, so an
 * upstream's `Connection: close` never closes the client's connection.
 */
export function buildClientResponseHeaders(
  headers: Readonly<Record<string, string | string[] | undefined>>,
): Record<string, string | string[]> {
  const named = connectionTokens(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || named?.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Merges graygate's `Vary` into one the upstream may already have sent. */
export function mergeVary(existing: string | string[] | undefined, ours: string): string {
  if (existing === undefined) return ours;
  const text = typeof existing === 'string' ? existing : existing.join(', ');
  return text.length === 0 ? ours : `${text}, ${ours}`;
}

// Built once: a regex literal inside the function would be a new object per request.
const DECIMAL = /^\d{1,15}$/;

/**
 * The request-smuggling guard (a request whose length graygate and the upstream read differently
 * would let a client hide a second request inside the first): returns why the framing is
 * ambiguous, or `undefined` when it is fine. Refused: Content-Length with Transfer-Encoding,
 * repeated Content-Length (even with equal values), a Content-Length that is not a plain
 * decimal, and any Transfer-Encoding other than exactly one plain `chunked`.
 */
export function checkRequestFraming(rawHeaders: readonly string[]): string | undefined {
  let contentLength = 0;
  let transferEncoding = 0;
  let teValue = '';
  let clValue = '';
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    // Length first: most headers are ruled out without lower-casing.
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      contentLength++;
      clValue = rawHeaders[i + 1]!;
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
      transferEncoding++;
      teValue = rawHeaders[i + 1]!;
    }
  }
  if (contentLength > 0 && transferEncoding > 0) return 'Content-Length together with Transfer-Encoding';
  if (contentLength > 1) return 'repeated Content-Length';
  if (contentLength === 1 && !DECIMAL.test(clValue)) return 'Content-Length is not a decimal number';
  if (transferEncoding > 1) return 'repeated Transfer-Encoding';
  if (transferEncoding === 1 && teValue.toLowerCase() !== 'chunked') {
    return `Transfer-Encoding ${JSON.stringify(teValue)} (only plain "chunked" is accepted)`;
  }
  return undefined;
}

/** `::ffff:10.0.0.1` → `10.0.0.1`, so logs, X-Forwarded-For and CIDR rules see one form. */
export function unwrapMappedIpv4(ip: string): string {
  return ip.length > 7 && ip.charCodeAt(0) === 58 /* : */ && ip.startsWith('::ffff:') && ip.includes('.', 7) ? ip.slice(7) : ip;
}

/**
 * The caller's address as graygate trusts it: the peer itself unless the peer is a trusted
 * proxy; then the right-most X-Forwarded-For entry that is not a trusted proxy (entries to its
 * left were written by parties we cannot vouch for). When every entry is trusted, the
 * left-most one.
 */
export function trustedClientIp(
  peerIp: string,
  peerIsTrusted: boolean,
  xForwardedFor: string | undefined,
  isTrusted: (ip: string) => boolean,
): string {
  if (!peerIsTrusted || xForwardedFor === undefined) return peerIp;
  let end = xForwardedFor.length;
  let last = peerIp;
  for (let i = end - 1; i >= -1; i--) {
    if (i === -1 || xForwardedFor.charCodeAt(i) === 44 /* , */) {
      const entry = unwrapMappedIpv4(xForwardedFor.slice(i + 1, end).trim());
      end = i;
      if (entry.length === 0) continue;
      if (!isTrusted(entry)) return entry;
      last = entry;
    }
  }
  return last;
}
