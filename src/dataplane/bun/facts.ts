import { AdapterRequestFacts } from '../request-facts.js';
import type { BunHeaderRecord } from './bun-api.js';

/**
 * RequestFacts over a fetch-style Request (Bun.serve); shared behaviour in AdapterRequestFacts.
 * Bun hands the URL in absolute form (`http://host:port/path?query`); path and query are cut
 * out of it once, on first use. Headers are read from the record the adapter took once (Bun's
 * toJSON), a property lookup instead of a native `get` per header a rule reads.
 */
export class BunRequestFacts extends AdapterRequestFacts<Request> {
  private pathStart = -1;
  private queryStart = -1;

  constructor(request: Request, private readonly headers: BunHeaderRecord, peerIp: string, isTrusted: (ip: string) => boolean) {
    super(request, peerIp, isTrusted);
  }

  get method(): string {
    return this.request.method;
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

  header(name: string): string | undefined {
    const value = this.headers[name];
    if (typeof value === 'string') return value;
    // Only Set-Cookie comes as an array: joined as Headers.get() joins it. Anything else is no
    // header (the record is a plain object: `constructor` is Object.prototype's, not a header).
    return Array.isArray(value) ? value.join(', ') : undefined;
  }

  protected rawQuery(): string {
    this.locate();
    return this.queryStart < 0 ? '' : this.request.url.slice(this.queryStart + 1);
  }
}
