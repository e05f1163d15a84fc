import { candidatesOf } from '../config/release-checks.js';
import type { CacheMode, Condition, RoutingDocument, Rule, Service } from '../config/schema.js';
import { deepFreeze, normalizePathPrefix } from '../config/semantic.js';
import { ConfigError } from '../errors.js';
import { buildAnonymousIdentity, type AnonymousIdentity } from '../identity/anonymous.js';
import { buildIdentityChain, type IdentityChain, type IdentityErrorHandler } from '../identity/chain.js';
import type { IdentityContext } from '../identity/source.js';
import type { RequestFacts } from './facts.js';
import { BUCKETS, bucketOf, deriveSeed } from './hash.js';
import type { CompiledService, Decision, RoutingSnapshot, VersionName } from './snapshot.js';
import { strategies, type StrategyKind } from './strategies/index.js';
import type { CompileContext, Matcher, RequestInput } from './strategy.js';

/** What compiling may use besides the document. Compiling itself does no I/O. */
export interface CompileOptions {
  /** Store values fetched for this snapshot (e.g. the seed's `Grayscale_Range`); none by default. */
  storeValue?(key: string): string | undefined;
  /** Long-lived services identity sources use (store lookups); none by default. */
  identityContext?: IdentityContext;
  /** Told when an identity source throws or rejects (the request then has no identity). */
  onIdentityError?: IdentityErrorHandler;
}

/**
 * The sticky-hash seed of a service's release: the service name itself. It does not include the
 * config version or the candidate, so a caller keeps its bucket across rule edits and gateways,
 * and raising a percentage only adds callers. Renaming the service re-buckets everyone.
 */
export function releaseSeedOf(serviceName: string): string {
  return serviceName;
}

/** A compiled rule, kept for explain: its matcher, its decision and the inputs it reads. */
export interface CompiledRule {
  readonly index: number;
  readonly matches: Matcher;
  readonly decision: Decision;
  readonly inputs: readonly RequestInput[];
}

const conditionCombinators = ['all', 'any', 'not'] as const;

/** The one condition key of a condition or rule object (the schema guarantees exactly one). */
export function conditionKey(condition: Condition | Rule): StrategyKind | 'all' | 'any' | 'not' {
  const record = condition as Record<string, unknown>;
  for (const key of conditionCombinators) if (record[key] !== undefined) return key;
  for (const key of Object.keys(strategies) as StrategyKind[]) if (record[key] !== undefined) return key;
  throw new ConfigError(['expected one condition']);
}

const never: Matcher = () => false;

function allOf(matchers: Matcher[]): Matcher {
  if (matchers.length === 1) return matchers[0]!;
  if (matchers.length === 2) {
    const [a, b] = matchers as [Matcher, Matcher];
    return (facts) => a(facts) && b(facts);
  }
  const count = matchers.length;
  return (facts) => {
    for (let i = 0; i < count; i++) if (!matchers[i]!(facts)) return false;
    return true;
  };
}

function anyOf(matchers: Matcher[]): Matcher {
  if (matchers.length === 0) return never;
  if (matchers.length === 1) return matchers[0]!;
  if (matchers.length === 2) {
    const [a, b] = matchers as [Matcher, Matcher];
    return (facts) => a(facts) || b(facts);
  }
  const count = matchers.length;
  return (facts) => {
    for (let i = 0; i < count; i++) if (matchers[i]!(facts)) return true;
    return false;
  };
}

/** Compiles a condition into one matcher, collecting the inputs it reads; issues carry `path`. */
function compileCondition(condition: Condition | Rule, path: string, context: CompileContext, inputs: RequestInput[]): Matcher {
  const key = conditionKey(condition);
  const record = condition as Record<string, unknown>;
  if (key === 'all' || key === 'any') {
    const children = (record[key] as Condition[]).map((child, i) => compileCondition(child, `${path}.${key}[${i}]`, context, inputs));
    return key === 'all' ? allOf(children) : anyOf(children);
  }
  if (key === 'not') {
    const inner = compileCondition(record.not as Condition, `${path}.not`, context, inputs);
    return (facts) => !inner(facts);
  }
  const strategy = strategies[key] as {
    compile(config: unknown, context: CompileContext): Matcher;
    inputs(config: unknown): readonly RequestInput[];
  };
  const config = record[key];
  inputs.push(...strategy.inputs(config));
  try {
    return strategy.compile(config, context);
  } catch (error) {
    const where = `${path}.${key}`;
    if (error instanceof ConfigError) {
      throw new ConfigError(
        error.issues.map((issue) => `${where}${issue.startsWith('.') || issue.startsWith('[') ? '' : ': '}${issue}`),
        { cause: error },
      );
    }
    throw new ConfigError([`${where}: ${(error as Error)?.message ?? String(error)}`], { cause: error });
  }
}

interface DecisionInit {
  readonly version: VersionName;
  readonly upstream: string;
  readonly candidate?: string | undefined;
  readonly reason: string;
  readonly dependsOnCaller: boolean;
  /** The `Vary` value of the inputs this decision read (undefined: none a cache can key on). */
  readonly varyValue?: string | undefined;
}

/** A frozen Decision with its cache headers fixed by the release's `cache` mode. */
function decisionOf(service: string, cache: CacheMode, init: DecisionInit): Decision {
  const callerDependent = init.dependsOnCaller && init.varyValue !== undefined;
  return Object.freeze({
    service,
    version: init.version,
    upstream: init.upstream,
    candidate: init.version === 'candidate' ? (init.candidate ?? init.upstream) : undefined,
    reason: init.reason,
    dependsOnCaller: init.dependsOnCaller,
    vary: callerDependent && cache === 'vary' ? init.varyValue : undefined,
    cachePrivate: callerDependent && cache === 'private',
  });
}

/**
 * The `Vary` value for rules reading `inputs`: header names as they are, cookies as `Cookie`,
 * the identity as whatever the identity sources read. Query parameters need nothing (the URL is
 * already the cache key) and neither does time (it is the same for every caller). The client
 * address cannot be named in Vary, so it gives `*` (RFC 9110 §12.5.5: the response varies on
 * something other than request headers).
 */
export function varyFor(inputs: readonly RequestInput[], identityInputs: readonly RequestInput[]): string | undefined {
  return new VaryBuilder(identityInputs).add(inputs).value();
}

/**
 * `varyFor` over a growing list of inputs, rule after rule: the value is rebuilt only when a rule
 * adds a name not seen before. Rebuilding it for every rule made compiling n rules on the same
 * header cost O(n²) (10k rules: seconds).
 */
class VaryBuilder {
  private readonly names = new Set<string>();
  private star = false;
  private cached: string | undefined;
  private stale = false;

  constructor(private readonly identityInputs: readonly RequestInput[]) {}

  add(inputs: readonly RequestInput[]): this {
    for (const input of inputs) this.addOne(input, false);
    return this;
  }

  value(): string | undefined {
    if (this.stale) {
      this.stale = false;
      this.cached = this.star ? '*' : this.names.size === 0 ? undefined : [...this.names].sort().join(', ');
    }
    return this.cached;
  }

  private addName(name: string): void {
    if (this.names.has(name)) return;
    this.names.add(name);
    this.stale = true;
  }

  private addOne(input: RequestInput, viaIdentity: boolean): void {
    switch (input.kind) {
      case 'header':
        this.addName(input.name.toLowerCase());
        break;
      case 'cookie':
        this.addName('Cookie');
        break;
      case 'query': // the URL is already part of every cache key
      case 'time': // the same for every caller at a given moment: nothing about the caller to vary on
        break;
      case 'identity':
        if (!viaIdentity) for (const inner of this.identityInputs) this.addOne(inner, true);
        break;
      default:
        if (!this.star) this.stale = true;
        this.star = true;
    }
  }
}

/** Salt of the A/B/n split hash: a seed independent of every percentage rule (LESSONS "Hash pitfalls"). */
export const SPLIT_SALT = 'graygate/split';

/**
 * The bucket ranges of an A/B/n split, fixed at compile: candidate i takes buckets
 * `[from[i], to[i])` of `murmur3(userId, deriveSeed(service, SPLIT_SALT)) % 10000`. Every
 * candidate but the last takes consecutive ranges upwards from bucket 0, in list order; the
 * last takes the top of the range downwards from 9999; stable keeps the gap between. So
 * changing the weight of the last candidate, or of the one listed just before it, moves callers
 * only between that candidate and stable (with two candidates, an A/B test, that is both);
 * changing an earlier candidate's weight shifts the ranges of those listed after it but the last.
 */
export function splitRanges(weights: readonly number[]): { from: number[]; to: number[] } {
  const from: number[] = [];
  const to: number[] = [];
  let low = 0;
  weights.forEach((weight, i) => {
    const width = Math.round(weight * 100);
    if (i === weights.length - 1 && i > 0) {
      from.push(BUCKETS - width);
      to.push(BUCKETS);
    } else {
      from.push(low);
      to.push(low + width);
      low += width;
    }
  });
  return { from, to };
}

/** What explain needs beyond `decide`: the rules, the split, and identity without minting. */
export interface ServiceExplainInfo {
  readonly state: 'idle' | 'canary' | 'full' | 'none';
  readonly rules: readonly CompiledRule[];
  /** The split, when the release has weighted candidates in canary. */
  readonly split: { readonly seed: number; readonly candidates: readonly string[]; readonly from: readonly number[]; readonly to: readonly number[] } | undefined;
  /** Resolves identity like the data plane, except that no anonymous id is minted. */
  resolveIdentityWithoutMinting(facts: RequestFacts): void | Promise<void>;
}

interface CompiledServiceWithRules extends CompiledService {
  /** Compiled rules in order (empty unless the release is in canary), for explain. */
  readonly rules: readonly CompiledRule[];
  readonly explainInfo: ServiceExplainInfo;
}

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

function compileService(
  service: Service,
  index: number,
  chain: IdentityChain,
  anonymous: AnonymousIdentity | undefined,
  storeValue: (key: string) => string | undefined,
): CompiledServiceWithRules {
  const name = service.name;
  const release = service.release;
  const state = release?.state ?? 'idle';
  const cache: CacheMode = release?.cache ?? 'vary';
  const candidates = release ? candidatesOf(release) : [];
  const candidateNames = Object.freeze(candidates.map((c) => c.upstream));
  const stableDecision = decisionOf(name, cache, { version: 'stable', upstream: service.stable, reason: 'idle', dependsOnCaller: false });
  const identityInputs = anonymous ? [...chain.inputs, ...anonymous.inputs] : chain.inputs;
  const base = { name, stable: service.stable, candidate: candidateNames[0], candidates: candidateNames, stableDecision };
  const withoutIdentity = { needsIdentity: false, resolveIdentity: chain.resolve, vary: undefined, rules: Object.freeze([]) };
  const explainWithout = (explainState: ServiceExplainInfo['state']): ServiceExplainInfo =>
    Object.freeze({ state: explainState, rules: Object.freeze([]), split: undefined, resolveIdentityWithoutMinting: withAnonymous(chain.resolve, anonymous, false) });

  if (!release || state === 'idle') {
    const decide = (_facts: RequestFacts): Decision => stableDecision;
    return Object.freeze({ ...base, ...withoutIdentity, decide, explainInfo: explainWithout(release ? 'idle' : 'none') });
  }
  if (state === 'full') {
    // With A/B/n, `full` needs one winner (semantic check): the candidate with a weight above 0.
    const winner = candidates.find((c) => c.weight === undefined || c.weight > 0) ?? candidates[0]!;
    const full = decisionOf(name, cache, { version: 'candidate', upstream: winner.upstream, reason: 'full', dependsOnCaller: false });
    const decide = (_facts: RequestFacts): Decision => full;
    return Object.freeze({ ...base, ...withoutIdentity, decide, explainInfo: explainWithout('full') });
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
  const noMatch = decisionOf(name, cache, {
    version: 'stable',
    upstream: service.stable,
    reason: 'no rule matched',
    dependsOnCaller,
    // Without an id the split still looked for one: its absence decided too.
    varyValue: varyFor(hasSplit ? [...ruleInputs, { kind: 'identity' }] : ruleInputs, identityInputs),
  });
  const matchers = compiled.map((rule) => rule.matches);
  const decisions = compiled.map((rule) => rule.decision);
  const count = matchers.length;

  let decide: (facts: RequestFacts) => Decision;
  let split: ServiceExplainInfo['split'];
  if (!hasSplit) {
    decide = (facts) => {
      for (let i = 0; i < count; i++) if (matchers[i]!(facts)) return decisions[i]!;
      return noMatch;
    };
  } else {
    const seed = deriveSeed(context.releaseSeed, SPLIT_SALT);
    const ranges = splitRanges(weights);
    const splitVary = varyFor([...ruleInputs, { kind: 'identity' }], identityInputs);
    // Only candidates with a weight take part: weight 0 is never chosen, so never dialled by the split.
    const used = candidates.map((_, i) => i).filter((i) => ranges.to[i]! > ranges.from[i]!);
    const from = Int32Array.from(used, (i) => ranges.from[i]!);
    const to = Int32Array.from(used, (i) => ranges.to[i]!);
    const splitDecisions = used.map((i) =>
      decisionOf(name, cache, { version: 'candidate', upstream: candidateNames[i]!, reason: 'split', dependsOnCaller: true, varyValue: splitVary }),
    );
    const splitStable = decisionOf(name, cache, { version: 'stable', upstream: service.stable, reason: 'split', dependsOnCaller: true, varyValue: splitVary });
    const parts = used.length;
    split = Object.freeze({ seed, candidates: Object.freeze(used.map((i) => candidateNames[i]!)), from: Object.freeze([...from]), to: Object.freeze([...to]) });
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
    resolveIdentity: needsIdentity ? withAnonymous(chain.resolve, anonymous, true) : chain.resolve,
    decide,
    vary: dependsOnCaller ? varyFor(hasSplit ? [...ruleInputs, { kind: 'identity' }] : ruleInputs, identityInputs) : undefined,
    rules,
    explainInfo: Object.freeze({ state: 'canary' as const, rules, split, resolveIdentityWithoutMinting: withAnonymous(chain.resolve, anonymous, false) }),
  });
}

/**
 * Services sharing one host pattern. Few prefixes: a linear scan, longest first (cheapest for
 * the common case). Many: a map by prefix, probed at the path's segment boundaries from the
 * longest down, so the cost follows the path's depth instead of the number of services.
 */
interface PrefixTable {
  readonly prefixes: readonly string[];
  readonly services: readonly CompiledService[];
  readonly byPrefix: ReadonlyMap<string, CompiledService> | undefined;
  readonly longest: number;
  readonly root: CompiledService | undefined;
}

/** Tables with more prefixes than this are looked up by segment boundary instead of scanned. */
const LINEAR_SCAN_MAX = 4;

/** True when `path` starts with `prefix` on a whole segment boundary (`/api` takes `/api/x`, not `/apix`). */
export function prefixMatches(prefix: string, path: string): boolean {
  if (prefix.length === 1) return true; // the root `/` takes every path
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || path.charCodeAt(prefix.length) === 47 /* / */;
}

function buildPrefixTable(entries: { prefix: string; service: CompiledService }[]): PrefixTable {
  const sorted = [...entries].sort((a, b) => b.prefix.length - a.prefix.length);
  const prefixes = sorted.map((e) => e.prefix);
  const services = sorted.map((e) => e.service);
  const byPrefix = sorted.length > LINEAR_SCAN_MAX ? new Map(sorted.map((e) => [e.prefix, e.service])) : undefined;
  return { prefixes, services, byPrefix, longest: prefixes[0]?.length ?? 0, root: byPrefix?.get('/') };
}

function lookupPrefix(table: PrefixTable, path: string): CompiledService | undefined {
  const byPrefix = table.byPrefix;
  if (byPrefix === undefined) {
    const prefixes = table.prefixes;
    for (let i = 0; i < prefixes.length; i++) if (prefixMatches(prefixes[i]!, path)) return table.services[i];
    return undefined;
  }
  const longest = table.longest;
  if (path.length <= longest) {
    const whole = byPrefix.get(path);
    if (whole !== undefined) return whole;
  }
  // Each '/' at index i ends the candidate prefix path[0, i); no prefix is longer than `longest`.
  for (let i = path.lastIndexOf('/', Math.min(path.length - 1, longest)); i > 0; i = path.lastIndexOf('/', i - 1)) {
    const found = byPrefix.get(path.slice(0, i));
    if (found !== undefined) return found;
  }
  return table.root;
}

/**
 * Compiles a validated routing document into a frozen snapshot. Matching precedence: exact host,
 * then wildcard hosts (longest suffix first), then services without a host; within a host tier
 * the longest whole-segment path prefix wins, and a tier with no matching prefix falls through to
 * the next. Throws `ConfigError` when a strategy refuses its config (paths name the rule).
 */
export function compileRouting(document: RoutingDocument, version: number, options: CompileOptions = {}): RoutingSnapshot {
  deepFreeze(document);
  const storeValue = options.storeValue ? (key: string) => options.storeValue!(key) : () => undefined;
  const anonymous = buildAnonymousIdentity(document.identity?.anonymousCookie);
  const chain = buildIdentityChain(document.identity?.sources ?? [], {
    ...(options.identityContext ? { context: options.identityContext } : {}),
    ...(options.onIdentityError ? { onError: options.onIdentityError } : {}),
  });

  const issues: string[] = [];
  const exact = new Map<string, { prefix: string; service: CompiledService }[]>();
  const wildcard = new Map<string, { prefix: string; service: CompiledService }[]>();
  const anyHost: { prefix: string; service: CompiledService }[] = [];
  document.services.forEach((service, index) => {
    let compiled: CompiledService;
    try {
      compiled = compileService(service, index, chain, anonymous, storeValue);
    } catch (error) {
      if (error instanceof ConfigError) {
        issues.push(...error.issues);
        return;
      }
      throw error;
    }
    const prefix = normalizePathPrefix(service.match.pathPrefix);
    const host = service.match.host;
    const entry = { prefix, service: compiled };
    if (host === undefined) anyHost.push(entry);
    else if (host.startsWith('*.')) {
      const suffix = host.slice(1); // keep the dot: `*.example.com` takes `a.example.com`, not `example.com`
      (wildcard.get(suffix) ?? wildcard.set(suffix, []).get(suffix)!).push(entry);
    } else (exact.get(host) ?? exact.set(host, []).get(host)!).push(entry);
  });
  if (issues.length > 0) throw new ConfigError(issues);

  const exactTables = new Map<string, PrefixTable>();
  for (const [host, entries] of exact) exactTables.set(host, buildPrefixTable(entries));
  const wildcardSorted = [...wildcard.entries()].sort((a, b) => b[0].length - a[0].length);
  const wildcardSuffixes = wildcardSorted.map(([suffix]) => suffix);
  const wildcardTables = wildcardSorted.map(([, entries]) => buildPrefixTable(entries));
  const anyTable = buildPrefixTable(anyHost);
  const wildcardCount = wildcardSuffixes.length;

  const matchService = (host: string, path: string): CompiledService | undefined => {
    const exactTable = exactTables.get(host);
    if (exactTable !== undefined) {
      const found = lookupPrefix(exactTable, path);
      if (found !== undefined) return found;
    }
    for (let i = 0; i < wildcardCount; i++) {
      const suffix = wildcardSuffixes[i]!;
      // Longer than the suffix, so `*.example.com` needs at least one label in front.
      if (host.length > suffix.length && host.endsWith(suffix)) {
        const found = lookupPrefix(wildcardTables[i]!, path);
        if (found !== undefined) return found;
      }
    }
    return lookupPrefix(anyTable, path);
  };

  return Object.freeze({
    version,
    document,
    upstreams: document.upstreams,
    storeValues: new Map(storeKeysOf(document).map((key) => [key, storeValue(key)])),
    matchService,
  });
}

/**
 * Store keys the rules of a document read (strategy `storeKeys`, e.g. the seed's
 * `Grayscale_Range`), so the gateway can fetch and watch them before compiling. Sorted, unique.
 */
export function storeKeysOf(document: RoutingDocument): string[] {
  const keys = new Set<string>();
  const visit = (condition: Condition | Rule): void => {
    const key = conditionKey(condition);
    const record = condition as Record<string, unknown>;
    if (key === 'all' || key === 'any') for (const child of record[key] as Condition[]) visit(child);
    else if (key === 'not') visit(record.not as Condition);
    else {
      const strategy = strategies[key] as { storeKeys?(config: unknown): readonly string[] };
      for (const storeKey of strategy.storeKeys?.(record[key]) ?? []) keys.add(storeKey);
    }
  };
  for (const service of document.services) for (const rule of service.release?.rules ?? []) visit(rule);
  return [...keys].sort();
}

/** The compiled rules of a service from a snapshot made by `compileRouting` (for explain). */
export function compiledRulesOf(service: CompiledService): readonly CompiledRule[] {
  return (service as Partial<CompiledServiceWithRules>).rules ?? [];
}

/** What explain reads of a service compiled by `compileRouting`; undefined for other implementations. */
export function explainInfoOf(service: CompiledService): ServiceExplainInfo | undefined {
  return (service as Partial<CompiledServiceWithRules>).explainInfo;
}
