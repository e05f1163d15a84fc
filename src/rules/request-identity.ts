import type { Identity, RoutingDocument } from '../config/schema.js';
import type { RequestFacts } from './facts.js';
import type { RequestInput } from './strategy.js';

/**
 * What the rules need of identity, handed to them as a value: the identity part of the gateway
 * compiles `document.identity` (sources, the anonymous cookie) into this; rules only call it and
 * read its inputs. So rules compile and are tested without any identity source or store.
 */
export interface RequestIdentity {
  /** Every request input identity reads (sources, then the anonymous cookie), for `Vary`. */
  readonly inputs: readonly RequestInput[];
  /**
   * Fills `facts.userId`, `numericUserId` and `identitySource` from the sources only (no
   * anonymous id). Synchronous unless a source must wait (a store lookup on a cache miss);
   * never rejects.
   */
  readonly resolve: (facts: RequestFacts) => void | Promise<void>;
  /** `resolve`, then the anonymous cookie for a caller without an id, minting one when absent. */
  readonly resolveOrMint: (facts: RequestFacts) => void | Promise<void>;
  /** `resolve`, then a returning anonymous cookie; never mints (explain has no response to set it on). */
  readonly resolveWithoutMinting: (facts: RequestFacts) => void | Promise<void>;
}

/** Compiles a document's identity section; called once per compiled snapshot. Throws `ConfigError` for a source that cannot work. */
export type IdentityCompiler = (identity: Identity | undefined) => RequestIdentity;

/** A request without identity sources: the identity fields are cleared, nothing is read. */
function clearIdentity(facts: RequestFacts): void {
  facts.userId = undefined;
  facts.numericUserId = undefined;
  facts.identitySource = undefined;
}

const NO_IDENTITY: RequestIdentity = Object.freeze({
  inputs: Object.freeze([]),
  resolve: clearIdentity,
  resolveOrMint: clearIdentity,
  resolveWithoutMinting: clearIdentity,
});

/**
 * The identity of `document` compiled by `compiler`; without one, a document that configures no
 * identity gets "nobody". Throws when the document configures identity and no compiler was
 * given: routing it without its identity would silently send every caller to stable.
 */
export function requestIdentityOf(document: RoutingDocument, compiler: IdentityCompiler | undefined): RequestIdentity {
  if (compiler !== undefined) return compiler(document.identity);
  const identity = document.identity;
  if ((identity?.sources.length ?? 0) > 0 || identity?.anonymousCookie?.enabled === true) {
    throw new Error('compileRouting: the document configures identity; pass options.identity (identityCompiler() from identity/request-identity)');
  }
  return NO_IDENTITY;
}
