import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { NormalizedForm } from './form.js';

/** The `format` of what graygate delivers to nginx: the normalized form plus its upstreams as the balancer dials them. */
export const ENVELOPE_FORMAT = 'graygate-openresty-delivery/1';

/** One server as nginx's balancer dials it: an address (nginx's balancer takes no host names). */
export interface EnvelopeServer {
  readonly origin: string;
  readonly scheme: 'http' | 'https';
  readonly ip: string;
  readonly port: number;
  /** `host:port` as the origin names it: the Host header when `proxy.preserveHost` is off. */
  readonly host_header: string;
}

/** An upstream as balancer.lua reads it: timeouts in seconds (ngx.balancer.set_timeouts), health policy. */
export interface EnvelopeUpstream {
  readonly scheme: 'http' | 'https';
  readonly host_header: string;
  readonly servers: readonly EnvelopeServer[];
  readonly timeouts: { readonly connect: number; readonly send: number; readonly read: number };
  readonly eject_after: number;
  readonly eject_for_ms: number;
}

/**
 * What nginx stores and every worker swaps to: ordered by (epoch, version, stamp), so a duplicate
 * or an older delivery changes nothing, and a store key value that changed the form but not the
 * version (a new Grayscale_Range) still replaces it (a later stamp).
 */
export interface Envelope {
  readonly format: typeof ENVELOPE_FORMAT;
  readonly version: number;
  readonly epoch: string;
  /** When graygate compiled it (ms since the epoch). */
  readonly stamp: number;
  /**
   * SHA-1 (hex) of the form and upstreams as serialized: two graygates of a fleet that compiled
   * the same version to the same content deliver it once (nginx and the Redis key skip the second).
   */
  readonly digest: string;
  readonly form: NormalizedForm;
  readonly upstreams: Readonly<Record<string, EnvelopeUpstream>>;
}

/** Resolves a server's host once per delivery: nginx's balancer needs an address. */
async function addressOf(host: string): Promise<string> {
  if (isIP(host)) return host;
  const { address } = await lookup(host);
  return address;
}

/** An upstream's timeouts as nginx's (seconds): connect; send and read (nginx has no response-headers timeout of its own). */
export function nginxTimeouts(t: { readonly connectMs: number; readonly responseHeadersMs: number; readonly idleMs: number }): { connect: number; send: number; read: number } {
  return { connect: t.connectMs / 1000, send: t.idleMs / 1000, read: Math.max(t.responseHeadersMs, t.idleMs) / 1000 };
}

/**
 * The envelope for `form`. Upstream timeouts map to nginx's: connect → connect; nginx has one
 * read timeout (between two reads) for the response headers and the body, so it takes the larger
 * of responseHeadersMs and idleMs (a stream Node would let through is never cut), and the send
 * timeout (between two writes of the request) takes idleMs.
 */
export async function buildEnvelope(form: NormalizedForm, stamp: number, epoch = form.epoch ?? ''): Promise<{ envelope: Envelope; body: string }> {
  const addresses = new Map<string, string>();
  for (const upstream of Object.values(form.upstreams)) {
    for (const server of upstream.servers) if (!addresses.has(server.host)) addresses.set(server.host, await addressOf(server.host));
  }
  return envelopeOf(form, stamp, epoch, (host) => addresses.get(host)!);
}

/**
 * The same, at once, when every server is named by its address (no lookup to wait for; the usual
 * case): a delivery then leaves in the same turn as the snapshot it carries. undefined when a
 * server has a host name.
 */
export function buildEnvelopeNow(form: NormalizedForm, stamp: number, epoch = form.epoch ?? ''): { envelope: Envelope; body: string } | undefined {
  for (const upstream of Object.values(form.upstreams)) {
    for (const server of upstream.servers) if (!isIP(server.host)) return undefined;
  }
  return envelopeOf(form, stamp, epoch, (host) => host);
}

function envelopeOf(form: NormalizedForm, stamp: number, epoch: string, addressOfHost: (host: string) => string): { envelope: Envelope; body: string } {
  const upstreams: Record<string, EnvelopeUpstream> = {};
  for (const [name, upstream] of Object.entries(form.upstreams)) {
    const servers = upstream.servers.map((server): EnvelopeServer => {
      const url = new URL(server.origin);
      return { origin: server.origin, scheme: server.scheme, ip: addressOfHost(server.host), port: server.port, host_header: url.host };
    });
    const t = upstream.timeouts;
    upstreams[name] = {
      scheme: servers[0]?.scheme ?? 'http',
      host_header: servers[0]?.host_header ?? '',
      servers,
      timeouts: nginxTimeouts(t),
      eject_after: upstream.health.ejectAfterFailures,
      eject_for_ms: upstream.health.ejectForMs,
    };
  }
  // Serialized once: the digest covers the content, and the body is the head plus that content.
  const content = JSON.stringify({ form, upstreams });
  const digest = createHash('sha1').update(content).digest('hex');
  const head = JSON.stringify({ format: ENVELOPE_FORMAT, version: form.version, epoch, stamp, digest });
  const body = `${head.slice(0, -1)},${content.slice(1)}`;
  return { envelope: { format: ENVELOPE_FORMAT, version: form.version, epoch, stamp, digest, form, upstreams }, body };
}
