import { Pool } from 'undici';
import type { Upstream } from '../../config/schema.js';
import type { RoutingSnapshot } from '../../rules/snapshot.js';
import type { ServerHealth } from '../balancer.js';
import { buildUpstreams, type RouteGeneration, type ServerEntry, type UpstreamCounter, type UpstreamRuntime } from '../route.js';
import type { UpstreamLoad } from '../runtime.js';

/** One server of an upstream on Node: the shared entry plus its keep-alive pool and socket address. */
export interface NodeServer extends ServerEntry {
  readonly hostname: string;
  readonly port: number;
  readonly isTls: boolean;
  readonly pool: Pool;
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
  readonly pool: Pool;
  readonly origin: string;
}

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

  constructor(private readonly onPoolClosed?: (origin: string) => void) {}

  get current(): Generation | undefined {
    return this.currentGeneration;
  }

  /** Builds the generation for `snapshot` (reusing pools) and makes it current. */
  install(snapshot: RoutingSnapshot): Generation {
    const keys = new Set<string>();
    const upstreams = buildUpstreams<NodeServer>(
      snapshot,
      this.health,
      this.counters,
      (url, config, health) => {
        const origin = url.origin;
        const key = poolKey(origin, config);
        keys.add(key);
        let record = this.pools.get(key);
        if (record === undefined) {
          record = { pool: createPool(origin, config), origin };
          this.pools.set(key, record);
        }
        const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
        const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
        return { origin, hostHeader: url.host, hostname, port, isTls: url.protocol === 'https:', pool: record.pool, health };
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
    const pools = new Map<string, Set<Pool>>();
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

function poolKey(origin: string, config: Upstream): string {
  return `${origin}|${config.pool.connections}|${config.pool.idleTimeoutMs}|${config.timeouts.connectMs}`;
}

function createPool(origin: string, config: Upstream): Pool {
  // undici needs a positive keep-alive; 0 in the config means "do not keep idle sockets".
  const idleMs = Math.max(1, config.pool.idleTimeoutMs);
  return new Pool(origin, {
    connections: config.pool.connections,
    pipelining: 1,
    keepAliveTimeout: idleMs,
    // A server's `Keep-Alive: timeout=` hint may shorten our idle time, never lengthen it.
    keepAliveMaxTimeout: idleMs,
    connect: { timeout: config.timeouts.connectMs > 0 ? config.timeouts.connectMs : undefined },
    headersTimeout: config.timeouts.responseHeadersMs,
    bodyTimeout: config.timeouts.idleMs,
    allowH2: false,
  });
}
