import type { Settings } from '../config/schema.js';

/**
 * Settings a runtime's data plane cannot honour. Bun.serve has no HTTP/2, and graygate's TLS
 * listener (certificates by SNI, live reload, client certificates, HTTP/2 by ALPN) is built on
 * node:tls and node:http2; rather than serve a weaker listener than the one configured, a gateway
 * on Bun refuses to start with TLS settings. Returns one line naming the setting, or `undefined`.
 */
export function unsupportedOnRuntime(runtime: 'node' | 'bun', settings: Settings): string | undefined {
  if (runtime !== 'bun') return undefined;
  if (settings.tls !== undefined) {
    return 'tls: the Bun data plane cannot serve the TLS listener (Bun.serve has no HTTP/2, and certificate reload and client certificates are built on Node); run graygate with node, or remove tls and terminate TLS in front of graygate';
  }
  return undefined;
}
