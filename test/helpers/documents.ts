import { formatIssues } from '../../src/config/issues.js';
import { RoutingDocument } from '../../src/config/schema.js';
import type { Strategy } from '../../src/rules/strategy.js';

/** Two upstreams nothing listens on: the documents below are parsed and compiled, never proxied to. */
export const testUpstreams = { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } };

/**
 * The suite's one test routing document: service "checkout" (stable v1, candidate v2) whose
 * release holds `rule` (e.g. `{ cookie: { name: 'beta', present: true } }`), or, with
 * `identitySources` only, a document of nothing but those identity sources.
 */
export function documentWith(rule?: unknown, options: { identitySources?: unknown[]; service?: string; state?: string } = {}): Record<string, unknown> {
  const identity = options.identitySources ? { identity: { sources: options.identitySources } } : {};
  if (rule === undefined) return { upstreams: {}, services: [], ...identity };
  const release = { candidate: 'v2', ...(options.state ? { state: options.state } : {}), rules: [rule] };
  return { upstreams: testUpstreams, services: [{ name: options.service ?? 'checkout', stable: 'v1', release }], ...identity };
}

/** A document of one identity source (e.g. `{ jwt: { … } }`) and no services. */
export function documentWithIdentity(source: unknown): Record<string, unknown> {
  return documentWith(undefined, { identitySources: [source] });
}

/** The issues (`path: message`) of a document whose one rule is `{ [strategy.kind]: config }`; none when valid. */
export function ruleIssues(strategy: Strategy<unknown> | string, config: unknown): string[] {
  const kind = typeof strategy === 'string' ? strategy : strategy.kind;
  const result = RoutingDocument.safeParse(documentWith({ [kind]: config }), { reportInput: true });
  return result.success ? [] : formatIssues(result.error);
}

/** The parsed config (defaults applied) of a document's one rule `{ [strategy.kind]: config }`, through the real schema; throws on an invalid one. */
export function parsedRule<C>(strategy: Strategy<C>, config: unknown): C {
  const rule = RoutingDocument.parse(documentWith({ [strategy.kind]: config })).services[0]!.release!.rules[0] as Record<string, unknown>;
  return rule[strategy.kind] as C;
}
