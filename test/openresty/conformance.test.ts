import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { normalizeRouting, normalizeSettings, openRestyIssues } from '../../src/openresty/normalize.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { documentArb, RANGE_KEY, requestArb, TOKENS, tsEvaluator, validated, type GeneratedRequest, type Outcome } from './corpus.js';

/**
 * Conformance: generated routing documents × generated requests, decided by graygate's TypeScript
 * evaluator and by openresty/graygate/decide.lua inside a real nginx (a test-only location that
 * compiles each normalized form once and answers a batch of requests), must agree on every case:
 * service, version, upstream, the rule that decided, Vary / private, the identity, the anonymous
 * cookie and the response headers.
 */

let nginx: Nginx;
beforeAll(async () => {
  nginx = await startNginx({
    http: ([port]) => `
  client_max_body_size 64m; client_body_buffer_size 64m;
  server { listen 127.0.0.1:${port};
    location = /decide { content_by_lua_block { require("gg_test_harness").decide() } } }`,
  });
});
afterAll(() => nginx?.stop());

const b64 = (latin1: string) => Buffer.from(latin1, 'latin1').toString('base64');

function wireCase(request: GeneratedRequest) {
  return {
    path: request.path,
    ...(request.query !== undefined ? { args: b64(request.query) } : {}),
    headers: Object.fromEntries(Object.entries(request.headers).map(([name, value]) => [name, b64(value)])),
    peer: request.peer,
    tls: request.tls,
    upstreamHeaders: request.upstreamHeaders,
    ...(request.servedUpstream !== undefined ? { servedUpstream: request.servedUpstream } : {}),
  };
}

type LuaOutcome = (Omit<Outcome, 'headers'> & { headers: Record<string, string | string[]>; stableUpstream: string }) | { none: true };

async function luaDecide(groups: unknown[]): Promise<LuaOutcome[][]> {
  const response = await fetch(`${nginx.url}/decide`, { method: 'POST', body: JSON.stringify(groups), headers: { 'content-type': 'application/json' } });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`the harness answered ${response.status}: ${text}\n${nginx.output().slice(-4000)}`);
  return JSON.parse(text) as LuaOutcome[][];
}

const ANON_ID = /^gg_anon=([0-9a-f-]{36})(;.*)$/;

/** Counts of what the corpus exercised, so a generator that stopped reaching a path fails the run. */
const seen = { cases: 0, documents: 0, refused: 0, minted: 0, split: 0, rules: 0, candidate: 0, noService: 0, identified: 0, tokens: 0 };

const groupArb = fc.tuple(documentArb, fc.array(requestArb, { minLength: 10, maxLength: 30 }));

describe('conformance: decide.lua against the TypeScript evaluator', () => {
  it('agrees on every generated document × request', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(groupArb, { minLength: 15, maxLength: 15 }), async (groups) => {
        const prepared = [];
        for (const [generated, requests] of groups) {
          const valid = validated(generated);
          if (valid === undefined) continue;
          let form;
          try {
            form = normalizeRouting(valid.document, 7, { storeValue: (key) => (key === RANGE_KEY ? generated.rangeValue : undefined) });
          } catch (error) {
            // A document Lua cannot evaluate exactly is refused whole, with the field named; never half-evaluated.
            expect(error).toBeInstanceOf(ConfigError);
            expect((error as ConfigError).code).toBe('GG_OPENRESTY_UNSUPPORTED');
            expect(openRestyIssues(valid.document).length).toBeGreaterThan(0);
            seen.refused++;
            continue;
          }
          expect(openRestyIssues(valid.document)).toEqual([]);
          const settings = normalizeSettings(valid.settings);
          // The form is what goes over the wire: JSON, nothing else.
          const wireForm = JSON.parse(JSON.stringify(form));
          prepared.push({ ts: tsEvaluator(valid.document, valid.settings, generated.rangeValue), requests, group: { form: wireForm, settings, tokens: TOKENS, cases: requests.map(wireCase) } });
        }
        if (prepared.length === 0) return;
        const lua = await luaDecide(prepared.map((p) => p.group));
        for (let g = 0; g < prepared.length; g++) {
          const { ts, requests } = prepared[g]!;
          seen.documents++;
          for (let i = 0; i < requests.length; i++) {
            const request = requests[i]!;
            const theirs = lua[g]![i]!;
            let ours = await ts.evaluate(request);
            const where = JSON.stringify({ document: prepared[g]!.group.form, request });
            seen.cases++;
            if ('none' in ours || 'none' in theirs) {
              expect(theirs, where).toEqual(ours);
              seen.noService++;
              continue;
            }
            const { stableUpstream, ...luaOutcome } = theirs;
            expect(stableUpstream, where).toBe(ts.snapshot.document.services.find((service) => service.name === (ours as Outcome).service)?.stable);
            if (ours.setCookie !== null || luaOutcome.setCookie !== null) {
              // A minted id is random on each side: both mint, with the same cookie attributes; then
              // the caller returning with Lua's id must get Lua's answer from graygate.
              const tsMint = ANON_ID.exec(ours.setCookie ?? '');
              const luaMint = ANON_ID.exec(luaOutcome.setCookie ?? '');
              expect(luaMint, where).not.toBeNull();
              expect(tsMint, where).not.toBeNull();
              expect(luaMint![2], where).toBe(tsMint![2]);
              ours = (await ts.evaluate(request, { cookie: `gg_anon=${luaMint![1]}`, minted: luaOutcome.setCookie! })) as Outcome;
              seen.minted++;
            }
            expect(luaOutcome, where).toEqual({ ...ours, setCookie: luaOutcome.setCookie });
            if (ours.reason === 'split') seen.split++;
            if (ours.reason.startsWith('rule') || ours.reason.startsWith('beta-testers') || ours.reason.startsWith('staff')) seen.rules++;
            if (ours.version === 'candidate') seen.candidate++;
            if (ours.userId !== null) seen.identified++;
            if (ours.identitySource?.startsWith('tokenLookup') === true) seen.tokens++;
          }
        }
      }),
      // Each failure names its document and request; shrinking batches of fifteen documents would take minutes per step.
      { numRuns: 12, endOnFailure: true },
    );
    // The corpus reached every path it is meant to: a generator that drifted would pass vacuously.
    // (Refusals are random here; normalize.test.ts pins them.)
    expect(seen.cases).toBeGreaterThan(1_500);
    for (const key of ['minted', 'split', 'rules', 'candidate', 'noService', 'identified', 'tokens'] as const) expect(seen[key], key).toBeGreaterThan(0);
  });

  it.each([
    ['uidModulo', { uidModulo: { modulo: 2, remainders: [0] } }],
    ['percentage (the bucket of an id is remembered too)', { percentage: { percent: 50 } }],
  ])('answers an id seen before as it did the first time, also past the per-worker memory of id checks: %s', async (_, rule) => {
    // decide.lua remembers per worker what an id (and a short header value) was found to be, up to
    // 4096 values per check, then starts afresh: 5000 distinct ids, twice, cross that bound, so
    // the second pass is answered partly from memory and partly by a new scan.
    const document = validated({
      raw: {
        upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
        services: [{ name: 'checkout', stable: 'v1', release: { candidate: 'v2', rules: [rule] } }],
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
      },
      rangeValue: undefined,
      settings: { trustedProxies: [] },
    })!;
    // Canonical numbers (even ones go to the candidate), numbers with a leading zero (not numbers
    // for the rules), and Latin-1 ids (widened to UTF-8).
    const ids = Array.from({ length: 5000 }, (_, i) => (i % 3 === 0 ? String(i) : i % 3 === 1 ? `0${i}` : Buffer.from(`é${i}`, 'utf8').toString('latin1')));
    const requests: GeneratedRequest[] = [...ids, ...ids].map((id) => ({ path: '/', query: undefined, headers: { host: 'x', 'x-user-id': id }, peer: '127.0.0.1', tls: false, upstreamHeaders: {} }));
    const [lua] = await luaDecide([{ form: normalizeRouting(document.document, 1), settings: normalizeSettings(document.settings), tokens: {}, cases: requests.map(wireCase) }]);
    const ts = tsEvaluator(document.document, document.settings, undefined);
    let candidates = 0;
    for (let i = 0; i < requests.length; i++) {
      const ours = (await ts.evaluate(requests[i]!)) as Outcome;
      const theirs = lua![i] as Outcome;
      expect({ version: theirs.version, userId: theirs.userId }, `case ${i}: ${JSON.stringify(requests[i]!.headers)}`).toEqual({ version: ours.version, userId: ours.userId });
      if (ours.version === 'candidate') candidates++;
    }
    // Both answers occur: the check cannot pass by routing everything one way.
    expect(candidates).toBeGreaterThan(1000);
    expect(candidates).toBeLessThan(requests.length - 1000);
  });

  it('puts the golden bucket vectors exactly at the cut: in at bucket + 1, out at bucket', async () => {
    // Golden buckets of the release seed "checkout" (src/rules/hash.ts pins them too).
    const golden: Record<string, number> = { '1': 4145, '7': 4448, '42': 5473, alice: 9565, 'user-1000': 3352, 'émile': 449, '😀': 8372 };
    const groups = [];
    const expected: string[][] = [];
    for (const [id, bucket] of Object.entries(golden)) {
      for (const cut of [bucket, bucket + 1]) {
        const document = validated({
          raw: {
            upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
            services: [{ name: 'checkout', stable: 'v1', release: { candidate: 'v2', rules: [{ percentage: { percent: cut / 100 } }] } }],
            identity: { sources: [{ query: { name: 'uid' } }] },
          },
          rangeValue: undefined,
          settings: { trustedProxies: [] },
        })!;
        const request: GeneratedRequest = { path: '/', query: `uid=${encodeURIComponent(id)}`, headers: { host: 'x' }, peer: '127.0.0.1', tls: false, upstreamHeaders: {} };
        groups.push({ form: normalizeRouting(document.document, 1), settings: normalizeSettings(document.settings), tokens: {}, cases: [wireCase(request)] });
        expected.push([cut > bucket ? 'candidate' : 'stable', ((await tsEvaluator(document.document, document.settings, undefined).evaluate(request)) as Outcome).version]);
      }
    }
    const lua = await luaDecide(groups);
    lua.forEach(([outcome], i) => {
      const [want, ts] = expected[i]!;
      expect(ts, `golden ${i}`).toBe(want);
      expect((outcome as Outcome).version, `golden ${i}`).toBe(want);
    });
  });
  // decide.lua runs a service's rules as generated straight-line code in blocks (nested past 24
  // rules), and IPv4 networks as sets per prefix length (IPv6 networks that admit IPv4-mapped
  // addresses joined to them), with each address's answer remembered per list: long rule lists
  // and CIDR lists of mixed prefix lengths must still decide exactly as graygate does, in order.
  const octet = fc.constantFrom(0, 1, 10, 127, 128, 192, 255);
  const v4Arb = fc.tuple(octet, octet, octet, octet).map((parts) => parts.join('.'));
  const v4CidrArb = fc.tuple(octet, octet, octet, octet, fc.constantFrom(0, 1, 8, 9, 12, 16, 24, 31, 32)).map(([a, b, c, d, prefix]) => {
    const value = (((a << 24) | (b << 16) | (c << 8) | d) >>> 0) & (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);
    return `${[value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.')}/${prefix}`;
  });
  const v6CidrArb = fc.constantFrom('::/0', '::/64', '::ffff:0:0/96', '::ffff:10.0.0.0/104', '::fffe:0:0/95', '2001:db8::/32', '2001:db8:1::/48', '::1', 'fe80::/10', '0:0:0:0:0:ffff:7f00:1/128');
  const peerArb = fc.oneof(v4Arb, v4Arb.map((ip) => `::ffff:${ip}`), fc.constantFrom('::1', '2001:db8::5', '2001:db8:1::9', 'fe80::1', '::ffff:7f00:1', '::2'));
  const flag = fc.integer({ min: 0, max: 9 }).map((i) => `x-flag-${i}`);
  const longRuleArb = fc.oneof(
    fc.tuple(flag, fc.constantFrom('a', 'b')).map(([name, equals]) => ({ header: { name, equals } })),
    fc.uniqueArray(fc.oneof(v4CidrArb, v4CidrArb, v6CidrArb), { minLength: 1, maxLength: 30 }).map((cidrs) => ({ cidr: { cidrs } })),
    fc.tuple(flag, fc.uniqueArray(fc.oneof(v4CidrArb, v6CidrArb), { minLength: 1, maxLength: 8 })).map(([name, cidrs]) => ({ all: [{ header: { name, present: true } }, { cidr: { cidrs } }] })),
  );
  // Rules that seldom match (narrow networks), so that a list's later rules get to decide too.
  const narrowRuleArb = fc.oneof(
    fc.tuple(flag, fc.constantFrom('a', 'd', 'd', 'd')).map(([name, equals]) => ({ header: { name, equals } })),
    fc.uniqueArray(fc.oneof(v4CidrArb.filter((c) => Number(c.split('/')[1]) >= 24), fc.constantFrom('2001:db8:1::/48', '::1', '::ffff:10.0.0.0/120')), { minLength: 1, maxLength: 30, size: 'max' }).map((cidrs) => ({ cidr: { cidrs } })),
  );
  const longRulesArb = fc.tuple(fc.array(narrowRuleArb, { maxLength: 60, size: 'max' }), fc.array(longRuleArb, { minLength: 1, maxLength: 20 })).map(([narrow, any]) => [...narrow, ...any]);
  const longCaseArb = fc.record({ peer: peerArb, flags: fc.dictionary(flag, fc.constantFrom('a', 'b', 'c'), { maxKeys: 3 }) });

  it('decides long rule lists and CIDR lists of mixed prefix lengths in order, as graygate does', async () => {
    let matchedLate = 0;
    let decided = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(longRulesArb, fc.array(longCaseArb, { minLength: 20, maxLength: 40 })), { minLength: 4, maxLength: 4 }), async (generated) => {
        const prepared = [];
        for (const [rules, cases] of generated) {
          const document = validated({
            raw: {
              upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
              services: [{ name: 'app', stable: 'v1', release: { candidate: 'v2', rules: rules.map((rule, i) => ({ name: `r${i}`, ...(i % 2 === 1 ? { to: 'stable' } : {}), ...rule })) } }],
            },
            rangeValue: undefined,
            settings: { trustedProxies: [] },
          });
          expect(document, JSON.stringify(rules)).toBeDefined();
          const requests: GeneratedRequest[] = cases.map((c) => ({ path: '/', query: undefined, headers: { host: 'x', ...c.flags }, peer: c.peer, tls: false, upstreamHeaders: {} }));
          prepared.push({ document: document!, requests, group: { form: normalizeRouting(document!.document, 1), settings: normalizeSettings(document!.settings), tokens: {}, cases: requests.map(wireCase) } });
        }
        const lua = await luaDecide(prepared.map((p) => p.group));
        for (let g = 0; g < prepared.length; g++) {
          const { document, requests } = prepared[g]!;
          const ts = tsEvaluator(document.document, document.settings, undefined);
          for (let i = 0; i < requests.length; i++) {
            const ours = (await ts.evaluate(requests[i]!)) as Outcome;
            const theirs = lua[g]![i] as Outcome;
            expect({ reason: theirs.reason, version: theirs.version }, JSON.stringify({ rules: document.document.services[0]!.release, request: requests[i] })).toEqual({ reason: ours.reason, version: ours.version });
            if (ours.reason.startsWith('r')) decided++;
            if (/^r(2[4-9]|[3-9]\d)$/.test(ours.reason)) matchedLate++;
          }
        }
      }),
      { numRuns: 10, endOnFailure: true },
    );
    // Rules past the first block of 24 decided some requests: the chained blocks were exercised.
    expect(matchedLate).toBeGreaterThan(0);
    expect(decided).toBeGreaterThan(100);
  });

  it('decides by the right rule in a list longer than a block of blocks (700 rules)', async () => {
    // 700 rules are chained in three levels (24 rules a block, 24 blocks a chain).
    const rules = Array.from({ length: 700 }, (_, i) => ({ name: `r${i}`, ...(i % 3 === 0 ? { to: 'stable' } : {}), header: { name: `x-flag-${i % 10}`, equals: `v${i}` } }));
    const document = validated({
      raw: { upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } }, services: [{ name: 'app', stable: 'v1', release: { candidate: 'v2', rules } }] },
      rangeValue: undefined,
      settings: { trustedProxies: [] },
    })!;
    const picks = [0, 1, 23, 24, 25, 575, 576, 577, 600, 699, 700, 5000];
    const request = (headers: Record<string, string>): GeneratedRequest => ({ path: '/', query: undefined, headers: { host: 'x', ...headers }, peer: '127.0.0.1', tls: false, upstreamHeaders: {} });
    // Each pick's header matches only rule `r<pick>`; the last request matches r13 and r600: the earlier decides.
    const requests = [...picks.map((i) => request({ [`x-flag-${i % 10}`]: `v${i}` })), request({ 'x-flag-0': 'v600', 'x-flag-3': 'v13' })];
    const [lua] = await luaDecide([{ form: normalizeRouting(document.document, 1), settings: normalizeSettings(document.settings), tokens: {}, cases: requests.map(wireCase) }]);
    const ts = tsEvaluator(document.document, document.settings, undefined);
    const reasons = [];
    for (let i = 0; i < requests.length; i++) {
      const ours = (await ts.evaluate(requests[i]!)) as Outcome;
      expect((lua![i] as Outcome).reason, `request ${i}`).toBe(ours.reason);
      expect((lua![i] as Outcome).version, `request ${i}`).toBe(ours.version);
      reasons.push(ours.reason);
    }
    expect(reasons).toEqual(['r0', 'r1', 'r23', 'r24', 'r25', 'r575', 'r576', 'r577', 'r600', 'r699', 'no rule matched', 'no rule matched', 'r13']);
  });

  it('answers an address seen before as it did the first time, also past the per-list memory of addresses', async () => {
    // 5000 distinct peers, twice, cross the 4096 addresses a CIDR list remembers.
    const document = validated({
      raw: {
        upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
        services: [{ name: 'app', stable: 'v1', release: { candidate: 'v2', rules: [{ cidr: { cidrs: ['10.0.0.0/20', '10.0.32.0/19', '::ffff:10.0.64.0/116', '2001:db8::/112'] } }] } }],
      },
      rangeValue: undefined,
      settings: { trustedProxies: [] },
    })!;
    const peers = Array.from({ length: 5000 }, (_, i) => (i % 4 === 3 ? `2001:db8::${(i * 7).toString(16)}` : `10.0.${(i * 13) % 256}.${i % 256}`));
    const requests: GeneratedRequest[] = [...peers, ...peers].map((peer) => ({ path: '/', query: undefined, headers: { host: 'x' }, peer, tls: false, upstreamHeaders: {} }));
    const [lua] = await luaDecide([{ form: normalizeRouting(document.document, 1), settings: normalizeSettings(document.settings), tokens: {}, cases: requests.map(wireCase) }]);
    const ts = tsEvaluator(document.document, document.settings, undefined);
    let candidates = 0;
    for (let i = 0; i < requests.length; i++) {
      const ours = (await ts.evaluate(requests[i]!)) as Outcome;
      expect((lua![i] as Outcome).version, `case ${i}: ${requests[i]!.peer}`).toBe(ours.version);
      if (ours.version === 'candidate') candidates++;
    }
    expect(candidates).toBeGreaterThan(1000);
    expect(candidates).toBeLessThan(requests.length - 1000);
  });
});
