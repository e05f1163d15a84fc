import type { Logger } from 'pino';
import { buildConnector, Pool, type Dispatcher } from 'undici';
import type { Upstream } from '../../config/schema.js';
import type { RoutingSnapshot } from '../../rules/snapshot.js';
import type { ServerHealth } from '../balancer.js';
import { buildUpstreams, type RouteGeneration, type ServerEntry, type UpstreamCounter, type UpstreamRuntime } from '../route.js';
import type { UpstreamLoad } from '../runtime.js';
import { loadUpstreamTls, UpstreamTlsError, type UpstreamTlsMaterial } from '../upstream-tls.js';
import { H2Origin } from './h2-origin.js';

/** What an Exchange dispatches to: an undici Pool (HTTP/1.1) or an H2Origin (HTTP/2). */
export interface UpstreamPool {
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean;
  close(): Promise<void>;
  destroy(): Promise<void>;
  readonly stats: { readonly connected: number };
}

/** One server of an upstream on Node: the shared entry plus its connection pool and socket address. */
export interface NodeServer extends ServerEntry {
  readonly hostname: string;
  readonly port: number;
  readonly isTls: boolean;
  readonly pool: UpstreamPool;
  /** For https:// servers: how they are verified and the client certificate (tunnels use it too). */
  readonly tls: UpstreamTlsMaterial | undefined;
}

export type NodeUpstream = UpstreamRuntime<NodeServer>;

/**
 * A snapshot together with the upstream pools it routes to. A request takes the current
 * generation once and keeps it to the end (counted in `inFlight`), so a pool is closed only
 * when no request of any generation that names it can still dispatch to it.
 */
export class Generation implements RouteGeneration<NodeServer> {
  inFlight = 0;
  retired = false;

  constructor(
    readonly snapshot: RoutingSnapshot,
    readonly upstreams: ReadonlyMap<string, NodeUpstream>,
    readonly poolKeys: ReadonlySet<string>,
  ) {}
}

interface PoolRecord {
  readonly pool: UpstreamPool;
  readonly origin: string;
}

/** An upstream's TLS files as last read: the material, or why it cannot be used. */
type TlsLoad = { readonly material: UpstreamTlsMaterial } | { readonly error: UpstreamTlsError };

/**
 * Owns every undici Pool. Pools are keyed by origin and pool options, so a new snapshot with the
 * same servers reuses them and their keep-alive connections survive a rule change; pools no
 * snapshot in use names any more are closed gracefully (in-flight requests finish first).
 */
export class PoolRegistry {
  private readonly pools = new Map<string, PoolRecord>();
  /** Health is per origin, not per pool: a change of pool options keeps what we learnt. */
  private readonly health = new Map<string, ServerHealth>();
  private readonly live = new Set<Generation>();
  private readonly counters = new Map<string, UpstreamCounter>();
  private currentGeneration: Generation | undefined;
  private closed = false;

  constructor(
    private readonly logger?: Logger,
    private readonly onPoolClosed?: (origin: string) => void,
  ) {}

  get current(): Generation | undefined {
    return this.currentGeneration;
  }

  /** Builds the generation for `snapshot` (reusing pools) and makes it current. */
  install(snapshot: RoutingSnapshot): Generation {
    const keys = new Set<string>();
    // Read once per upstream and snapshot: a routing change picks up renewed certificate files.
    const tlsByConfig = new Map<Upstream, TlsLoad>();
    const upstreams = buildUpstreams<NodeServer>(
      snapshot,
      this.health,
      this.counters,
      (url, config, health) => {
        const origin = url.origin;
        const isTls = url.protocol === 'https:';
        let tls: TlsLoad | undefined;
        if (isTls) {
          tls = tlsByConfig.get(config);
          if (tls === undefined) tlsByConfig.set(config, (tls = this.loadTls(snapshot, config)));
        }
        const key = poolKey(origin, config, tls);
        keys.add(key);
        let record = this.pools.get(key);
        if (record === undefined) {
          record = { pool: createPool(origin, config, tls), origin };
          this.pools.set(key, record);
        }
        const port = url.port === '' ? (isTls ? 443 : 80) : Number(url.port);
        const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
        const material = tls !== undefined && 'material' in tls ? tls.material : undefined;
        return { origin, hostHeader: url.host, hostname, port, isTls, pool: record.pool, tls: material, health };
      },
      // Older generations may still be in use: sweep() forgets health once none names an origin.
      false,
    );
    const generation = new Generation(snapshot, upstreams, keys);
    const previous = this.currentGeneration;
    this.currentGeneration = generation;
    this.live.add(generation);
    if (previous !== undefined) {
      previous.retired = true;
      if (previous.inFlight === 0) this.live.delete(previous);
    }
    this.sweep();
    return generation;
  }

  /**
   * Reads the TLS files of the upstream `config` is (its name found in the snapshot, for the
   * log). A file that cannot be used is logged with the field and path; that upstream's https://
   * servers then fail every request as a TLS failure (so a candidate falls back to stable)
   * until a routing change finds usable files.
   */
  private loadTls(snapshot: RoutingSnapshot, config: Upstream): TlsLoad {
    const name = Object.keys(snapshot.upstreams).find((candidate) => snapshot.upstreams[candidate] === config) ?? '?';
    try {
      const material = loadUpstreamTls(config.tls, `upstreams.${name}.tls`);
      if (!material.rejectUnauthorized) {
        this.logger?.warn({ upstream: name, event: 'upstream-tls-unverified' }, `upstream "${name}": tls.verify is false, so its servers' certificates are not checked (encrypted, not authenticated)`);
      }
      return { material };
    } catch (error) {
      if (!(error instanceof UpstreamTlsError)) throw error;
      this.logger?.error({ upstream: name, event: 'upstream-tls-files', err: error.message }, `upstream "${name}" cannot use its TLS files: ${error.message}; its https:// servers fail until they are fixed`);
      return { error };
    }
  }

  /** Takes the current generation for one request; pair with `release`. */
  acquire(): Generation | undefined {
    const generation = this.currentGeneration;
    if (generation !== undefined) generation.inFlight++;
    return generation;
  }

  release(generation: Generation): void {
    generation.inFlight--;
    if (generation.retired && generation.inFlight === 0) {
      this.live.delete(generation);
      this.sweep();
    }
  }

  /**
   * Per upstream name: requests in flight (tunnels included) and connections open to its servers
   * (the pools' connected sockets plus open tunnels). Names of every live generation, and any
   * other name something is still in flight to. Allocates; called by `stats()`, never per request.
   */
  loads(): Record<string, UpstreamLoad> {
    const pools = new Map<string, Set<UpstreamPool>>();
    for (const generation of this.live) {
      for (const [name, upstream] of generation.upstreams) {
        let set = pools.get(name);
        if (set === undefined) pools.set(name, (set = new Set()));
        for (const server of upstream.balancer.servers) set.add(server.pool);
      }
    }
    const out: Record<string, UpstreamLoad> = {};
    for (const [name, counter] of this.counters) {
      const named = pools.get(name);
      if (named === undefined && counter.inFlight === 0 && counter.tunnels === 0) {
        // No live generation names it and nothing is left in flight: forget it.
        this.counters.delete(name);
        continue;
      }
      let connected = counter.tunnels;
      if (named !== undefined) for (const pool of named) connected += pool.stats.connected;
      out[name] = { inFlightRequests: counter.inFlight, openConnections: connected };
    }
    return out;
  }

  /** Number of pools open now (for tests and stats). */
  get poolCount(): number {
    return this.pools.size;
  }

  /** Closes pools that no live generation names. `Pool.close` lets queued requests finish. */
  private sweep(): void {
    if (this.closed) return;
    const used = new Set<string>();
    const origins = new Set<string>();
    for (const generation of this.live) for (const key of generation.poolKeys) used.add(key);
    for (const [key, record] of this.pools) {
      if (used.has(key)) {
        origins.add(record.origin);
        continue;
      }
      this.pools.delete(key);
      record.pool.close().then(
        () => this.onPoolClosed?.(record.origin),
        () => undefined,
      );
    }
    for (const origin of this.health.keys()) if (!origins.has(origin)) this.health.delete(origin);
  }

  /** Closes every pool: gracefully within `graceMs`, then by force. */
  async close(graceMs: number): Promise<void> {
    this.closed = true;
    const pools = [...this.pools.values()].map((record) => record.pool);
    this.pools.clear();
    let timer: NodeJS.Timeout | undefined;
    const cap = new Promise<'cap'>((resolve) => {
      timer = setTimeout(() => resolve('cap'), Math.max(0, graceMs));
    });
    const graceful = Promise.allSettled(pools.map((pool) => pool.close())).then(() => 'done' as const);
    const outcome = await Promise.race([graceful, cap]);
    clearTimeout(timer);
    if (outcome === 'cap') await Promise.allSettled(pools.map((pool) => pool.destroy()));
  }
}

function poolKey(origin: string, config: Upstream, tls: TlsLoad | undefined): string {
  const tlsPart = tls === undefined ? '' : 'material' in tls ? tls.material.digest : `broken:${tls.error.message}`;
  return `${origin}|${config.protocol}|${config.pool.connections}|${config.pool.idleTimeoutMs}|${config.timeouts.connectMs}|${tlsPart}`;
}

function createPool(origin: string, config: Upstream, tls: TlsLoad | undefined): UpstreamPool {
  // undici needs a positive keep-alive; 0 in the config means "do not keep idle sockets".
  const idleMs = Math.max(1, config.pool.idleTimeoutMs);
  const connectMs = config.timeouts.connectMs > 0 ? config.timeouts.connectMs : undefined;
  if (tls !== undefined && 'error' in tls) {
    // Every connection fails with the file problem, through the path any failed connect takes.
    const error = tls.error;
    return new Pool(origin, { connections: 1, connect: (_options, callback) => callback(error, null) });
  }
  const material = tls?.material;
  if (config.protocol === 'h2' || config.protocol === 'h2c') {
    return new H2Origin(origin, { connectMs: connectMs ?? 0, idleMs: config.pool.idleTimeoutMs, tls: material });
  }
  return new Pool(origin, {
    connections: config.pool.connections,
    pipelining: 1,
    keepAliveTimeout: idleMs,
    // A server's `Keep-Alive: timeout=` hint may shorten our idle time, never lengthen it.
    keepAliveMaxTimeout: idleMs,
    // Verified by default (Node's system CAs); the upstream's tls section may name its own CA,
    // the name to expect (also sent as SNI) and a client certificate.
    connect: keepTlsAlerts(
      buildConnector({
        timeout: connectMs,
        ...(material === undefined
          ? {}
          : { ca: material.ca, cert: material.cert, key: material.key, servername: material.servername, rejectUnauthorized: material.rejectUnauthorized }),
      }),
    ),
    headersTimeout: config.timeouts.responseHeadersMs,
    bodyTimeout: config.timeouts.idleMs,
    allowH2: false,
  });
}

/**
 * In TLS 1.3 a server judges the client certificate after the client's handshake is done, so
 * its refusal (an alert: certificate required, unknown CA…) arrives on a connection undici
 * already uses; undici then reports only "other side closed". This keeps the alert: when the
 * connection ends after one, it is destroyed with the alert as its error, which undici passes on
 * (classified GG_UPSTREAM_TLS). Listeners per connection, not per request.
 */
function keepTlsAlerts(connect: buildConnector.connector): buildConnector.connector {
  return (options, callback) =>
    connect(options, (error, socket) => {
      if (error === null && socket && options.protocol === 'https:') {
        let alert: Error | undefined;
        socket.on('error', (socketError: Error & { code?: string }) => {
          if (alert === undefined && typeof socketError.code === 'string' && socketError.code.startsWith('ERR_SSL_')) alert = socketError;
        });
        // Added before undici's own 'end' listener, so it runs first.
        socket.on('end', () => {
          if (alert !== undefined && !socket.destroyed) socket.destroy(alert);
        });
      }
      (callback as (error: Error | null, socket: unknown) => void)(error, socket);
    });
}
