import type { RequestFacts } from '../rules/facts.js';
import { trustedClientIp, type ForwardingContext } from './headers.js';

/**
 * What every runtime's RequestFacts shares: the identity fields rules fill in, the peer's trust,
 * and host, client IP, cookies and query computed once, on first use, so a request whose rules
 * read none of them pays nothing for them. An adapter supplies only what reads its own request
 * type `R`: `method`, `header(name)`, the path and the raw query string.
 */
export abstract class AdapterRequestFacts<R> implements RequestFacts, ForwardingContext {
  userId: string | undefined = undefined;
  numericUserId: number | undefined = undefined;
  identitySource: string | undefined = undefined;
  mintedAnonymousCookie: string | undefined = undefined;

  private hostValue: string | undefined;
  private clientIpValue: string | undefined;
  private cookies: Map<string, string> | undefined;
  private params: URLSearchParams | undefined;

  /** Whether the connected peer is one of the configured trusted proxies. */
  readonly isFromTrustedProxy: boolean;

  constructor(
    /** The runtime's own request object, which the adapter's readers look into. */
    protected readonly request: R,
    /** The connected peer, IPv4-mapped form unwrapped. */
    readonly peerIp: string,
    private readonly isTrusted: (ip: string) => boolean,
  ) {
    this.isFromTrustedProxy = isTrusted(peerIp);
  }

  abstract readonly method: string;
  abstract readonly path: string;
  /** First value of a request header; `name` is lower case. */
  abstract header(name: string): string | undefined;
  /** The query string without its `?` ('' when there is none). */
  protected abstract rawQuery(): string;

  /** This hop's protocol: graygate serves plain HTTP (TLS ends in front of it). */
  get proto(): string {
    return 'http';
  }

  get peerIsTrusted(): boolean {
    return this.isFromTrustedProxy;
  }

  get host(): string {
    if (this.hostValue === undefined) this.hostValue = hostWithoutPort(this.header('host'));
    return this.hostValue;
  }

  get clientIp(): string {
    if (this.clientIpValue === undefined) {
      this.clientIpValue = trustedClientIp(this.peerIp, this.isFromTrustedProxy, this.header('x-forwarded-for'), this.isTrusted);
    }
    return this.clientIpValue;
  }

  cookie(name: string): string | undefined {
    if (this.cookies === undefined) this.cookies = parseCookies(this.header('cookie'));
    return this.cookies.get(name);
  }

  query(name: string): string | undefined {
    if (this.params === undefined) this.params = new URLSearchParams(this.rawQuery());
    return this.params.get(name) ?? undefined;
  }
}

const EMPTY_COOKIES: Map<string, string> = new Map();

/** RFC 6265 §5.4 `Cookie` header: `a=1; b=2`. The first occurrence of a name wins. */
export function parseCookies(header: string | undefined): Map<string, string> {
  if (header === undefined || header.length === 0) return EMPTY_COOKIES;
  const cookies = new Map<string, string>();
  let start = 0;
  const length = header.length;
  while (start < length) {
    let end = header.indexOf(';', start);
    if (end < 0) end = length;
    const eq = header.indexOf('=', start);
    if (eq > start && eq < end) {
      const name = header.slice(start, eq).trim();
      let value = header.slice(eq + 1, end).trim();
      if (value.length >= 2 && value.charCodeAt(0) === 34 && value.charCodeAt(value.length - 1) === 34) value = value.slice(1, -1);
      if (name.length > 0 && !cookies.has(name)) cookies.set(name, value);
    }
    start = end + 1;
  }
  return cookies;
}

/** `Example.com:8080` → `example.com`; `[::1]:80` → `[::1]`; none → ''. */
export function hostWithoutPort(host: string | undefined): string {
  if (host === undefined || host.length === 0) return '';
  let end = host.length;
  if (host.charCodeAt(0) === 91 /* [ */) {
    const close = host.indexOf(']');
    end = close < 0 ? end : close + 1;
  } else {
    const colon = host.indexOf(':');
    if (colon >= 0) end = colon;
  }
  const name = end === host.length ? host : host.slice(0, end);
  return name.toLowerCase();
}
