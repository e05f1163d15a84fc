import type { z } from 'zod';
import { setTimeout as delay } from 'node:timers/promises';
import { parseRoutingDocument } from '../../config/load.js';
import type { RoutingDocument } from '../../config/schema.js';
import type { DataPlaneStats, WorkerServing } from '../../dataplane/runtime.js';
import { GraygateError, isGraygateError } from '../../errors.js';
import type { ConfigSyncStats } from '../../gateway/config-sync.js';
import type { ImpactCounts, ProposedRouting } from '../../observe/impact.js';
import type { Logger } from '../../observe/log.js';
import type { MetricsSource } from '../../observe/metrics.js';
import type { LiveRollout } from '../../rollout/driver.js';
import type { RoutingSnapshot } from '../../rules/snapshot.js';
import type { LoadReport, Store, StoredVersion } from '../../store/store.js';

/**
 * What the admin API needs of a running gateway. Nothing runtime-specific: the data plane is seen
 * only through its `stats()`, so the API runs unchanged whichever data plane serves requests.
 */
export interface AdminContext {
  readonly store: Store;
  /** The snapshot this gateway serves, once it serves one. */
  snapshot(): RoutingSnapshot | undefined;
  dataPlaneStats(): DataPlaneStats;
  /** This gateway process's name in the fleet's load reports. */
  readonly instanceId: string;
  /** This gateway's load now, as it publishes it to a shared store (see gateway/load-reporter.ts). */
  localLoad(): LoadReport;
  syncStats(): ConfigSyncStats;
  /** The gateway's metrics (every worker's, summed), for /metrics and /v1/metrics. */
  readonly metrics: MetricsSource;
  /**
   * Serves a version this gateway just wrote (the compare-and-set's answer) in every process of
   * the gateway, and resolves once they do or a bound passed; other gateways hear of it by pub/sub
   * or poll.
   */
  applyWritten(written: StoredVersion): Promise<ServedAck>;
  /**
   * The live evidence of a service's running rollout, from the gateway that drives it (this one,
   * or another, through the store); undefined when nobody reports one.
   */
  rolloutLive?(service: string): Promise<LiveRollout | undefined>;
  /**
   * The impact of going from `from` (default: the routing served) to `to`, counted over this
   * gateway's identity sample (every worker's, summed): counts only.
   */
  impact?(request: { from?: ProposedRouting; to: ProposedRouting }): Promise<ImpactCounts>;
  /** With `--workers`: each worker's served version and whether it is behind (for /readyz). */
  workers?(): readonly WorkerServing[];
  readonly logger: Logger;
}

/** One request as a route handler sees it: validated body and query, the caller's name. */
export interface AdminRequest<Body = unknown, Query = unknown> {
  readonly params: Readonly<Record<string, string>>;
  readonly query: Query;
  readonly body: Body;
  /** The token's name (`anonymous` when the API takes requests without a token). */
  readonly actor: string;
  /** The version named by If-Match, when given. */
  readonly ifMatch: number | undefined;
}

export interface AdminReply {
  readonly status?: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body: unknown;
}

/** A route: its shapes (for validation and the OpenAPI document) and its handler. */
export interface Route<B extends z.ZodType = z.ZodType, Q extends z.ZodType = z.ZodType> {
  readonly method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  /** Fastify path, e.g. `/v1/services/:name`. */
  readonly url: string;
  readonly summary: string;
  readonly tag: string;
  /** False for health, readiness and the OpenAPI document; true (the default) needs a token when tokens are configured. */
  readonly auth?: boolean;
  readonly body?: B;
  readonly query?: Q;
  readonly response: z.ZodType;
  /** Media type of the 200 answer; `application/json` unless said (the Prometheus text exposition is not JSON). */
  readonly responseType?: string;
  /** Status codes the route answers besides 200, for the OpenAPI document. */
  readonly errors?: readonly number[];
  handler(request: AdminRequest<z.output<B>, z.output<Q>>, context: AdminContext): Promise<AdminReply>;
}

/** Keeps a route's body and query types tied to its handler. */
export function defineRoute<B extends z.ZodType, Q extends z.ZodType>(route: Route<B, Q>): Route {
  return route as unknown as Route;
}

/** The version the writer read: the body's `version` or If-Match (they must agree). */
export function preconditionOf(request: AdminRequest<{ version?: number | undefined }>): number | undefined {
  const fromBody = request.body.version;
  if (fromBody !== undefined && request.ifMatch !== undefined && fromBody !== request.ifMatch) {
    throw new GraygateError('GG_REQUEST_INVALID', `version: the body names version ${fromBody} but If-Match names ${request.ifMatch}; send one`);
  }
  return fromBody ?? request.ifMatch;
}

/** The current version, or undefined when the store holds none yet (GG_STORE_EMPTY). */
export async function currentOrEmpty(store: Store, deadline?: number): Promise<StoredVersion | undefined> {
  try {
    return await store.current(deadline === undefined ? {} : { deadline });
  } catch (error) {
    if (isGraygateError(error) && error.code === 'GG_STORE_EMPTY') return undefined;
    throw error;
  }
}

/** Whether the gateway that took a write serves it everywhere (every worker) when it answers. */
export interface ServedAck {
  /** True once every process of this gateway serves the written version (or a newer one). */
  readonly everywhere: boolean;
  /** The version this gateway serves as it answers. */
  readonly version: number | null;
  /** Workers that did not confirm it in time, with the version they do serve. */
  readonly behind: readonly { readonly pid: number; readonly version: number | null }[];
  /** When not everywhere: what is and is not served, in a sentence. */
  readonly message?: string;
}

export interface WriteOutcome {
  readonly changed: boolean;
  readonly previousVersion: number;
  readonly version: number;
  readonly actor: string;
  readonly reason: string;
  /** For a write that changed something: whether this gateway serves it everywhere yet. */
  readonly served?: ServedAck;
}

/**
 * The one write path: reads the current version, refuses a stale precondition (409), lets
 * `mutate` build the next document, validates it with parseRoutingDocument (400 naming every
 * field) before the store sees it, and writes it as one compare-and-set version with actor and
 * reason. A concurrent writer that got in between the read and the write makes this one 409 when
 * the caller named the version it read (it decided on that version); a caller that named none
 * asked for its change on whatever is current, so the change is made again on the newer version
 * (two operators changing two services at the same moment both land), within the same deadline.
 * `mutate` returning `changed: false` writes nothing. The read and the write share one deadline
 * (the store's `deadlineMs`), so a store outage answers within it; a write the store did not
 * confirm by then can no longer be applied later (see the store's write). It answers once this
 * gateway serves what it wrote in every process, or says in `served` that some do not yet (the
 * write stands either way).
 */
export async function commitChange(
  context: AdminContext,
  write: { actor: string; reason: string; expectedVersion: number | undefined; allowEmpty?: boolean },
  mutate: (current: RoutingDocument) => { document: RoutingDocument; changed?: boolean },
): Promise<WriteOutcome> {
  const deadline = Date.now() + context.store.deadlineMs;
  for (let attempt = 1; ; attempt++) {
    // Only a whole-document write may seed an empty store; the others need a document to change.
    const current = write.allowEmpty ? await currentOrEmpty(context.store, deadline) : await context.store.current({ deadline });
    const currentVersion = current?.version ?? 0;
    if (write.expectedVersion !== undefined && write.expectedVersion !== currentVersion) {
      throw new GraygateError(
        'GG_VERSION_CONFLICT',
        `the write named version ${write.expectedVersion}, but the current version is ${currentVersion}; read it again and retry`,
      );
    }
    const next = mutate(current?.document ?? { upstreams: {}, services: [], identity: { sources: [] } });
    if (next.changed === false) {
      return { changed: false, previousVersion: currentVersion, version: currentVersion, actor: write.actor, reason: write.reason };
    }
    const validated = parseRoutingDocument(next.document);
    let written: StoredVersion;
    try {
      written = await context.store.write(validated, { expectedVersion: currentVersion, actor: write.actor, reason: write.reason, deadline });
    } catch (error) {
      const again = write.expectedVersion === undefined && attempt < WRITE_ATTEMPTS && Date.now() < deadline;
      if (again && isGraygateError(error) && error.code === 'GG_VERSION_CONFLICT') {
        // Another writer won this version: a short random pause keeps two retrying writers from
        // meeting again in lockstep.
        await delay(Math.random() * 5 * attempt);
        continue;
      }
      throw error;
    }
    return await announceWritten(context, write, currentVersion, written);
  }
}

/** How many times a change without a precondition is made again after losing to another writer. */
const WRITE_ATTEMPTS = 10;

/** Logs a write and answers once this gateway serves it (or says which processes do not yet). */
async function announceWritten(context: AdminContext, write: { actor: string; reason: string }, currentVersion: number, written: StoredVersion): Promise<WriteOutcome> {
  context.logger.info(
    { event: 'admin-write', actor: write.actor, reason: write.reason, previousVersion: currentVersion, version: written.version },
    `routing version ${written.version} written by ${write.actor} (was ${currentVersion}): ${write.reason}`,
  );
  // Read your writes: the answer waits until this gateway serves the version it wrote (from the
  // compare-and-set's answer, not a second read of a store that may have stopped meanwhile).
  const served = await context.applyWritten(written);
  if (!served.everywhere) context.logger.warn({ event: 'write-not-served-everywhere', version: written.version, behind: served.behind }, served.message ?? `version ${written.version} is not yet served everywhere`);
  return { changed: true, previousVersion: currentVersion, version: written.version, actor: write.actor, reason: write.reason, served };
}

/** The current document, or GG_STORE_EMPTY. */
export async function readCurrent(context: AdminContext): Promise<StoredVersion> {
  return context.store.current();
}

/** A 404 for a named thing that does not exist, listing the known ones. */
export function notFound(kind: string, name: string, known: readonly string[]): GraygateError {
  return new GraygateError('GG_NOT_FOUND', `${kind} "${name}" is not defined; known: ${known.length ? known.join(', ') : '(none)'}`);
}
