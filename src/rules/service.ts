import { candidatesOf } from '../config/release-checks.js';
import type { CacheMode, Service } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { decisionOf, VaryBuilder, varyFor } from './cache-headers.js';
import { compileCondition } from './conditions.js';
import type { CompiledRule, ServiceDescription } from './description.js';
import type { RequestFacts } from './facts.js';
import { bucketOf } from './hash.js';
import type { RequestIdentity } from './request-identity.js';
import type { CompiledService, Decision } from './snapshot.js';
import { compileSplit } from './split.js';
import type { CompileContext, RequestInput } from './strategy.js';

/**
 * The sticky-hash seed of a service's release: the service name itself. It does not include the
 * config version or the candidate, so a caller keeps its bucket across rule edits and gateways,
 * and raising a percentage only adds callers. Renaming the service re-buckets everyone.
 */
export function releaseSeedOf(serviceName: string): string {
  return serviceName;
}

/**
 * Compiles one service: its `decide` (first matching rule, then the split, then stable), the
 * Decisions it can return with their cache headers, and the description explain reads. Throws
 * `ConfigError` (paths under `services[index]`) when a rule cannot compile.
 */
export function compileService(service: Service, index: number, identity: RequestIdentity, storeValue: (key: string) => string | undefined): CompiledService {
  const name = service.name;
  const release = service.release;
  const state = release?.state ?? 'idle';
  const cache: CacheMode = release?.cache ?? 'vary';
  const candidates = release ? candidatesOf(release) : [];
  const candidateNames = Object.freeze(candidates.map((c) => c.upstream));
  const stableDecision = decisionOf(name, cache, { version: 'stable', upstream: service.stable, reason: 'idle', dependsOnCaller: false });
  const identityInputs = identity.inputs;
  const base = { name, stable: service.stable, candidate: candidateNames[0], candidates: candidateNames, stableDecision };
  const withoutIdentity = { needsIdentity: false, resolveIdentity: identity.resolve, vary: undefined };
  const describeWithout = (describedState: ServiceDescription['state']): ServiceDescription =>
    Object.freeze({ state: describedState, rules: Object.freeze([]), split: undefined, resolveIdentityWithoutMinting: identity.resolveWithoutMinting });

  if (!release || state === 'idle') {
    const decide = (_facts: RequestFacts): Decision => stableDecision;
    return Object.freeze({ ...base, ...withoutIdentity, decide, explain: describeWithout(release ? 'idle' : 'none') });
  }
  if (state === 'full') {
    // With A/B/n, `full` needs one winner (semantic check): the candidate with a weight above 0.
    const winner = candidates.find((c) => c.weight === undefined || c.weight > 0) ?? candidates[0]!;
    const full = decisionOf(name, cache, { version: 'candidate', upstream: winner.upstream, reason: 'full', dependsOnCaller: false });
    const decide = (_facts: RequestFacts): Decision => full;
    return Object.freeze({ ...base, ...withoutIdentity, decide, explain: describeWithout('full') });
  }

  const context: CompileContext = Object.freeze({ storeValue, releaseSeed: releaseSeedOf(name) });
  const weights = candidates.map((c) => c.weight ?? 0);
  const hasSplit = release.candidates !== undefined && weights.some((w) => w > 0);
  const dependsOnCaller = release.rules.length > 0 || hasSplit;
  // Inputs read so far, rule by rule: a decision by rule i depends on rules 0..i only.
  const inputsSoFar: RequestInput[] = [];
  const varySoFar = new VaryBuilder(identityInputs);
  const compiled: CompiledRule[] = release.rules.map((rule, i) => {
    const inputs: RequestInput[] = [];
    const matches = compileCondition(rule, `services[${index}].release.rules[${i}]`, context, inputs);
    for (const input of inputs) inputsSoFar.push(input);
    varySoFar.add(inputs);
    const to = rule.to;
    const toStable = to === 'stable';
    // `candidate` is the one candidate (the semantic check refuses it with several).
    const upstream = toStable ? service.stable : to === 'candidate' ? candidateNames[0] : to;
    // Semantic checks refuse this before a document is stored; compile never trusts a name it cannot resolve.
    if (upstream === undefined || (!toStable && !candidateNames.includes(upstream))) {
      throw new ConfigError([`services[${index}].release.rules[${i}].to: "${to}" is not a candidate of this release`]);
    }
    return Object.freeze({
      index: i,
      matches,
      decision: decisionOf(name, cache, {
        version: toStable ? 'stable' : 'candidate',
        upstream,
        reason: rule.name ?? `rule ${i + 1}`,
        dependsOnCaller: true,
        varyValue: varySoFar.value(),
      }),
      inputs: Object.freeze(inputs),
    });
  });
  const ruleInputs = [...inputsSoFar];
  // Without an id the split still looked for one: its absence decided too.
  const decidingInputs: RequestInput[] = hasSplit ? [...ruleInputs, { kind: 'identity' }] : ruleInputs;
  const noMatch = decisionOf(name, cache, { version: 'stable', upstream: service.stable, reason: 'no rule matched', dependsOnCaller, varyValue: varyFor(decidingInputs, identityInputs) });
  const matchers = compiled.map((rule) => rule.matches);
  const decisions = compiled.map((rule) => rule.decision);
  const count = matchers.length;

  let decide: (facts: RequestFacts) => Decision;
  let split: ServiceDescription['split'];
  if (!hasSplit) {
    decide = (facts) => {
      for (let i = 0; i < count; i++) if (matchers[i]!(facts)) return decisions[i]!;
      return noMatch;
    };
  } else {
    const compiledSplit = compileSplit({
      service: name,
      cache,
      stable: service.stable,
      candidates: candidateNames,
      weights,
      releaseSeed: context.releaseSeed,
      vary: varyFor(decidingInputs, identityInputs),
    });
    // Locals, not property reads through compiledSplit, in the per-request closure.
    const { seed, from, to, decisions: splitDecisions, stable: splitStable } = compiledSplit;
    const parts = splitDecisions.length;
    split = compiledSplit.description;
    decide = (facts) => {
      for (let i = 0; i < count; i++) if (matchers[i]!(facts)) return decisions[i]!;
      const key = facts.userId;
      // Never hash an empty key: every such caller would share one constant bucket.
      if (key === undefined || key.length === 0) return noMatch;
      const bucket = bucketOf(key, seed);
      for (let i = 0; i < parts; i++) if (bucket >= from[i]! && bucket < to[i]!) return splitDecisions[i]!;
      return splitStable;
    };
  }
  const needsIdentity = hasSplit || ruleInputs.some((input) => input.kind === 'identity');
  const rules = Object.freeze(compiled);
  return Object.freeze({
    ...base,
    needsIdentity,
    // Only a service that reads the identity mints anonymous ids.
    resolveIdentity: needsIdentity ? identity.resolveOrMint : identity.resolve,
    decide,
    vary: dependsOnCaller ? varyFor(decidingInputs, identityInputs) : undefined,
    explain: Object.freeze({ state: 'canary' as const, rules, split, resolveIdentityWithoutMinting: identity.resolveWithoutMinting }),
  });
}
