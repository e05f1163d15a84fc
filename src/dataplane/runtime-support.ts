import type { Settings } from '../config/schema.js';

/**
 * Settings a runtime's data plane cannot honour, each as one line naming the setting (empty when
 * it can honour them all). Rather than serve something weaker than what is configured, a gateway
 * on such a runtime refuses to start.
 * - `tls`: Bun.serve has no HTTP/2, and graygate's TLS listener (certificates by SNI, live reload,
 *   client certificates, HTTP/2 by ALPN) is built on node:tls and node:http2.
 * - `proxyProtocol`: Bun.serve hands graygate requests, never the connection, so there is no byte
 *   stream to read a PROXY header from.
 */
export function unsupportedOnRuntime(runtime: 'node' | 'bun', settings: Settings): string[] {
  if (runtime !== 'bun') return [];
  const refusals: string[] = [];
  if (settings.tls !== undefined) {
    refusals.push('tls: the Bun data plane cannot serve the TLS listener (Bun.serve has no HTTP/2, and certificate reload and client certificates are built on Node); run graygate with node, or remove tls and terminate TLS in front of graygate');
  }
  if (settings.proxyProtocol !== undefined) {
    refusals.push('proxyProtocol: not supported on the Bun runtime (Bun.serve gives no access to the connection the header arrives on); run graygate with node, or remove proxyProtocol');
  }
  return refusals;
}
