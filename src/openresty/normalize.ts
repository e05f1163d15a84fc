import { candidatesOf } from '../config/release-checks.js';
import type { CacheMode, Condition, IdentitySourceConfig, Rule, RoutingDocument, Service, Settings, Upstream } from '../config/schema.js';
import { normalizePathPrefix } from '../config/semantic.js';
import { splitCiphers } from './tls.js';
import { ConfigError } from '../errors.js';
import { identitySources, type IdentitySourceKind } from '../identity/index.js';
import { decisionOf, VaryBuilder, varyFor } from '../rules/cache-headers.js';
import { parseCidr } from '../rules/cidr.js';
import { conditionKey } from '../rules/conditions.js';
import { BUCKETS, deriveSeed } from '../rules/hash.js';
import { releaseSeedOf } from '../rules/service.js';
import type { Decision } from '../rules/snapshot.js';
import { SPLIT_SALT, splitRanges } from '../rules/split.js';
import { strategies } from '../rules/strategies/index.js';
import { cutOf } from '../rules/strategies/percentage.js';
import { parseStoredRange } from '../rules/strategies/uid-range.js';
import type { ValueTestConfig } from '../rules/strategies/value-match.js';
import type { RequestInput } from '../rules/strategy.js';
import {
  FORM_FORMAT,
  SETTINGS_FORMAT,
  type FormCondition,
  type FormDecision,
  type FormIdentity,
  type FormIdentitySource,
  type FormRule,
  type FormService,
  type FormSplit,
  type FormUpstream,
  type NormalizedForm,
  type NormalizedSettings,
} from './form.js';
import { translateRegex } from './regex.js';

export type { NormalizedForm, NormalizedSettings } from './form.js';
export { FORM_FORMAT, SETTINGS_FORMAT } from './form.js';

/** What normalizing may use besides the document. */
export interface NormalizeOptions {
  /** Store values fetched for this version (e.g. the seed's `Grayscale_Range`), as compileRouting takes them. */
  storeValue?(key: string): string | undefined;
  /** The store epoch of the version, copied into the form. */
  epoch?: string;
}

const SECONDS_PER_DAY = 86_400;
const TOKEN_PLACEHOLDER = '{token}';

/** True when `text` holds a lone UTF-16 surrogate: no request value (Latin-1 header, decoded query) can ever equal it. */
function hasLoneSurrogate(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
      else return true;
    } else if (c >= 0xdc00 && c <= 0xdfff) return true;
  }
  return false;
}

const NEVER: FormCondition = Object.freeze({ kind: 'never' });

/** The parts of a document the OpenResty data plane cannot evaluate, collected while normalizing. */
class Issues {
  readonly list: string[] = [];
  add(path: string, message: string): void {
    this.list.push(`${path}: ${message}`);
  }
}

/** nginx drops request headers whose name holds "_" (underscores_in_headers is off by default), and with it on, reads "-" and "_" as one. */
function checkHeaderName(name: string, path: string, issues: Issues): void {
  if (name.includes('_')) {
    issues.add(path, `header name "${name}" holds "_": nginx drops such request headers (underscores_in_headers off) or confuses "_" with "-"; name a header without "_"`);
  }
}

function formDecision(decision: Decision): FormDecision {
  return {
    version: decision.version,
    upstream: decision.upstream,
    reason: decision.reason,
    dependsOnCaller: decision.dependsOnCaller,
    ...(decision.vary !== undefined ? { vary: decision.vary } : {}),
    private: decision.cachePrivate,
  };
}

function valueCondition(kind: 'header' | 'cookie' | 'query', config: ValueTestConfig & { name: string }, path: string, issues: Issues): FormCondition {
  const name = config.name;
  if (kind === 'header') checkHeaderName(name, `${path}.name`, issues);
  if (config.present) return { kind, name, present: true };
  if (config.equals !== undefined) return hasLoneSurrogate(config.equals) ? NEVER : { kind, name, equals: config.equals };
  if (config.oneOf !== undefined) {
    const values = [...new Set(config.oneOf.filter((value) => !hasLoneSurrogate(value)))];
    return values.length === 0 ? NEVER : { kind, name, oneOf: values };
  }
  if (config.prefix !== undefined) return hasLoneSurrogate(config.prefix) ? NEVER : { kind, name, prefix: config.prefix };
  const translated = translateRegex(config.regex!);
  if ('issue' in translated) {
    issues.add(`${path}.regex`, translated.issue);
    return NEVER;
  }
  return { kind, name, regex: translated.pattern };
}

/** IPv4 entries as [net, mask] pairs of the last word, the rest as 8 words (net, mask) of the mapped 128-bit form; int32 throughout. */
function cidrWords(cidrs: readonly string[]): { v4: number[]; v6: number[] } {
  const maskOf = (bits: number) => (bits <= 0 ? 0 : bits >= 32 ? -1 : (-1 << (32 - bits)) | 0);
  const v4: number[] = [];
  const v6: number[] = [];
  for (const text of cidrs) {
    const parsed = parseCidr(text);
    const w = parsed.words;
    // The same split as compileCidrList: inside the mapped IPv4 space with a prefix of at least 96, only the last word counts.
    if (parsed.prefix >= 96 && w[0] === 0 && w[1] === 0 && w[2] === 0xffff) v4.push(w[3]!, maskOf(parsed.prefix - 96));
    else {
      v6.push(w[0]!, w[1]!, w[2]!, w[3]!);
      for (let k = 0; k < 4; k++) v6.push(maskOf(parsed.prefix - 32 * k));
    }
  }
  return { v4, v6 };
}

interface ConditionContext {
  readonly releaseSeed: string;
  storeValue(key: string): string | undefined;
  readonly issues: Issues;
}

/** One condition of the form, collecting its inputs into `inputs` in the order compileCondition does. Throws ConfigError where compile would. */
function normalizeCondition(condition: Condition | Rule, path: string, context: ConditionContext, inputs: RequestInput[]): FormCondition {
  const key = conditionKey(condition);
  const record = condition as Record<string, unknown>;
  if (key === 'all' || key === 'any') {
    const of = (record[key] as Condition[]).map((child, i) => normalizeCondition(child, `${path}.${key}[${i}]`, context, inputs));
    return { kind: key, of };
  }
  if (key === 'not') return { kind: 'not', of: normalizeCondition(record.not as Condition, `${path}.not`, context, inputs) };
  const config = record[key] as never;
  inputs.push(...(strategies[key] as { inputs(c: unknown): readonly RequestInput[] }).inputs(config));
  const at = `${path}.${key}`;
  switch (key) {
    case 'uidRange': {
      const c = config as { from?: number; to?: number; ranges?: { from: number; to: number }[]; fromKey?: string; rangeStart?: string };
      let ranges: { from: number; to: number }[];
      if (c.fromKey !== undefined) {
        const value = context.storeValue(c.fromKey);
        if (value === undefined) return NEVER;
        let stored: { from: number; to: number };
        try {
          stored = parseStoredRange(c.fromKey, value);
        } catch (error) {
          if (error instanceof ConfigError) throw new ConfigError(error.issues.map((issue) => `${at}.${issue}`), { cause: error });
          throw error;
        }
        if (c.rangeStart === 'exclusive') stored.from += 1;
        if (stored.from > stored.to) return NEVER;
        ranges = [stored];
      } else ranges = c.ranges ?? [{ from: c.from!, to: c.to! }];
      const sorted = [...ranges].sort((a, b) => a.from - b.from);
      return { kind: 'uidRange', from: sorted.map((r) => r.from), to: sorted.map((r) => r.to) };
    }
    case 'uidList': {
      const ids = [...new Set((config as { ids: (string | number)[] }).ids.map((id) => (typeof id === 'number' ? String(id) : id)).filter((id) => !hasLoneSurrogate(id)))];
      return ids.length === 0 ? NEVER : { kind: 'uidList', ids };
    }
    case 'uidModulo': {
      const c = config as { modulo: number; remainders: number[] };
      return { kind: 'uidModulo', modulo: c.modulo, remainders: [...new Set(c.remainders)] };
    }
    case 'percentage': {
      const c = config as { percent: number; salt?: string };
      const cut = cutOf(c.percent);
      if (cut <= 0) return NEVER;
      return { kind: 'percentage', cut: Math.min(cut, BUCKETS), seed: deriveSeed(context.releaseSeed, c.salt) | 0 };
    }
    case 'header':
    case 'cookie':
    case 'query':
      return valueCondition(key, config as ValueTestConfig & { name: string }, at, context.issues);
    case 'cidr':
      return { kind: 'cidr', ...cidrWords((config as { cidrs: string[] }).cidrs) };
    case 'timeWindow': {
      const c = config as { from?: string; to?: string };
      return { kind: 'timeWindow', ...(c.from !== undefined ? { fromMs: Date.parse(c.from) } : {}), ...(c.to !== undefined ? { toMs: Date.parse(c.to) } : {}) };
    }
    default: {
      const unknown: never = key;
      throw new Error(`normalize: no form for strategy ${String(unknown)}`);
    }
  }
}

function sourceKind(config: IdentitySourceConfig): IdentitySourceKind {
  for (const key of Object.keys(config)) if ((config as Record<string, unknown>)[key] !== undefined) return key as IdentitySourceKind;
  throw new Error('identity source config has no kind');
}

/** The identity section: sources with the labels the Node chain gives them, the anonymous cookie's attributes; and the inputs it reads (for Vary). */
function normalizeIdentity(document: RoutingDocument, issues: Issues): { identity: FormIdentity; inputs: RequestInput[] } {
  const sources: FormIdentitySource[] = [];
  const inputs: RequestInput[] = [];
  document.identity.sources.forEach((config, index) => {
    const kind = sourceKind(config);
    const at = `identity.sources[${index}].${kind}`;
    const sourceConfig = (config as Record<string, unknown>)[kind] as never;
    const sourceInputs = (identitySources[kind] as { inputs(c: unknown): readonly RequestInput[] }).inputs(sourceConfig);
    inputs.push(...sourceInputs);
    const named = sourceInputs.length === 1 && 'name' in sourceInputs[0]! ? sourceInputs[0].name : undefined;
    const label = named === undefined ? kind : `${kind}:${named}`;
    switch (kind) {
      case 'header': {
        const c = sourceConfig as { name: string; trustedProxiesOnly: boolean };
        checkHeaderName(c.name, `${at}.name`, issues);
        sources.push({ kind, label, name: c.name, trustedProxiesOnly: c.trustedProxiesOnly });
        break;
      }
      case 'cookie':
      case 'query':
        sources.push({ kind, label, name: (sourceConfig as { name: string }).name });
        break;
      case 'clientIp':
        sources.push({ kind, label });
        break;
      case 'tokenLookup': {
        const c = sourceConfig as {
          header: string;
          keyTemplate: string;
          cacheTtlMs: number;
          negativeTtlMs: number;
          maxStaleMs: number;
          cacheMax: number;
          deadlineMs: number;
          maxTokenLength: number;
        };
        checkHeaderName(c.header, `${at}.header`, issues);
        const placeholder = c.keyTemplate.indexOf(TOKEN_PLACEHOLDER);
        sources.push({
          kind,
          label,
          header: c.header,
          keyPrefix: c.keyTemplate.slice(0, placeholder),
          keySuffix: c.keyTemplate.slice(placeholder + TOKEN_PLACEHOLDER.length),
          cacheTtlMs: c.cacheTtlMs,
          negativeTtlMs: c.negativeTtlMs,
          maxStaleMs: c.maxStaleMs,
          cacheMax: c.cacheMax,
          deadlineMs: c.deadlineMs,
          maxTokenLength: c.maxTokenLength,
        });
        break;
      }
      case 'jwt':
        issues.add(
          at,
          'JWT identity is not available on the OpenResty data plane (no maintained Lua JWT library ships with Debian); ' +
            'verify the token in front of nginx and pass the id in a header ({header: {name: x-user-id, trustedProxiesOnly: true}}), use tokenLookup, or run the Node or Bun data plane',
        );
        break;
      default: {
        const unknown: never = kind;
        throw new Error(`normalize: no form for identity source ${String(unknown)}`);
      }
    }
  });
  const anonymous = document.identity.anonymousCookie;
  if (anonymous === undefined || !anonymous.enabled) return { identity: { sources }, inputs };
  inputs.push({ kind: 'cookie', name: anonymous.name });
  // The attributes as identity/anonymous.ts writes them; SameSite=None always carries Secure.
  const attributes = `; Path=/; Max-Age=${anonymous.maxAgeDays * SECONDS_PER_DAY}; SameSite=${anonymous.sameSite}; HttpOnly`;
  const secureSuffix = `${attributes}; Secure`;
  const plainSuffix = anonymous.sameSite === 'None' ? secureSuffix : attributes;
  return { identity: { sources, anonymousCookie: { name: anonymous.name, plainSuffix, secureSuffix } }, inputs };
}

/** One service, its Decisions computed as rules/service.ts computes them. */
function normalizeService(service: Service, index: number, identityInputs: readonly RequestInput[], storeValue: (key: string) => string | undefined, issues: Issues): FormService {
  const name = service.name;
  const release = service.release;
  const state = release?.state ?? 'idle';
  const cache: CacheMode = release?.cache ?? 'vary';
  const candidates = release ? candidatesOf(release) : [];
  const candidateNames = candidates.map((c) => c.upstream);
  const stableDecision = formDecision(decisionOf(name, cache, { version: 'stable', upstream: service.stable, reason: 'idle', dependsOnCaller: false }));
  const base = {
    name,
    ...(service.match.host !== undefined ? { host: service.match.host } : {}),
    pathPrefix: normalizePathPrefix(service.match.pathPrefix),
    stable: service.stable,
    candidates: candidateNames,
    stableDecision,
  };
  if (!release || state === 'idle') return { ...base, fixed: stableDecision, needsIdentity: false, rules: [], noMatch: stableDecision };
  if (state === 'full') {
    const winner = candidates.find((c) => c.weight === undefined || c.weight > 0) ?? candidates[0]!;
    const full = formDecision(decisionOf(name, cache, { version: 'candidate', upstream: winner.upstream, reason: 'full', dependsOnCaller: false }));
    return { ...base, fixed: full, needsIdentity: false, rules: [], noMatch: full };
  }

  const releaseSeed = releaseSeedOf(name);
  const context: ConditionContext = { releaseSeed, storeValue, issues };
  const weights = candidates.map((c) => c.weight ?? 0);
  const hasSplit = release.candidates !== undefined && weights.some((w) => w > 0);
  const dependsOnCaller = release.rules.length > 0 || hasSplit;
  const ruleInputs: RequestInput[] = [];
  const varySoFar = new VaryBuilder(identityInputs);
  const configIssues: string[] = [];
  const rules: FormRule[] = [];
  release.rules.forEach((rule, i) => {
    const inputs: RequestInput[] = [];
    let when: FormCondition;
    try {
      when = normalizeCondition(rule, `services[${index}].release.rules[${i}]`, context, inputs);
    } catch (error) {
      if (error instanceof ConfigError) {
        configIssues.push(...error.issues);
        return;
      }
      throw error;
    }
    ruleInputs.push(...inputs);
    varySoFar.add(inputs);
    const to = rule.to;
    const toStable = to === 'stable';
    const upstream = toStable ? service.stable : to === 'candidate' ? candidateNames[0] : to;
    if (upstream === undefined || (!toStable && !candidateNames.includes(upstream))) {
      configIssues.push(`services[${index}].release.rules[${i}].to: "${to}" is not a candidate of this release`);
      return;
    }
    const decision = decisionOf(name, cache, {
      version: toStable ? 'stable' : 'candidate',
      upstream,
      reason: rule.name ?? `rule ${i + 1}`,
      dependsOnCaller: true,
      varyValue: varySoFar.value(),
    });
    rules.push({ when, decision: formDecision(decision) });
  });
  if (configIssues.length > 0) throw new ConfigError(configIssues);
  const decidingInputs: RequestInput[] = hasSplit ? [...ruleInputs, { kind: 'identity' }] : ruleInputs;
  const vary = varyFor(decidingInputs, identityInputs);
  const noMatch = formDecision(decisionOf(name, cache, { version: 'stable', upstream: service.stable, reason: 'no rule matched', dependsOnCaller, varyValue: vary }));
  let split: FormSplit | undefined;
  if (hasSplit) {
    const ranges = splitRanges(weights);
    const used = candidateNames.map((_, i) => i).filter((i) => ranges.to[i]! > ranges.from[i]!);
    split = {
      seed: deriveSeed(releaseSeed, SPLIT_SALT) | 0,
      from: used.map((i) => ranges.from[i]!),
      to: used.map((i) => ranges.to[i]!),
      decisions: used.map((i) => formDecision(decisionOf(name, cache, { version: 'candidate', upstream: candidateNames[i]!, reason: 'split', dependsOnCaller: true, varyValue: vary }))),
      stable: formDecision(decisionOf(name, cache, { version: 'stable', upstream: service.stable, reason: 'split', dependsOnCaller: true, varyValue: vary })),
    };
  }
  const needsIdentity = hasSplit || ruleInputs.some((input) => input.kind === 'identity');
  return { ...base, needsIdentity, rules, noMatch, ...(split !== undefined ? { split } : {}) };
}

function normalizeUpstream(upstream: Upstream): FormUpstream {
  return {
    servers: upstream.servers.map((server) => {
      const url = new URL(server);
      const scheme = url.protocol === 'https:' ? 'https' : 'http';
      const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
      return { origin: url.origin, scheme, host, port: url.port === '' ? (scheme === 'https' ? 443 : 80) : Number(url.port) };
    }),
    timeouts: { connectMs: upstream.timeouts.connectMs, responseHeadersMs: upstream.timeouts.responseHeadersMs, idleMs: upstream.timeouts.idleMs },
    pool: { connections: upstream.pool.connections, idleTimeoutMs: upstream.pool.idleTimeoutMs },
    health: { ejectAfterFailures: upstream.health.ejectAfterFailures, ejectForMs: upstream.health.ejectForMs },
  };
}

/** The form, and what the OpenResty data plane cannot do (the form is then incomplete: those parts match nobody). */
function build(document: RoutingDocument, version: number, options: NormalizeOptions): { form: NormalizedForm; issues: string[] } {
  const issues = new Issues();
  const storeValue = options.storeValue ? (key: string) => options.storeValue!(key) : () => undefined;
  const { identity, inputs: identityInputs } = normalizeIdentity(document, issues);
  const configIssues: string[] = [];
  const services: FormService[] = [];
  document.services.forEach((service, index) => {
    try {
      services.push(normalizeService(service, index, identityInputs, storeValue, issues));
    } catch (error) {
      if (error instanceof ConfigError) configIssues.push(...error.issues);
      else throw error;
    }
  });
  if (configIssues.length > 0) throw new ConfigError(configIssues);
  const upstreams: Record<string, FormUpstream> = {};
  for (const [name, upstream] of Object.entries(document.upstreams)) upstreams[name] = normalizeUpstream(upstream);
  const form: NormalizedForm = {
    format: FORM_FORMAT,
    version,
    ...(options.epoch !== undefined ? { epoch: options.epoch } : {}),
    upstreams,
    services,
    identity,
  };
  return { form, issues: issues.list };
}

/**
 * The normalized form of a validated routing document (see form.ts and docs/openresty.md).
 * Throws `ConfigError` with code `GG_OPENRESTY_UNSUPPORTED` naming every field the OpenResty data
 * plane cannot evaluate, and `ConfigError` (`GG_CONFIG_INVALID`) where the document does not
 * compile (e.g. a malformed `Grayscale_Range` value).
 */
export function normalizeRouting(document: RoutingDocument, version: number, options: NormalizeOptions = {}): NormalizedForm {
  const { form, issues } = build(document, version, options);
  if (issues.length > 0) throw new ConfigError(issues, { code: 'GG_OPENRESTY_UNSUPPORTED' });
  return form;
}

/**
 * `path: message` for every setting graygate's own Node listener or upstream client implements
 * and the OpenResty data plane leaves to nginx: there they are nginx's directives in the
 * nginx.conf that includes graygate's, so graygate refuses to pretend it applies them.
 */
export function openRestySettingsIssues(settings: Settings, document: RoutingDocument | undefined): string[] {
  const issues: string[] = [];
  const tls = settings.tls;
  if (tls !== undefined) {
    const { suites } = splitCiphers(tls.ciphers);
    if (tls.minVersion === 'TLSv1.3' && suites.length === 0) {
      issues.push('tls.ciphers: minVersion is TLSv1.3 but the list holds no TLS 1.3 suite (TLS_…), so nginx could complete no handshake');
    }
  }
  if (settings.proxyProtocol !== undefined) issues.push('proxyProtocol: on the OpenResty data plane nginx reads the PROXY header: use `listen … proxy_protocol` with set_real_ip_from and real_ip_header proxy_protocol, and remove proxyProtocol');
  for (const [name, upstream] of Object.entries(document?.upstreams ?? {})) {
    if (upstream.protocol !== 'http1') issues.push(`upstreams.${name}.protocol: ${upstream.protocol} is not supported by the OpenResty data plane yet (its balancer proxies HTTP/1.1); use the Node data plane for gRPC upstreams`);
    if (upstream.tls !== undefined) issues.push(`upstreams.${name}.tls: not supported by the OpenResty data plane yet (set proxy_ssl_trusted_certificate, proxy_ssl_name and proxy_ssl_certificate in nginx instead), or use the Node data plane`);
  }
  return issues;
}

/** `path: message` for every part of a validated document the OpenResty data plane cannot evaluate; empty when it can. */
export function openRestyIssues(document: RoutingDocument): string[] {
  // Store values change what a range holds, never whether Lua can evaluate it: checked without them.
  return build(document, 0, {}).issues;
}

/** The settings the Lua evaluator reads (trusted proxies, the version header). Throws `ConfigError` naming a trusted proxy that is not a CIDR. */
export function normalizeSettings(settings: Settings): NormalizedSettings {
  const issues: string[] = [];
  settings.trustedProxies.forEach((text, i) => {
    try {
      parseCidr(text);
    } catch (error) {
      issues.push(`trustedProxies[${i}]: ${(error as Error).message}`);
    }
  });
  if (issues.length > 0) throw new ConfigError(issues);
  const versionHeader = settings.proxy.versionHeader;
  return {
    format: SETTINGS_FORMAT,
    trustedProxies: cidrWords(settings.trustedProxies),
    ...(versionHeader !== undefined ? { versionHeader } : {}),
  };
}
