import type { IncomingMessage } from 'node:http';
import { AdapterRequestFacts } from '../request-facts.js';

/** RequestFacts over a node:http IncomingMessage (shared behaviour in AdapterRequestFacts). */
export class NodeRequestFacts extends AdapterRequestFacts {
  private pathValue: string | undefined;

  constructor(
    private readonly req: IncomingMessage,
    peerIp: string,
    isFromTrustedProxy: boolean,
    isTrusted: (ip: string) => boolean,
  ) {
    super(peerIp, isFromTrustedProxy, isTrusted);
  }

  get method(): string {
    return this.req.method ?? 'GET';
  }

  get path(): string {
    if (this.pathValue === undefined) {
      const url = this.req.url ?? '/';
      const q = url.indexOf('?');
      this.pathValue = q < 0 ? url : url.slice(0, q);
    }
    return this.pathValue;
  }

  header(name: string): string | undefined {
    const value = this.req.headers[name];
    return typeof value === 'string' ? value : value?.[0];
  }

  protected rawQuery(): string {
    const url = this.req.url ?? '';
    const q = url.indexOf('?');
    return q < 0 ? '' : url.slice(q + 1);
  }
}
