import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { AdapterRequestFacts } from '../request-facts.js';

/** RequestFacts over a node:http IncomingMessage (shared behaviour in AdapterRequestFacts). */
export class NodeRequestFacts extends AdapterRequestFacts<IncomingMessage> {
  private pathValue: string | undefined;

  /** True on the TLS listener (either protocol): the anonymous cookie gets Secure, X-Forwarded-Proto says https. */
  get isTls(): boolean {
    return (this.request.socket as TLSSocket).encrypted === true;
  }

  override get proto(): string {
    return this.isTls ? 'https' : 'http';
  }

  get method(): string {
    return this.request.method ?? 'GET';
  }

  get path(): string {
    if (this.pathValue === undefined) {
      const url = this.request.url ?? '/';
      const q = url.indexOf('?');
      this.pathValue = q < 0 ? url : url.slice(0, q);
    }
    return this.pathValue;
  }

  header(name: string): string | undefined {
    const value = this.request.headers[name];
    return typeof value === 'string' ? value : value?.[0];
  }

  protected rawQuery(): string {
    const url = this.request.url ?? '';
    const q = url.indexOf('?');
    return q < 0 ? '' : url.slice(q + 1);
  }
}
