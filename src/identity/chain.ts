import type { IdentitySourceConfig } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { canonicalNumericId, type RequestFacts } from '../rules/facts.js';
import type { RequestInput } from '../rules/strategy.js';
import { identitySources, type IdentitySourceKind } from './index.js';
import type { IdentityContext, IdentityResolver } from './source.js';

/** Called when a source throws or rejects; the chain then moves on to the next source. */
export type IdentityErrorHandler = (kind: string, error: unknown) => void;

export interface IdentityChainOptions {
  readonly context?: IdentityContext;
  readonly onError?: IdentityErrorHandler;
}

/** A compiled identity chain: resolves the caller's id, and says which request inputs it reads. */
export interface IdentityChain {
  /**
   * Fills `facts.userId`, `numericUserId` and `identitySource` from the first source that yields
   * an id. Synchronous when every source consulted answers synchronously; otherwise returns a
   * Promise that never rejects (a failing source counts as no identity).
   */
  readonly resolve: (facts: RequestFacts) => void | Promise<void>;
  /** Inputs of every source, for `Vary`. */
  readonly inputs: readonly RequestInput[];
  /** Source kinds in order, for logs and explain. */
  readonly kinds: readonly string[];
  /**
   * What `facts.identitySource` is set to, per source: its kind and, when it reads one named
   * request input, that input's name (`header:x-user-id`, `cookie:uid`, `tokenLookup:token`), so
   * an access line tells two sources of one kind apart. Never the value.
   */
  readonly labels: readonly string[];
}

/** The config key of a one-key source config (the schema guarantees exactly one). */
function sourceKind(config: IdentitySourceConfig): IdentitySourceKind {
  for (const key of Object.keys(config)) {
    if ((config as Record<string, unknown>)[key] !== undefined) return key as IdentitySourceKind;
  }
  throw new Error('identity source config has no kind');
}

/** Builds the chain from `identity.sources`; the first source that yields an id wins. Throws `ConfigError` when a source cannot be created. */
export function buildIdentityChain(sources: readonly IdentitySourceConfig[], options: IdentityChainOptions = {}): IdentityChain {
  const context = options.context ?? {};
  const onError = options.onError;
  const kinds: string[] = [];
  const labels: string[] = [];
  const resolvers: IdentityResolver[] = [];
  const inputs: RequestInput[] = [];
  const issues: string[] = [];
  sources.forEach((config, index) => {
    const kind = sourceKind(config);
    const source = identitySources[kind] as { create(c: unknown, ctx: IdentityContext): IdentityResolver; inputs(c: unknown): readonly RequestInput[] };
    const sourceConfig = (config as Record<string, unknown>)[kind];
    try {
      resolvers.push(source.create(sourceConfig, context));
    } catch (error) {
      // A source that cannot work here (e.g. a store lookup without a store) refuses the document.
      const where = `identity.sources[${index}].${kind}`;
      const found = error instanceof ConfigError ? error.issues : [(error as Error)?.message ?? String(error)];
      for (const issue of found) issues.push(`${where}: ${issue.replace(/^identity\.sources: /, '')}`);
      return;
    }
    kinds.push(kind);
    const sourceInputs = source.inputs(sourceConfig);
    const named = sourceInputs.length === 1 && 'name' in sourceInputs[0]! ? sourceInputs[0].name : undefined;
    labels.push(named === undefined ? kind : `${kind}:${named}`);
    inputs.push(...sourceInputs);
  });
  if (issues.length > 0) throw new ConfigError(issues);
  const count = resolvers.length;

  const report = (kind: string, error: unknown): void => {
    if (!onError) return;
    try {
      onError(kind, error);
    } catch {
      // A failing error reporter must not turn a missing identity into a failed request.
    }
  };

  const accept = (facts: RequestFacts, value: string, index: number): void => {
    facts.userId = value;
    facts.numericUserId = canonicalNumericId(value);
    facts.identitySource = labels[index];
  };

  // Walks sources from `start`. Stays synchronous until a source hands back a Promise; only that
  // (rare: a store lookup on a cache miss) allocates continuations.
  const walk = (facts: RequestFacts, start: number): void | Promise<void> => {
    for (let i = start; i < count; i++) {
      let answer: ReturnType<IdentityResolver>;
      try {
        answer = resolvers[i]!(facts);
      } catch (error) {
        report(kinds[i]!, error);
        continue;
      }
      if (answer === undefined) continue;
      if (typeof answer === 'string') {
        if (answer.length === 0) continue;
        accept(facts, answer, i);
        return;
      }
      return continueAfter(facts, answer, i);
    }
  };

  // Kept out of walk(): a closure created inside its loop makes V8 allocate a context for the
  // loop body on every request, even the synchronous ones that never reach this point.
  const continueAfter = (facts: RequestFacts, pending: Promise<string | undefined>, index: number): Promise<void> =>
    Promise.resolve(pending).then(
      (value) => {
        if (typeof value === 'string' && value.length > 0) {
          accept(facts, value, index);
          return;
        }
        return walk(facts, index + 1);
      },
      (error: unknown) => {
        report(kinds[index]!, error);
        return walk(facts, index + 1);
      },
    );

  const resolve = (facts: RequestFacts): void | Promise<void> => {
    facts.userId = undefined;
    facts.numericUserId = undefined;
    facts.identitySource = undefined;
    if (count === 0) return;
    return walk(facts, 0);
  };

  return Object.freeze({ resolve, inputs: Object.freeze(inputs), kinds: Object.freeze(kinds), labels: Object.freeze(labels) });
}
