import fc from 'fast-check';
import { parseRoutingDocument, parseSettings } from '../../src/config/load.js';
import type { RoutingDocument, Settings } from '../../src/config/schema.js';
import { applyDecisionHeaders } from '../../src/dataplane/decision-headers.js';
import { AdapterRequestFacts } from '../../src/dataplane/request-facts.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileCidrList } from '../../src/rules/cidr.js';
import { compileRouting } from '../../src/rules/compile.js';
import type { RoutingSnapshot } from '../../src/rules/snapshot.js';

/**
 * The decision corpus: generated routing documents × generated requests, evaluated by graygate's
 * TypeScript evaluator exactly as the Node data plane runs it (AdapterRequestFacts, the identity
 * chain, compileRouting's decide, applyDecisionHeaders). Requests are raw bytes, as a socket
 * hands them over: Node reads header values as Latin-1; the Lua side gets the same bytes.
 */

// ---- documents -------------------------------------------------------------------------------

export const RANGE_KEY = 'Grayscale_Range';
const ANON = 'gg_anon';

const headerNames = ['x-user-id', 'x-beta', 'x-group', 'token'] as const;
const cookieNames = ['uid', 'beta', 'grp'] as const;
const queryNames = ['uid', 'beta', 'q', 'é'] as const;
const values = ['1', '42', 'beta', 'on', 'true', 'é', 'Ã©', '😀', 'a b', 'x'.repeat(40), 'alice', '', 'BETA', '007', '-5', '\ud800x'] as const;
const regexes = [
  '^beta$',
  'bet',
  '^[0-9]+$',
  '^\\d{2,}$',
  '^.$',
  '^..$',
  'a\\sb',
  '\\S+\\s*$',
  '^[^a-z]*$',
  '(?:on|true)$',
  '^(?<n>[a-z]+)-\\d',
  'é',
  '^\\u00e9',
  '\\x41|\\x61',
  '^$',
  '[\\w-]+',
  'a{2}',
  'x{,3}',
  '^[\\]a]+$',
  'beta(?=$)',
  '(?!on)^..',
  '[.]',
  '\\bon\\b',
  '\\v|\\t',
  // refused by normalize: never part of a form handed to Lua
  '(a)\\1',
  '(?<=a)b',
  '\\p{L}',
] as const;
const cidrs = ['10.0.0.0/8', '192.168.1.0/24', '::1', '2001:db8::/32', '::ffff:0:0/96', '0.0.0.0/0', '127.0.0.1', '::/0', '10.1.2.3'] as const;
const rangeValues = [undefined, '{"idStart":1,"idEnd":100}', '{"idStart":50,"idEnd":50}', '{"idStart":-10,"idEnd":5000}'] as const;

const userIdArb = fc.oneof(fc.integer({ min: -20, max: 300 }), fc.constantFrom('alice', 'émile', '😀', '007', 'bob', '42'));

const valueTest = fc.oneof(
  fc.constant({ present: true }),
  fc.constantFrom(...values).map((equals) => ({ equals })),
  fc.uniqueArray(fc.constantFrom(...values), { minLength: 1, maxLength: 4 }).map((oneOf) => ({ oneOf })),
  fc.constantFrom(...values.filter((v) => v.length > 0)).map((value) => ({ prefix: value.slice(0, 2) })),
  fc.constantFrom(...regexes).map((regex) => ({ regex })),
);

const strategyArb: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.tuple(fc.integer({ min: -20, max: 200 }), fc.integer({ min: 0, max: 150 })).map(([from, width]) => ({ uidRange: { from, to: from + width } })),
  fc.constant({ uidRange: { ranges: [{ from: 1, to: 10 }, { from: 40, to: 45 }, { from: 100, to: 250 }] } }),
  fc.constantFrom(undefined, 'inclusive', 'exclusive').map((rangeStart) => ({ uidRange: { fromKey: RANGE_KEY, ...(rangeStart ? { rangeStart } : {}) } })),
  fc.uniqueArray(userIdArb, { minLength: 1, maxLength: 6 }).map((ids) => ({ uidList: { ids } })),
  fc.tuple(fc.integer({ min: 2, max: 12 }), fc.array(fc.nat({ max: 11 }), { minLength: 1, maxLength: 4 })).map(([modulo, rs]) => ({
    uidModulo: { modulo, remainders: [...new Set(rs.map((r) => r % modulo))] },
  })),
  fc.tuple(fc.oneof(fc.integer({ min: 0, max: 10_000 }), fc.constantFrom(0, 10_000, 5_000)), fc.option(fc.constantFrom('a', 'exp2'), { nil: undefined })).map(
    ([cents, salt]) => ({ percentage: { percent: cents / 100, ...(salt ? { salt } : {}) } }),
  ),
  fc.tuple(fc.constantFrom(...headerNames), valueTest).map(([name, test]) => ({ header: { name, ...test } })),
  fc.tuple(fc.constantFrom(...cookieNames), valueTest).map(([name, test]) => ({ cookie: { name, ...test } })),
  fc.tuple(fc.constantFrom(...queryNames), valueTest).map(([name, test]) => ({ query: { name, ...test } })),
  fc.uniqueArray(fc.constantFrom(...cidrs), { minLength: 1, maxLength: 3 }).map((list) => ({ cidr: { cidrs: list } })),
  fc.constantFrom(
    { from: '2000-01-01T00:00:00Z', to: '2001-01-01T00:00:00Z' },
    { from: '2000-01-01T00:00:00Z' },
    { to: '2999-01-01T00:00:00+01:00' },
    { from: '2999-01-01T00:00:00Z' },
  ).map((window) => ({ timeWindow: window })),
);

const conditionArb: fc.Arbitrary<Record<string, unknown>> = fc.letrec<{ condition: Record<string, unknown> }>((tie) => ({
  condition: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    strategyArb,
    strategyArb,
    strategyArb,
    fc.array(tie('condition'), { minLength: 1, maxLength: 3 }).map((all) => ({ all })),
    fc.array(tie('condition'), { minLength: 1, maxLength: 3 }).map((any) => ({ any })),
    tie('condition').map((not) => ({ not })),
  ),
})).condition;

function ruleArb(targets: readonly string[]): fc.Arbitrary<Record<string, unknown>> {
  return fc.tuple(conditionArb, fc.constantFrom(...targets), fc.option(fc.constantFrom('beta-testers', 'staff'), { nil: undefined })).map(([condition, to, name]) => ({
    ...condition,
    to,
    ...(name ? { name } : {}),
  }));
}

/** Rule names are unique within a release: a generated name gets its position. */
const named = (rules: Record<string, unknown>[]) => rules.map((rule, i) => (rule.name ? { ...rule, name: `${String(rule.name)}-${i}` } : rule));

const releaseArb = fc.oneof(
  fc.tuple(fc.array(ruleArb(['candidate', 'stable', 'v2']), { maxLength: 4 }), fc.constantFrom('canary', 'canary', 'canary', 'idle', 'full'), fc.constantFrom('vary', 'private')).map(
    ([rules, state, cache]) => ({ candidate: 'v2', state, cache, rules: named(rules) }),
  ),
  fc
    .tuple(
      fc.array(ruleArb(['stable', 'v2', 'v3']), { maxLength: 3 }),
      fc.integer({ min: 0, max: 5_000 }),
      fc.integer({ min: 0, max: 5_000 }),
      fc.constantFrom('canary', 'canary', 'idle'),
      fc.constantFrom('vary', 'private'),
    )
    .map(([rules, a, b, state, cache]) => ({
      candidates: [
        { upstream: 'v2', weight: a / 100 },
        { upstream: 'v3', weight: b / 100 },
      ],
      state,
      cache,
      rules: named(rules),
    })),
);

const hostArb = fc.constantFrom(undefined, undefined, undefined, 'a.example.com', '*.example.com', 'example.com');
const prefixArb = fc.constantFrom('/', '/', '/api', '/api/v2', '/shop/');

const serviceArb = (name: string) =>
  fc.tuple(hostArb, prefixArb, fc.option(releaseArb, { nil: undefined, freq: 5 })).map(([host, pathPrefix, release]) => ({
    name,
    match: { ...(host ? { host } : {}), pathPrefix },
    stable: 'v1',
    ...(release ? { release } : {}),
  }));

const identitySourceArb = fc.constantFrom<Record<string, unknown>>(
  { header: { name: 'x-user-id' } },
  { header: { name: 'x-user-id', trustedProxiesOnly: true } },
  { cookie: { name: 'uid' } },
  { query: { name: 'uid' } },
  { clientIp: {} },
  { tokenLookup: {} },
  { tokenLookup: { header: 'x-session', keyTemplate: 'sess:{token}:uid', maxTokenLength: 8 } },
);

const identityArb = fc.tuple(
  fc.uniqueArray(identitySourceArb, { minLength: 1, maxLength: 3, selector: (s) => JSON.stringify(s) }),
  fc.option(fc.constantFrom<Record<string, unknown>>({}, { sameSite: 'None' }, { sameSite: 'Strict', maxAgeDays: 30 }, { enabled: false }), { nil: undefined }),
).map(([sources, anonymousCookie]) => ({ sources, ...(anonymousCookie ? { anonymousCookie: { name: ANON, ...anonymousCookie } } : {}) }));

export interface GeneratedDocument {
  readonly raw: unknown;
  readonly rangeValue: string | undefined;
  readonly settings: { trustedProxies: string[]; versionHeader?: string };
}

export const documentArb: fc.Arbitrary<GeneratedDocument> = fc
  .tuple(
    fc.integer({ min: 1, max: 3 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => serviceArb(`s${i}`)))),
    identityArb,
    fc.constantFrom(...rangeValues),
    fc.subarray(['127.0.0.1', '10.0.0.0/8', '::1']),
    fc.option(fc.constant('x-graygate-version'), { nil: undefined }),
  )
  .map(([services, identity, rangeValue, trustedProxies, versionHeader]) => ({
    raw: {
      upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] }, v3: { servers: ['http://[::1]:3'] } },
      services,
      identity,
    },
    rangeValue,
    settings: { trustedProxies, ...(versionHeader ? { versionHeader } : {}) },
  }));

/** The document and settings validated as graygate validates them; undefined when graygate would refuse the document. */
export function validated(generated: GeneratedDocument): { document: RoutingDocument; settings: Settings } | undefined {
  try {
    return { document: parseRoutingDocument(generated.raw), settings: parseSettings({
        trustedProxies: generated.settings.trustedProxies,
        proxy: generated.settings.versionHeader ? { versionHeader: generated.settings.versionHeader } : {},
      }),
    };
  } catch {
    return undefined;
  }
}

// ---- requests ----------------------------------------------------------------------------------

/** A request as bytes: header values and the query in Latin-1 strings (one character per byte). */
export interface GeneratedRequest {
  readonly path: string;
  readonly query: string | undefined;
  readonly headers: Record<string, string>;
  readonly peer: string;
  readonly tls: boolean;
  /** Headers the upstream answered with, to see Vary and Cache-Control merged. */
  readonly upstreamHeaders: Record<string, string>;
  /** The upstream that served (a candidate that fell back to stable). */
  readonly servedUpstream?: string;
}

const latin1 = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
const uuid = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';

const idValue = fc.oneof(
  fc.integer({ min: -20, max: 300 }).map(String),
  fc.constantFrom('alice', '007', 'bob', '7.0', ' 42', '-0', '1e3', '9007199254740993', '12345678901234567'),
  fc.constantFrom('émile', '😀', 'Ã©').map(latin1),
  fc.constant('\u00e9\u00ff\u0080'),
  fc.constant('u'.repeat(257)),
  fc.string({ unit: fc.constantFrom(...'ab1-_ é\t'.split('')), maxLength: 6 }).map((v) => v.trim()),
);
const headerValue = fc.oneof(fc.constantFrom(...values.filter((v) => !v.includes('\ud800'))).map(latin1), idValue);
const tokenValue = fc.constantFrom('abc', 'def', 'bad', 'sp', 'nope', 'a b', 'ab=c', 'x'.repeat(300), 'sess1', 'toolongtoken');
const ipText = fc.constantFrom('10.1.2.3', '192.168.1.7', '::1', '2001:db8::5', '8.8.8.8', '::ffff:10.0.0.9', 'garbage', '010.1.1.1', '1.2.3.4%eth0', 'fe80::1%eth0', '127.0.0.1', '');
const xffArb = fc.tuple(fc.array(ipText, { minLength: 1, maxLength: 4 }), fc.constantFrom(', ', ',', ' , ')).map(([ips, separator]) => ips.join(separator));

const cookiePair = fc.oneof(
  fc.tuple(fc.constantFrom(...cookieNames, ANON), headerValue).map(([n, v]) => `${n}=${v.replace(/[;]/g, '')}`),
  fc.constantFrom(`${ANON}=${uuid}`, `${ANON}=${uuid.toUpperCase()}`, `${ANON}="${uuid}"`, 'uid="42"', ' uid = 7 ', '=x', 'noeq', 'uid=', `uid=${'9'.repeat(300)}`),
);
const cookieHeader = fc.array(cookiePair, { minLength: 1, maxLength: 4 }).map((pairs) => pairs.join('; '));

const queryPart = fc.oneof(
  fc.tuple(fc.constantFrom('uid', 'beta', 'q', '%C3%A9', 'u%69d', 'uid+'), fc.oneof(headerValue.map((v) => encodeURIComponent(v).replace(/%20/g, '+')), idValue)).map(([n, v]) => `${n}=${v}`),
  fc.constantFrom('uid=%FF', 'uid=%C3', 'uid=%E2%82', 'uid=%zz', 'uid=a%2', 'uid', 'uid=%F0%9F%98%80', 'beta=on&beta=off', 'q=a+b', latin1('uid=é'), '&&', 'uid=%ED%A0%80'),
);
const queryArb = fc.option(fc.array(queryPart, { minLength: 1, maxLength: 3 }).map((parts) => parts.join('&')), { nil: undefined, freq: 2 });

export const requestArb: fc.Arbitrary<GeneratedRequest> = fc
  .record({
    host: fc.constantFrom('a.example.com', 'a.example.com', 'example.com', 'b.example.com', 'x.a.example.com', 'other.org', 'A.Example.COM:8080', '[::1]:80', ''),
    path: fc.constantFrom('/', '/api', '/api/', '/api/v2/x', '/apix', '/shop', '/shop/cart', '/x', '/api/v2'),
    query: queryArb,
    userId: fc.option(idValue, { nil: undefined }),
    token: fc.option(tokenValue, { nil: undefined }),
    session: fc.option(tokenValue, { nil: undefined }),
    others: fc.dictionary(fc.constantFrom('x-beta', 'x-group'), headerValue, { maxKeys: 2 }),
    cookie: fc.option(cookieHeader, { nil: undefined }),
    xff: fc.option(xffArb, { nil: undefined }),
    proto: fc.option(fc.constantFrom('https', 'http', 'HTTPS , http', ' https'), { nil: undefined }),
    peer: fc.constantFrom('127.0.0.1', '10.1.2.3', '::1', '192.168.1.7', '::ffff:10.0.0.9', '2001:db8::5', '8.8.4.4'),
    tls: fc.boolean(),
    upstreamVary: fc.option(fc.constantFrom('Accept-Encoding', 'Origin, Accept'), { nil: undefined }),
    upstreamCacheControl: fc.option(fc.constantFrom('public, max-age=60', 's-maxage=10, no-transform', 'private="x, y", max-age=5', 'no-store'), { nil: undefined }),
    fellBack: fc.boolean(),
  })
  .map((r) => {
    const headers: Record<string, string> = {};
    if (r.host !== '') headers.host = r.host;
    if (r.userId !== undefined) headers['x-user-id'] = r.userId;
    if (r.token !== undefined) headers.token = r.token;
    if (r.session !== undefined) headers['x-session'] = r.session;
    Object.assign(headers, r.others);
    if (r.cookie !== undefined) headers.cookie = r.cookie;
    if (r.xff !== undefined) headers['x-forwarded-for'] = r.xff;
    if (r.proto !== undefined) headers['x-forwarded-proto'] = r.proto;
    const upstreamHeaders: Record<string, string> = {};
    if (r.upstreamVary) upstreamHeaders.vary = r.upstreamVary;
    if (r.upstreamCacheControl) upstreamHeaders['cache-control'] = r.upstreamCacheControl;
    return { path: r.path, query: r.query, headers, peer: r.peer, tls: r.tls, upstreamHeaders, ...(r.fellBack ? { servedUpstream: 'v1' } : {}) };
  });

/** Stored token → user id values the tokenLookup sources read (key as the template builds it). */
export const TOKENS: Record<string, string> = {
  TOKEN_abc: '1234',
  TOKEN_def: 'alice',
  TOKEN_bad: '007',
  TOKEN_sp: 'a b',
  'TOKEN_ab=c': '42',
  'sess:sess1:uid': '77',
};

// ---- the TypeScript side ------------------------------------------------------------------------

/** RequestFacts as the Node adapter builds them, over a generated request (the one part node:http does: Latin-1 header strings). */
class CorpusFacts extends AdapterRequestFacts<GeneratedRequest> {
  readonly method = 'GET';
  readonly isTls: boolean;
  constructor(request: GeneratedRequest, peerIp: string, isTrusted: (ip: string) => boolean) {
    super(request, peerIp, isTrusted);
    this.isTls = request.tls;
  }
  get path(): string {
    return this.request.path;
  }
  header(name: string): string | undefined {
    return this.request.headers[name];
  }
  protected rawQuery(): string {
    return this.request.query ?? '';
  }
}

const unwrapMapped = (ip: string) => (ip.length > 7 && ip.startsWith('::ffff:') && ip.includes('.', 7) ? ip.slice(7) : ip);

export interface TsEvaluator {
  readonly snapshot: RoutingSnapshot;
  /**
   * The outcome of one request. `replay` evaluates it again as the caller returning with an
   * anonymous id minted elsewhere (its cookie added), the response still handing it out.
   */
  evaluate(request: GeneratedRequest, replay?: { cookie: string; minted: string }): Promise<Outcome | { none: true }>;
}

/** What both sides report for one request. */
export interface Outcome {
  service: string;
  version: string;
  upstream: string;
  candidate: string | null;
  reason: string;
  dependsOnCaller: boolean;
  vary: string | null;
  private: boolean;
  userId: string | null;
  identitySource: string | null;
  setCookie: string | null;
  headers: Record<string, string | string[]>;
}

/** graygate's own evaluator for one document: compileRouting with the real identity chain (token lookups answered from TOKENS). */
export function tsEvaluator(document: RoutingDocument, settings: Settings, rangeValue: string | undefined): TsEvaluator {
  const compileIdentity = identityCompiler({ context: { readKey: async (key) => TOKENS[key] } });
  const snapshot = compileRouting(document, 1, { storeValue: (key) => (key === RANGE_KEY ? rangeValue : undefined), identity: compileIdentity });
  const isTrusted = settings.trustedProxies.length > 0 ? compileCidrList(settings.trustedProxies) : () => false;
  const versionHeader = settings.proxy.versionHeader;
  return {
    snapshot,
    async evaluate(request, replay) {
      const given =
        replay === undefined ? request : { ...request, headers: { ...request.headers, cookie: request.headers.cookie ? `${replay.cookie}; ${request.headers.cookie}` : replay.cookie } };
      const facts = new CorpusFacts(given, unwrapMapped(request.peer), isTrusted);
      const service = snapshot.matchService(facts.host, facts.path);
      if (service === undefined) return { none: true };
      if (service.needsIdentity) await service.resolveIdentity(facts);
      const decision = service.decide(facts);
      if (replay !== undefined) facts.mintedAnonymousCookie = replay.minted;
      const headers: Record<string, string | string[]> = { ...request.upstreamHeaders };
      applyDecisionHeaders(headers, decision, facts, versionHeader, request.servedUpstream ?? decision.upstream);
      return {
        service: decision.service,
        version: decision.version,
        upstream: decision.upstream,
        candidate: decision.candidate ?? null,
        reason: decision.reason,
        dependsOnCaller: decision.dependsOnCaller,
        vary: decision.vary ?? null,
        private: decision.cachePrivate,
        userId: facts.userId ?? null,
        identitySource: facts.identitySource ?? null,
        setCookie: facts.mintedAnonymousCookie ?? null,
        headers,
      };
    },
  };
}
