import type { RoutingDocument } from '../config/schema.js';
import type { FleetSample, GatewayFigures } from '../rollout/analysis/types.js';

/** Who changed the routing document, when and why. */
export interface ChangeMeta {
  /** Who made the change: an API token's name, `file` for a hand edit, `cli`, … */
  readonly actor: string;
  /** ISO 8601 time of the change. */
  readonly time: string;
  readonly reason: string;
}

/** One version of the routing document, as stored. */
export interface StoredVersion {
  /** Monotonically increasing, starting at 1. */
  readonly version: number;
  /** Validated and frozen. */
  readonly document: RoutingDocument;
  readonly meta: ChangeMeta;
  /**
   * The store's line of versions, for stores shared by a fleet (Redis): set when the store is
   * seeded, kept by every later write. A store that lost its data and was seeded again starts a
   * new epoch, and version numbers compare only within one (see ConfigSync). Absent: one line.
   */
  readonly epoch?: string;
}

export interface WriteRequest {
  /** The version the writer read; a different current version refuses the write (GG_VERSION_CONFLICT). */
  readonly expectedVersion: number;
  readonly actor: string;
  readonly reason: string;
  /**
   * When (Date.now() ms) the write must have been applied or refused; default: the store's
   * `deadlineMs` from now. A write reported as failed at its deadline is never applied later.
   */
  readonly deadline?: number;
  /**
   * Written under a lease (see Leases): the store refuses the write with GG_LEASE_LOST unless
   * `holder` still holds the lease `name` with fencing `token`, in the same atomic step as the
   * compare-and-set. Stores that serve one gateway (the file store) have no leases and ignore it.
   */
  readonly lease?: { readonly name: string; readonly holder: string; readonly token: number };
}

export interface ReadOptions {
  /** When (Date.now() ms) the read gives up with GG_STORE_UNAVAILABLE; default: the store's `deadlineMs` from now. */
  readonly deadline?: number;
}

/** Whether the store answers, as the gateway's readiness and `graygate_store_up` report it. */
export interface StoreHealth {
  /** The store answered lately (for a shared store: connected, and the last poll got an answer). */
  readonly up: boolean;
  /** It answered at least once since start: a store never reached (a mistyped address) is `false`. */
  readonly everUp: boolean;
}

/** Requests in flight to one upstream and connections open to its servers. */
export interface LoadFigures {
  readonly inFlightRequests: number;
  readonly openConnections: number;
}

/** What one gateway process (the primary, with --workers) last measured of its own load. */
export interface LoadReport extends LoadFigures {
  /** The routing version it served when it measured (null before its first snapshot). */
  readonly servedVersion: number | null;
  /** The store epoch of that version (see StoredVersion.epoch); null when unknown. */
  readonly servedEpoch: string | null;
  /** How long it had served that version when it measured, in ms. */
  readonly servedForMs: number;
  /** Per upstream name. */
  readonly upstreams: Readonly<Record<string, LoadFigures>>;
  /**
   * Per-service, per-version request counts and latency histograms, cumulative since the gateway
   * started (what the rollout analysis sums over the fleet). Absent from older gateways' reports.
   */
  readonly figures?: GatewayFigures;
  /** What serves its traffic when not graygate itself (`openresty`: nginx, whose served version this reports). */
  readonly dataPlane?: string;
}

/** One gateway's report as the store returns it: `at` is the store's clock when it was written. */
export interface FleetLoadEntry {
  readonly instanceId: string;
  readonly at: number;
  readonly report: LoadReport;
}

/**
 * Where the routing document and its history live. The store knows documents and versions, not
 * routing. Every store runs the shared contract suite in test/store/contract.ts.
 */
export interface DocumentStore {
  readonly kind: string;
  /** How long one admin operation (a read, then a compare-and-set write) may take in all, in ms. */
  readonly deadlineMs: number;
  /**
   * The current version. Throws `ConfigError` when what is stored does not validate (nothing is
   * recorded for it) and `GraygateError('GG_STORE_UNAVAILABLE')` when the store cannot be reached
   * by the deadline. A missing or empty document is an outage, never "no rules".
   */
  current(options?: ReadOptions): Promise<StoredVersion>;
  /**
   * Compare-and-set: stores `document` (already validated by the caller) as version
   * `expectedVersion + 1`, with history. Throws GG_VERSION_CONFLICT when `expectedVersion` is stale.
   */
  write(document: RoutingDocument, request: WriteRequest): Promise<StoredVersion>;
  /** Versions kept in history, newest first. */
  history(options?: { limit?: number }): Promise<StoredVersion[]>;
  /** One version from history; throws GG_VERSION_UNKNOWN when it is not kept. */
  version(version: number): Promise<StoredVersion>;
  /**
   * Calls `onChange` whenever the document may have changed (a notification, a poll, a
   * reconnect). Duplicates are harmless: the listener rereads `current()` and applies only a
   * newer version. Returns a function that stops watching.
   */
  watch(onChange: () => void): () => void;
  /** Whether the store answers (never throws, no I/O). */
  health(): StoreHealth;
  /** Releases connections, watchers and timers. */
  close(): Promise<void>;
}

/**
 * Plain keys outside the routing document (stores that hold them, e.g. Redis): tokens for
 * identity lookups, values the rules read such as the seed's `Grayscale_Range`.
 */
export interface KeyReader {
  /**
   * Reads one key, such as `TOKEN_<token>`, with a hard deadline and no queueing while
   * disconnected. Rejects GG_STORE_UNAVAILABLE on timeout or outage; `undefined` when absent.
   */
  readKey(key: string, deadlineMs: number): Promise<string | undefined>;
  /** The values of `keys` for compiling a snapshot; absent keys map to `undefined`. Rejects GG_STORE_UNAVAILABLE. */
  readKeys(keys: readonly string[]): Promise<ReadonlyMap<string, string | undefined>>;
  /**
   * Calls `onChange` when one of `keys` may have changed (a keyspace notification, a poll that
   * saw a new value, a reconnect). Returns a function that stops watching.
   */
  watchKeys(keys: readonly string[], onChange: () => void): () => void;
}

/** Every gateway's load report, for stores shared by a fleet (e.g. Redis). Never on the request path. */
export interface FleetReports {
  /** Records this gateway's report under `instanceId`, stamped with the store's clock. Rejects GG_STORE_UNAVAILABLE. */
  reportLoad(instanceId: string, report: LoadReport): Promise<void>;
  /** The reports written within the last `staleAfterMs` by the store's clock (older ones are deleted). Rejects GG_STORE_UNAVAILABLE. */
  readFleetLoad(staleAfterMs: number): Promise<FleetLoadEntry[]>;
  /** Deletes `instanceId`'s report (a gateway that stops). */
  removeLoad(instanceId: string): Promise<void>;
  /**
   * Every gateway's per-version figures at one moment of the store's clock: the fresh reports,
   * and the gateways whose report is older than `staleAfterMs` (named, so a sum can say whom it
   * left out). Reads only. Rejects GG_STORE_UNAVAILABLE.
   */
  readFleetSample(staleAfterMs: number): Promise<FleetSample>;
}

/**
 * Leases with fencing tokens, for stores shared by a fleet (Redis): at most one holder of a name
 * at a time, and a token that grows with every new holder, checked by writes made under it.
 */
export interface Leases {
  /**
   * Takes the lease `name` for `holder` when free, or extends it when `holder` holds it; for
   * `ttlMs`. Resolves the fencing token while held, undefined when another holds it. Rejects
   * GG_STORE_UNAVAILABLE.
   */
  hold(name: string, holder: string, ttlMs: number): Promise<number | undefined>;
  /** Gives the lease up when `holder` holds it with `token`. */
  release(name: string, holder: string, token: number): Promise<void>;
  /** Who holds `name` now, and with which token (undefined: nobody). */
  holder(name: string): Promise<{ holder: string; token: number } | undefined>;
  /** Stores a short-lived value beside the document (live figures of the lease holder), for `ttlMs`. */
  putLive(key: string, value: string, ttlMs: number): Promise<void>;
  /** A value stored by putLive, undefined once it expired. */
  getLive(key: string): Promise<string | undefined>;
}

/**
 * A store by job: the routing document (always), plain keys and fleet load reports where the
 * store holds them. Callers take the part they need (`keyReader`, `fleet`) instead of probing
 * for single methods.
 */
export interface Store extends DocumentStore {
  /** Plain keys, when the store holds them (Redis); undefined for the file store. */
  readonly keyReader: KeyReader | undefined;
  /** Load reports of the fleet, when the store is shared (Redis); undefined for the file store. */
  readonly fleet: FleetReports | undefined;
  /** Leases, when the store is shared (Redis); undefined for the file store, whose one gateway holds them all. */
  readonly leases?: Leases | undefined;
}
