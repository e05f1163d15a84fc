import { canonicalNumericId, type RequestFacts } from './facts.js';

/** A request described in plain values (explain, tests); everything is optional. Header names may be in any case. */
export interface FactsInit {
  method?: string;
  /** Host, with or without a port; defaults to the `host` header, else ''. */
  host?: string;
  /** Path, optionally with a query string (`/cart?uid=7`); its parameters add to `query`. Default `/`. */
  path?: string;
  headers?: Record<string, string>;
  /** Cookies by name; they add to those of a `cookie` header (these win). */
  cookies?: Record<string, string>;
  query?: Record<string, string>;
  /** The caller's address as graygate would trust it; default 127.0.0.1. */
  clientIp?: string;
  isFromTrustedProxy?: boolean;
  isTls?: boolean;
  /** Pre-resolved identity (as if the identity chain had run); sets numericUserId too. */
  userId?: string;
  identitySource?: string;
}

/** `Example.com:8080` → `example.com`; `[::1]:80` → `[::1]`. */
function hostWithoutPort(host: string): string {
  let end = host.length;
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    if (close >= 0) end = close + 1;
  } else {
    const colon = host.indexOf(':');
    if (colon >= 0) end = colon;
  }
  return host.slice(0, end).toLowerCase();
}

/** RFC 6265 `Cookie` header: `a=1; b=2`, quotes around a value removed; the first of a name wins. */
function parseCookieHeader(header: string, into: Map<string, string>): void {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (name.length > 0 && !into.has(name)) into.set(name, value);
  }
}

/**
 * RequestFacts over a described request: one runtime-neutral implementation shared by explain
 * and the tests of rules, strategies and identity. It follows the interface contract (lower-case
 * header lookup, `undefined` for missing values) exactly as the data plane adapters do. Not for
 * the hot path: it parses everything up front.
 */
export class DescribedFacts implements RequestFacts {
  readonly method: string;
  readonly host: string;
  readonly path: string;
  readonly clientIp: string;
  readonly isFromTrustedProxy: boolean;
  readonly isTls: boolean;
  userId: string | undefined;
  numericUserId: number | undefined;
  identitySource: string | undefined;
  mintedAnonymousCookie: string | undefined = undefined;
  private readonly headers: Map<string, string>;
  private readonly cookies: Map<string, string>;
  private readonly queryParams: Map<string, string>;

  constructor(init: FactsInit = {}) {
    this.method = init.method ?? 'GET';
    this.headers = new Map(Object.entries(init.headers ?? {}).map(([name, value]) => [name.toLowerCase(), value]));
    this.host = hostWithoutPort(init.host ?? this.headers.get('host') ?? '');
    const fullPath = init.path ?? '/';
    const q = fullPath.indexOf('?');
    this.path = q < 0 ? fullPath : fullPath.slice(0, q);
    this.queryParams = new Map();
    if (q >= 0) {
      for (const [name, value] of new URLSearchParams(fullPath.slice(q + 1))) if (!this.queryParams.has(name)) this.queryParams.set(name, value);
    }
    for (const [name, value] of Object.entries(init.query ?? {})) this.queryParams.set(name, value);
    this.clientIp = init.clientIp ?? '127.0.0.1';
    this.isFromTrustedProxy = init.isFromTrustedProxy ?? false;
    this.isTls = init.isTls ?? false;
    this.cookies = new Map();
    const cookieHeader = this.headers.get('cookie');
    if (cookieHeader !== undefined) parseCookieHeader(cookieHeader, this.cookies);
    for (const [name, value] of Object.entries(init.cookies ?? {})) this.cookies.set(name, value);
    this.userId = init.userId;
    this.numericUserId = init.userId === undefined ? undefined : canonicalNumericId(init.userId);
    this.identitySource = init.userId === undefined ? undefined : (init.identitySource ?? 'test');
  }

  header(name: string): string | undefined {
    return this.headers.get(name);
  }

  cookie(name: string): string | undefined {
    return this.cookies.get(name);
  }

  query(name: string): string | undefined {
    return this.queryParams.get(name);
  }
}

/** Builds request facts from a description. */
export function describedFacts(init: FactsInit = {}): DescribedFacts {
  return new DescribedFacts(init);
}
