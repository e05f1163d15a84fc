import type { RequestFacts } from '../../rules/facts.js';
import { trustedClientIp, type ForwardingContext } from '../headers.js';
import { hostWithoutPort, parseCookies } from '../node/facts.js';

/**
 * RequestFacts over a fetch-style Request (Bun.serve). Bun hands the URL in absolute form
 * (`http://host:port/path?query`); host, path and query are cut out of it once, on first use.
 */
export class BunRequestFacts implements RequestFacts, ForwardingContext {
  userId: string | undefined = undefined;
  numericUserId: number | undefined = undefined;
  identitySource: string | undefined = undefined;
  mintedAnonymousCookie: string | undefined = undefined;

  private hostValue: string | undefined;
  private pathStart = -1;
  private queryStart = -1;
  private clientIpValue: string | undefined;
  private cookies: Map<string, string> | undefined;
  private params: URLSearchParams | undefined;

  constructor(
    private readonly request: Request,
    readonly peerIp: string,
    readonly isFromTrustedProxy: boolean,
    private readonly isTrusted: (ip: string) => boolean,
  ) {}

  get proto(): string {
    return 'http';
  }

  get peerIsTrusted(): boolean {
    return this.isFromTrustedProxy;
  }

  get method(): string {
    return this.request.method;
  }

  get host(): string {
    if (this.hostValue === undefined) this.hostValue = hostWithoutPort(this.request.headers.get('host') ?? undefined);
    return this.hostValue;
  }

  private locate(): void {
    if (this.pathStart >= 0) return;
    const url = this.request.url;
    const scheme = url.indexOf('://');
    const slash = scheme < 0 ? url.indexOf('/') : url.indexOf('/', scheme + 3);
    this.pathStart = slash < 0 ? url.length : slash;
    this.queryStart = url.indexOf('?', this.pathStart);
  }

  get path(): string {
    this.locate();
    const url = this.request.url;
    const path = this.queryStart < 0 ? url.slice(this.pathStart) : url.slice(this.pathStart, this.queryStart);
    return path === '' ? '/' : path;
  }

  /** Path and query as the client sent them, for the upstream request line. */
  get pathAndQuery(): string {
    this.locate();
    const rest = this.request.url.slice(this.pathStart);
    return rest === '' || rest.charCodeAt(0) !== 47 /* / */ ? `/${rest}` : rest;
  }

  get clientIp(): string {
    if (this.clientIpValue === undefined) {
      this.clientIpValue = trustedClientIp(this.peerIp, this.isFromTrustedProxy, this.request.headers.get('x-forwarded-for') ?? undefined, this.isTrusted);
    }
    return this.clientIpValue;
  }

  header(name: string): string | undefined {
    return this.request.headers.get(name) ?? undefined;
  }

  cookie(name: string): string | undefined {
    if (this.cookies === undefined) this.cookies = parseCookies(this.request.headers.get('cookie') ?? undefined);
    return this.cookies.get(name);
  }

  query(name: string): string | undefined {
    if (this.params === undefined) {
      this.locate();
      this.params = new URLSearchParams(this.queryStart < 0 ? '' : this.request.url.slice(this.queryStart + 1));
    }
    return this.params.get(name) ?? undefined;
  }
}
