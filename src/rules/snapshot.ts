import type { RoutingDocument, Upstream } from '../config/schema.js';
import type { ServiceDescription } from './description.js';
import type { RequestFacts } from './facts.js';

/**
 * The compiled, frozen form of one routing document version. The data plane reads the current
 * snapshot once per request and keeps it to the end; a config change compiles a new snapshot and
 * replaces one reference. Nothing in a snapshot changes after compile, and no two snapshots
 * share mutable state.
 */
export interface RoutingSnapshot {
  /** The store version this snapshot was compiled from. */
  readonly version: number;
  /** The validated document it was compiled from (frozen). */
  readonly document: RoutingDocument;
  /** Upstreams by name, for the data plane to build (or reuse) its connection pools. */
  readonly upstreams: Readonly<Record<string, Upstream>>;
  /**
   * The store key values (e.g. `Grayscale_Range`) the rules were compiled with, by key: with the
   * document and version, all it takes to compile the same snapshot again in another process.
   */
  readonly storeValues?: ReadonlyMap<string, string | undefined>;
  /** The service that takes a request, or `undefined` (the gateway answers 404). No I/O. */
  matchService(host: string, path: string): CompiledService | undefined;
}

export type VersionName = 'stable' | 'candidate';

/** Where one request goes and why. Compiled once per rule and split bucket: deciding allocates nothing. */
export interface Decision {
  readonly service: string;
  /** `stable` or `candidate`; with A/B/n, `candidate` names which one. */
  readonly version: VersionName;
  /** Upstream name to forward to. */
  readonly upstream: string;
  /** Which candidate (its upstream name) when `version` is `candidate`, for logs and metrics; undefined on stable. */
  readonly candidate: string | undefined;
  /** What decided: a rule's name (`rule 2` when unnamed), `split`, `idle`, `full` or `no rule matched`. */
  readonly reason: string;
  /** True when the version depended on the caller (so caches must be told: Vary / private). */
  readonly dependsOnCaller: boolean;
  /**
   * `Vary` value the response must carry (release `cache: vary`): the request headers this decision
   * read, `*` when it read the client address; undefined when none needs naming.
   */
  readonly vary: string | undefined;
  /** True when the response must be `Cache-Control: private` (release `cache: private`, caller-dependent). */
  readonly cachePrivate: boolean;
}

export interface CompiledService {
  readonly name: string;
  /** Upstream name of the stable version. */
  readonly stable: string;
  /** Upstream name of the candidate version (the first, with A/B/n), when a release is configured. */
  readonly candidate: string | undefined;
  /** Upstream names of every candidate of the release, in config order (empty without a release). */
  readonly candidates: readonly string[];
  /** The decision used when the candidate cannot take a request (fail safe to stable). */
  readonly stableDecision: Decision;
  /** True when `decide` reads the caller's identity, so `resolveIdentity` must run first. */
  readonly needsIdentity: boolean;
  /**
   * Fills `facts.userId`, `numericUserId` and `identitySource`. Synchronous in the steady state;
   * returns a Promise only when a source must wait (a store lookup on a cache miss). Never
   * rejects: a failed lookup leaves the identity unknown.
   */
  resolveIdentity(facts: RequestFacts): void | Promise<void>;
  /** Pure and synchronous: the first matching rule decides. */
  decide(facts: RequestFacts): Decision;
  /** `Vary` covering every input any decision of this service reads, else undefined (each Decision has its own, narrower one). */
  readonly vary: string | undefined;
  /** What explain reads: the rules as compiled, the split, identity without minting. */
  readonly explain: ServiceDescription;
}
