import type { Identity } from '../config/schema.js';
import type { IdentityCompiler, RequestIdentity } from '../rules/request-identity.js';
import { buildAnonymousIdentity, type AnonymousIdentity } from './anonymous.js';
import { buildIdentityChain, type IdentityChain, type IdentityChainOptions } from './chain.js';

/** The chain, followed by the anonymous cookie when the chain found nobody. */
function withAnonymous(resolve: IdentityChain['resolve'], anonymous: AnonymousIdentity | undefined, mint: boolean): IdentityChain['resolve'] {
  if (anonymous === undefined) return resolve;
  return (facts) => {
    const pending = resolve(facts);
    if (pending === undefined) {
      anonymous.assign(facts, mint);
      return;
    }
    // Only a store lookup on a cache miss gets here; its continuation is the one allocation.
    return pending.then(() => anonymous.assign(facts, mint));
  };
}

/**
 * What the rules are handed to resolve callers: compiles a document's identity section (the
 * source chain, then the anonymous cookie) with `options.context` (store lookups, and the caches
 * that outlive snapshots). Throws `ConfigError` when a source cannot be created.
 */
export function identityCompiler(options: IdentityChainOptions = {}): IdentityCompiler {
  return (identity: Identity | undefined): RequestIdentity => {
    const anonymous = buildAnonymousIdentity(identity?.anonymousCookie);
    const chain = buildIdentityChain(identity?.sources ?? [], options);
    return Object.freeze({
      inputs: anonymous ? Object.freeze([...chain.inputs, ...anonymous.inputs]) : chain.inputs,
      resolve: chain.resolve,
      resolveOrMint: withAnonymous(chain.resolve, anonymous, true),
      resolveWithoutMinting: withAnonymous(chain.resolve, anonymous, false),
    });
  };
}
