import type { Upstream } from '../config/schema.js';
import type { FallbackReason, RequestObserver } from '../observe/request-observer.js';
import type { IdentitySample } from '../observe/identity-sample.js';
import type { RequestFacts } from '../rules/facts.js';
import type { CompiledService, Decision, RoutingSnapshot } from '../rules/snapshot.js';
import { isRetryableRequest, RoundRobin, ServerHealth, type UpstreamFailure } from './balancer.js';

/**
 * The proxy's decisions, written once for every runtime and for requests and upgrades alike:
 * match → identity (synchronous, or one wait) → decide (or stable when deciding fails) → choose
 * the upstream (stable when the candidate cannot take the request) → pick a server → after a
 * failure, one policy says whether to try the same server again, the next server, stable, or to
 * fail. The adapters in `node/` and `bun/` only move bytes and report what happened.
 */

/** One server of an upstream, as every runtime knows it; an adapter extends it (pools, sockets). */
export interface ServerEntry {
  /** `http://host:port` */
  readonly origin: string;
  /** `host:port` as the origin names it, for Host when `preserveHost` is off. */
  readonly hostHeader: string;
  readonly health: ServerHealth;
}

/**
 * What is in flight to one upstream name, shared by every snapshot that names it (like health per
 * origin), so a request or tunnel that outlives its snapshot is still counted. Plain integers: the
 * hot path adds and subtracts, `stats()` reads.
 */
export class UpstreamCounter {
  /** Requests (and upgrade handshakes and tunnels) to the upstream not yet closed. */
  inFlight = 0;
  /** Upgrade tunnels open to its servers (their own sockets, outside the pools). */
  tunnels = 0;
}

/** An upstream as the data plane uses it for one snapshot. */
export interface UpstreamRuntime<S extends ServerEntry = ServerEntry> {
  readonly name: string;
  readonly config: Upstream;
  readonly balancer: RoundRobin<S>;
  readonly counter: UpstreamCounter;
}

/** A snapshot with the upstreams it routes to; a request reads one and keeps it to the end. */
export interface RouteGeneration<S extends ServerEntry = ServerEntry> {
  readonly snapshot: RoutingSnapshot;
  readonly upstreams: ReadonlyMap<string, UpstreamRuntime<S>>;
}

/**
 * The upstream set of one snapshot. Health is kept per origin and the in-flight counter per name
 * across snapshots (both maps are the caller's, kept from one snapshot to the next); `makeServer`
 * adds what the runtime needs per server. With `forgetOthers`, origins this snapshot does not name
 * lose their health (a runtime that keeps older snapshots alive prunes on its own).
 */
export function buildUpstreams<S extends ServerEntry>(
  snapshot: RoutingSnapshot,
  health: Map<string, ServerHealth>,
  counters: Map<string, UpstreamCounter>,
  makeServer: (url: URL, config: Upstream, health: ServerHealth) => S,
  forgetOthers: boolean,
): Map<string, UpstreamRuntime<S>> {
  const upstreams = new Map<string, UpstreamRuntime<S>>();
  const origins = new Set<string>();
  for (const [name, config] of Object.entries(snapshot.upstreams)) {
    const servers = config.servers.map((server) => {
      const url = new URL(server);
      origins.add(url.origin);
      let known = health.get(url.origin);
      if (known === undefined) health.set(url.origin, (known = new ServerHealth()));
      return makeServer(url, config, known);
    });
    let counter = counters.get(name);
    if (counter === undefined) counters.set(name, (counter = new UpstreamCounter()));
    upstreams.set(name, { name, config, balancer: new RoundRobin(servers, config.health), counter });
  }
  if (forgetOthers) for (const origin of health.keys()) if (!origins.has(origin)) health.delete(origin);
  return upstreams;
}

/** What routing needs from the data plane that runs it. */
export interface RouteHost {
  /** Metrics and access log. */
  readonly observer: RequestObserver;
  /** The recent-identity sample, when this process keeps one. */
  readonly identitySample: IdentitySample | undefined;
  /** A rate-limited warning (one line per key and interval). */
  fault(key: string, fields: object, message: string): void;
}

function isPromise(value: unknown): value is Promise<void> {
  return value !== undefined && typeof (value as Promise<void>).then === 'function';
}

/**
 * Resolves the caller's identity when the service's rules read it. Undefined when it is known at
 * once (the steady state: no promise, no tick); otherwise the one wait (a store lookup on a cache
 * miss), which never rejects.
 */
export function identify(service: CompiledService, facts: RequestFacts): Promise<void> | undefined {
  if (!service.needsIdentity) return undefined;
  const pending = service.resolveIdentity(facts);
  return isPromise(pending) ? pending : undefined;
}

/**
 * The rules' decision; stable, logged, when deciding throws (it is pure and should not). A caller
 * with an identity is offered to the recent-identity sample here, where every runtime's requests
 * and upgrades pass once their identity is known.
 */
export function decideOrStable(host: Pick<RouteHost, 'identitySample' | 'fault'>, service: CompiledService, facts: RequestFacts): Decision {
  let decision: Decision;
  try {
    decision = service.decide(facts);
  } catch (error) {
    host.fault('decide', { service: service.name, err: error }, 'deciding failed; routing to stable');
    return service.stableDecision;
  }
  // Apart from deciding: the sample only feeds dry runs, so a fault in it must neither change the
  // request's version nor be reported as a failure to decide.
  if (host.identitySample !== undefined && facts.userId !== undefined) {
    try {
      host.identitySample.offer(service, facts);
    } catch (error) {
      host.fault('identity-sample', { service: service.name, err: error }, 'recording the caller in the identity sample failed; the request keeps its decision');
    }
  }
  return decision;
}

/**
 * Whether a request carries a body, from its framing headers alone (RFC 9112 §6.3: a body is
 * there when Transfer-Encoding or a non-zero Content-Length says so), whatever its method: a GET
 * with a body is forwarded with it.
 */
export function hasRequestBody(transferEncoding: string | undefined | null, contentLength: string | undefined | null): boolean {
  return (transferEncoding !== undefined && transferEncoding !== null) || (contentLength !== undefined && contentLength !== null && contentLength !== '0');
}

/** What to do after one failed attempt. */
export type NextStep = 'retry-server' | 'next-server' | 'stable' | 'fail';

/**
 * The one retry policy, from the failure's kind and what was already sent:
 * - once the response has started reaching the client, or the request cannot be sent again (a
 *   method that is not idempotent, a streamed body), nothing is retried;
 * - a connect failure sent nothing: the next server of the upstream, then stable (for a
 *   candidate), then fail;
 * - a reset before any response byte is what a pooled connection the server closed just as it
 *   was reused looks like: the same server once more, once;
 * - anything else (timeouts, invalid responses) fails: the request may have had its effect.
 */
export function nextStep(failure: UpstreamFailure, responseStarted: boolean, replayable: boolean, resetRetried: boolean, serversLeft: boolean, canMoveToStable: boolean): NextStep {
  if (responseStarted || !replayable) return 'fail';
  if (failure.isConnectFailure) return serversLeft ? 'next-server' : canMoveToStable ? 'stable' : 'fail';
  if (failure.code === 'GG_UPSTREAM_RESET' && !resetRetried) return 'retry-server';
  return 'fail';
}

/**
 * The attempts of one request or upgrade at its upstream: which upstream and server, what was
 * tried, and the bookkeeping every runtime shares (in-flight counts, passive health, error,
 * ejection and fallback metrics, fault logs). Node's Exchange and Bun's request record extend it,
 * so a request allocates nothing more for it; an upgrade makes one.
 */
export class UpstreamAttempts<S extends ServerEntry = ServerEntry> {
  decision: Decision | undefined = undefined;
  upstream: UpstreamRuntime<S> | undefined = undefined;
  serverIndex = -1;
  private service: CompiledService | undefined = undefined;
  private routeGeneration: RouteGeneration<S> | undefined = undefined;
  private tried: Set<number> | undefined = undefined;
  private resetRetried = false;
  /** The next pick is the same server again (a reset on a reused connection). */
  private repeat = false;
  private attemptMethod = 'GET';
  private attemptHasBody = false;

  get upstreamName(): string | undefined {
    return this.upstream?.name;
  }

  get server(): S | undefined {
    return this.serverIndex < 0 ? undefined : this.upstream?.balancer.servers[this.serverIndex];
  }

  get serverOrigin(): string | undefined {
    return this.server?.origin;
  }

  /**
   * Chooses the upstream for `decision` and counts the request in flight to it: the decided one,
   * or stable when the decision is a candidate that cannot take the request (fail safe; counted
   * as a fallback). False when there is no upstream to go to (the caller answers
   * GG_UPSTREAM_UNAVAILABLE).
   */
  choose(host: RouteHost, generation: RouteGeneration<S>, service: CompiledService, decision: Decision, method: string, hasBody: boolean, now: number): boolean {
    this.routeGeneration = generation;
    this.service = service;
    this.decision = decision;
    // Kept as given and judged only after a failure: the hot path does no more than store them.
    this.attemptMethod = method;
    this.attemptHasBody = hasBody;
    let upstream = generation.upstreams.get(decision.upstream);
    if (decision.version === 'candidate') {
      let reason: FallbackReason | undefined;
      if (upstream === undefined || upstream.balancer.servers.length === 0) reason = 'no_server';
      else if (!upstream.balancer.hasAvailable(now)) reason = 'unhealthy';
      if (reason !== undefined) {
        upstream = generation.upstreams.get(service.stableDecision.upstream);
        if (upstream !== undefined) host.observer.fellBack(decision, upstream.name, reason);
      }
    }
    if (upstream === undefined) return false;
    this.moveTo(upstream);
    return true;
  }

  /** The next server to try (it becomes `server`); undefined when every server was tried. */
  pick(now: number): S | undefined {
    const upstream = this.upstream!;
    if (this.repeat && this.serverIndex >= 0) {
      this.repeat = false;
      return upstream.balancer.servers[this.serverIndex];
    }
    const index = upstream.balancer.pick(now, this.tried);
    if (index < 0) return undefined;
    this.serverIndex = index;
    return upstream.balancer.servers[index];
  }

  /** The server answered: its health is good again. */
  answered(): void {
    this.server?.health.recordSuccess();
  }

  /**
   * One attempt failed: counts it (upstream errors; a connect failure against the server's
   * health, and its ejection once), logs it, and says what to do next. On `next-server`,
   * `retry-server` and `stable` the caller picks again; on `fail` it answers `failure.code`.
   * `requestNotSent`: the client says no byte of the request (body included) left, so even a
   * request with a body may go to another server or to stable after a connect failure.
   */
  failed(host: RouteHost, failure: UpstreamFailure, responseStarted: boolean, now: number, requestNotSent = false): NextStep {
    const upstream = this.upstream!;
    const server = this.server;
    host.observer.upstreamFailed(upstream.name, failure.code, failure.isConnectFailure);
    if (server !== undefined && failure.isConnectFailure && !responseStarted) {
      if (server.health.recordConnectFailure(now, upstream.balancer.policy)) host.observer.serverEjected(upstream.name, server.origin);
      (this.tried ??= new Set()).add(this.serverIndex);
    }
    const stableName = this.service!.stableDecision.upstream;
    const stable = upstream.name === stableName ? undefined : this.routeGeneration!.upstreams.get(stableName);
    const serversLeft = (this.tried?.size ?? 0) < upstream.balancer.servers.length;
    const replayable = (requestNotSent && failure.isConnectFailure) || isRetryableRequest(this.attemptMethod, this.attemptHasBody);
    const step = nextStep(failure, responseStarted, replayable, this.resetRetried, serversLeft, stable !== undefined);
    switch (step) {
      case 'retry-server':
        this.resetRetried = true;
        this.repeat = true;
        break;
      case 'next-server':
        host.fault(`upstream-connect:${upstream.name}`, { upstream: upstream.name, server: server?.origin, code: failure.code }, `${failure.message}; trying another server`);
        break;
      case 'stable':
        host.fault(`upstream-connect:${upstream.name}`, { upstream: upstream.name, server: server?.origin, code: failure.code }, `${failure.message}; no server of "${upstream.name}" left, trying stable`);
        if (this.decision!.version === 'candidate') host.observer.fellBack(this.decision!, stable!.name, 'connect_failure');
        this.moveTo(stable!);
        this.tried = undefined;
        break;
      case 'fail':
        // Keyed per upstream as well: one upstream's storm of failures must not hide another's.
        host.fault(`upstream:${upstream.name}:${failure.code}`, { upstream: upstream.name, server: server?.origin, code: failure.code }, failure.message);
        break;
    }
    return step;
  }

  /** Counts this request in flight to `upstream` (and no longer to the one it was going to). */
  private moveTo(upstream: UpstreamRuntime<S>): void {
    if (this.upstream !== undefined) this.upstream.counter.inFlight--;
    upstream.counter.inFlight++;
    this.upstream = upstream;
    this.serverIndex = -1;
  }

  /** The request is over: it is no longer in flight to its upstream. Call once. */
  released(): void {
    if (this.upstream !== undefined) this.upstream.counter.inFlight--;
  }
}
