import type { Upstream } from '../config/schema.js';

/**
 * Upstream settings the Bun data plane cannot honour: its fetch speaks HTTP/1.1 to upstreams (no
 * HTTP/2, so no `protocol: h2|h2c`), and Bun.serve drops response trailers, which gRPC needs; the
 * per-upstream `tls` section (CA bundle, server name, client certificate) is built on Node's TLS
 * client. Rather than dial such an upstream with weaker settings than configured, the Bun data
 * plane does not route to it (a candidate's callers stay on stable) and `start` refuses a config
 * file that has one. Returns one line naming the setting, or `undefined`.
 */
export function unsupportedUpstreamSetting(runtime: 'node' | 'bun', name: string, upstream: Upstream): string | undefined {
  if (runtime !== 'bun') return undefined;
  if (upstream.protocol !== 'http1') {
    return `upstreams.${name}.protocol: ${upstream.protocol} needs the Node data plane (Bun's fetch has no HTTP/2 and Bun.serve drops the trailers gRPC needs); run graygate with node, or use protocol http1`;
  }
  if (upstream.tls !== undefined) {
    return `upstreams.${name}.tls: per-upstream CA, server name and client certificate need the Node data plane; run graygate with node, or remove tls (Bun then verifies https:// servers against the system CAs)`;
  }
  return undefined;
}

/** Every unsupported upstream setting of a routing document's upstreams, one line each. */
export function unsupportedUpstreams(runtime: 'node' | 'bun', upstreams: Readonly<Record<string, Upstream>>): string[] {
  const lines: string[] = [];
  for (const [name, upstream] of Object.entries(upstreams)) {
    const line = unsupportedUpstreamSetting(runtime, name, upstream);
    if (line !== undefined) lines.push(line);
  }
  return lines;
}
