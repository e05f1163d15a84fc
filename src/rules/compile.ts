import type { RoutingDocument } from '../config/schema.js';
import { deepFreeze } from '../config/freeze.js';
import { normalizePathPrefix } from '../config/semantic.js';
import { ConfigError } from '../errors.js';
import type { CompiledRule } from './description.js';
import { serviceMatcher, type ServiceRoute } from './host-path.js';
import { requestIdentityOf, type IdentityCompiler } from './request-identity.js';
import { compileService } from './service.js';
import { storeKeysOf } from './conditions.js';
import type { CompiledService, RoutingSnapshot } from './snapshot.js';

/**
 * Compiling a routing document into a snapshot. The parts live in files by concern: condition
 * trees (conditions.ts), Vary and cache headers (cache-headers.ts), the A/B/n split (split.ts),
 * one service's decide (service.ts), host and path matching (host-path.ts), and what explain
 * reads (description.ts). Identity is handed in as a value (request-identity.ts).
 */

export { storeKeysOf, conditionKey } from './conditions.js';
export { varyFor } from './cache-headers.js';
export { SPLIT_SALT, splitRanges } from './split.js';
export { prefixMatches } from './host-path.js';
export { releaseSeedOf } from './service.js';
export type { CompiledRule, ServiceDescription } from './description.js';
export type { IdentityCompiler, RequestIdentity } from './request-identity.js';

/** What compiling may use besides the document. Compiling itself does no I/O. */
export interface CompileOptions {
  /** Store values fetched for this snapshot (e.g. the seed's `Grayscale_Range`); none by default. */
  storeValue?(key: string): string | undefined;
  /**
   * Compiles the document's identity section (identity's `identityCompiler`, which carries the
   * long-lived caches and the store lookups). Needed when the document configures identity.
   */
  identity?: IdentityCompiler;
}

/**
 * Compiles a validated routing document into a frozen snapshot (matching precedence in
 * host-path.ts). Throws `ConfigError` when a strategy or an identity source refuses its config
 * (paths name the rule or source).
 */
export function compileRouting(document: RoutingDocument, version: number, options: CompileOptions = {}): RoutingSnapshot {
  deepFreeze(document);
  const storeValue = options.storeValue ? (key: string) => options.storeValue!(key) : () => undefined;
  const identity = requestIdentityOf(document, options.identity);

  const issues: string[] = [];
  const routes: ServiceRoute[] = [];
  document.services.forEach((service, index) => {
    let compiled: CompiledService;
    try {
      compiled = compileService(service, index, identity, storeValue);
    } catch (error) {
      if (error instanceof ConfigError) {
        issues.push(...error.issues);
        return;
      }
      throw error;
    }
    routes.push({ host: service.match.host, prefix: normalizePathPrefix(service.match.pathPrefix), service: compiled });
  });
  if (issues.length > 0) throw new ConfigError(issues);

  return Object.freeze({
    version,
    document,
    upstreams: document.upstreams,
    storeValues: new Map(storeKeysOf(document).map((key) => [key, storeValue(key)])),
    matchService: serviceMatcher(routes),
  });
}

/** The compiled rules of a service, in order (empty unless its release is in canary). */
export function compiledRulesOf(service: CompiledService): readonly CompiledRule[] {
  return service.explain.rules;
}
