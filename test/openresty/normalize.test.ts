import { describe, expect, it } from 'vitest';
import { parseRoutingDocument, parseSettings } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { deriveSeed } from '../../src/rules/hash.js';
import { SPLIT_SALT } from '../../src/rules/split.js';
import { FORM_FORMAT, normalizeRouting, normalizeSettings, openRestyIssues } from '../../src/openresty/normalize.js';

const upstreams = { v1: { servers: ['http://127.0.0.1:8081'] }, v2: { servers: ['https://[::1]'] }, v3: { servers: ['http://10.0.0.3:9000'] } };

function document(release: unknown, identity: unknown = { sources: [{ header: { name: 'x-user-id' } }] }) {
  return parseRoutingDocument({ upstreams, services: [{ name: 'checkout', match: { pathPrefix: '/shop/' }, stable: 'v1', release }], identity });
}

describe('normalizeRouting', () => {
  it('writes plain JSON with the format, version and epoch, and no null anywhere', () => {
    const form = normalizeRouting(document({ candidate: 'v2', rules: [{ percentage: { percent: 12.34 } }] }), 9, { epoch: 'e1' });
    expect(JSON.parse(JSON.stringify(form))).toEqual(form);
    expect(JSON.stringify(form)).not.toMatch(/null/);
    expect(form).toMatchObject({ format: FORM_FORMAT, version: 9, epoch: 'e1' });
    expect(form.upstreams.v2!.servers).toEqual([{ origin: 'https://[::1]', scheme: 'https', host: '::1', port: 443 }]);
    expect(form.upstreams.v1!.timeouts).toEqual({ connectMs: 2000, responseHeadersMs: 30000, idleMs: 60000 });
    expect(form.services[0]).toMatchObject({ name: 'checkout', pathPrefix: '/shop', stable: 'v1', candidates: ['v2'], needsIdentity: true });
  });

  it('fixes the percentage cut and seed (the golden seed of "checkout"), as int32', () => {
    const form = normalizeRouting(document({ candidate: 'v2', rules: [{ percentage: { percent: 12.34 } }, { percentage: { percent: 100, salt: 'b' } }, { percentage: { percent: 0 } }] }), 1);
    const rules = form.services[0]!.rules;
    expect(rules[0]!.when).toEqual({ kind: 'percentage', cut: 1234, seed: 1141725143 });
    expect(rules[1]!.when).toEqual({ kind: 'percentage', cut: 10_000, seed: deriveSeed('checkout', 'b') | 0 });
    expect(rules[2]!.when).toEqual({ kind: 'never' });
    expect(rules[0]!.decision).toEqual({ version: 'candidate', upstream: 'v2', reason: 'rule 1', dependsOnCaller: true, vary: 'x-user-id', private: false });
  });

  it('reads the seed\'s range from the store value, exclusive start applied; an absent key matches nobody; a malformed one is refused at its path', () => {
    const doc = document({ candidate: 'v2', rules: [{ uidRange: { fromKey: 'Grayscale_Range', rangeStart: 'exclusive' } }] });
    const form = normalizeRouting(doc, 1, { storeValue: () => '{"idStart":1,"idEnd":5000}' });
    expect(form.services[0]!.rules[0]!.when).toEqual({ kind: 'uidRange', from: [2], to: [5000] });
    expect(normalizeRouting(doc, 1).services[0]!.rules[0]!.when).toEqual({ kind: 'never' });
    expect(() => normalizeRouting(doc, 1, { storeValue: () => '{"idStart":"a"}' })).toThrow(/services\[0\]\.release\.rules\[0\]\.uidRange\.fromKey: store key "Grayscale_Range"/);
  });

  it('lays out the A/B/n split and its decisions, with cache: private', () => {
    const form = normalizeRouting(
      document({ candidates: [{ upstream: 'v2', weight: 10 }, { upstream: 'v3', weight: 0 }], cache: 'private', rules: [{ header: { name: 'x-beta', present: true }, to: 'v3' }] }),
      1,
    );
    const service = form.services[0]!;
    expect(service.split).toMatchObject({ seed: deriveSeed('checkout', SPLIT_SALT) | 0, from: [0], to: [1000] });
    expect(service.split!.decisions).toEqual([{ version: 'candidate', upstream: 'v2', reason: 'split', dependsOnCaller: true, private: true }]);
    expect(service.rules[0]!.decision).toMatchObject({ upstream: 'v3', private: true });
    expect(service.noMatch).toMatchObject({ version: 'stable', reason: 'no rule matched', private: true });
  });

  it('fixes idle and full releases to one decision', () => {
    expect(normalizeRouting(document({ candidate: 'v2', state: 'idle', rules: [] }), 1).services[0]!.fixed).toMatchObject({ version: 'stable', reason: 'idle' });
    expect(normalizeRouting(document({ candidate: 'v2', state: 'full', rules: [] }), 1).services[0]!.fixed).toMatchObject({ version: 'candidate', upstream: 'v2', reason: 'full' });
  });

  it('turns CIDRs into int32 words and keeps header and cookie values comparable', () => {
    const form = normalizeRouting(
      document({
        candidate: 'v2',
        rules: [{ cidr: { cidrs: ['10.0.0.0/8', '2001:db8::/32'] } }, { cookie: { name: 'b', oneOf: ['x', '\ud800'] } }, { header: { name: 'x-beta', equals: '\udc00' } }],
      }),
      1,
    );
    const [cidr, cookie, header] = form.services[0]!.rules.map((rule) => rule.when);
    expect(cidr).toEqual({ kind: 'cidr', v4: [0x0a000000, -16777216], v6: [0x20010db8, 0, 0, 0, -1, 0, 0, 0] });
    // No request value can hold a lone surrogate: such values never match, and are left out.
    expect(cookie).toEqual({ kind: 'cookie', name: 'b', oneOf: ['x'] });
    expect(header).toEqual({ kind: 'never' });
  });

  it('writes identity sources with their labels and the anonymous cookie as identity/anonymous.ts sets it', () => {
    const form = normalizeRouting(
      document({ candidate: 'v2', rules: [{ percentage: { percent: 5 } }] }, {
        sources: [{ tokenLookup: { keyTemplate: 'sess:{token}:uid' } }, { clientIp: {} }],
        anonymousCookie: { sameSite: 'None', maxAgeDays: 2 },
      }),
      1,
    );
    expect(form.identity.sources[0]).toMatchObject({ kind: 'tokenLookup', label: 'tokenLookup:token', header: 'token', keyPrefix: 'sess:', keySuffix: ':uid', deadlineMs: 50 });
    expect(form.identity.sources[1]).toEqual({ kind: 'clientIp', label: 'clientIp' });
    expect(form.identity.anonymousCookie).toEqual({
      name: 'gg_anon',
      plainSuffix: '; Path=/; Max-Age=172800; SameSite=None; HttpOnly; Secure',
      secureSuffix: '; Path=/; Max-Age=172800; SameSite=None; HttpOnly; Secure',
    });
  });

  it('refuses what Lua cannot evaluate exactly, naming every field, and says nothing of the rest', () => {
    const doc = document(
      { candidate: 'v2', rules: [{ header: { name: 'x-beta', regex: '^on$' } }, { any: [{ query: { name: 'q', regex: '(?<=a)b' } }, { header: { name: 'x_grp', present: true } }] }] },
      { sources: [{ jwt: { secret: '0123456789abcdef0123456789abcdef' } }, { header: { name: 'x-user-id' } }] },
    );
    const issues = openRestyIssues(doc);
    expect(issues).toHaveLength(3);
    expect(issues[0]).toMatch(/^identity\.sources\[0\]\.jwt: JWT identity is not available on the OpenResty data plane/);
    expect(issues[1]).toMatch(/^services\[0\]\.release\.rules\[1\]\.any\[0\]\.query\.regex: the pattern uses lookbehind/);
    expect(issues[2]).toMatch(/^services\[0\]\.release\.rules\[1\]\.any\[1\]\.header\.name: header name "x_grp" holds "_"/);
    let error: unknown;
    try {
      normalizeRouting(doc, 1);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).code).toBe('GG_OPENRESTY_UNSUPPORTED');
    expect((error as ConfigError).issues).toEqual(issues);
  });
});

describe('normalizeSettings', () => {
  it('writes the trusted proxies as CIDR words and the version header', () => {
    const settings = normalizeSettings(parseSettings({ trustedProxies: ['127.0.0.1', '::1'], proxy: { versionHeader: 'X-Served-By' } }));
    expect(settings).toEqual({ format: 'graygate-openresty-settings/1', trustedProxies: { v4: [0x7f000001, -1], v6: [0, 0, 0, 1, -1, -1, -1, -1] }, versionHeader: 'x-served-by' });
  });

  it('refuses a trusted proxy that is not a CIDR, naming it', () => {
    expect(() => normalizeSettings(parseSettings({ trustedProxies: ['10.0.0.1/8'] }))).toThrow(/trustedProxies\[0\]: "10\.0\.0\.1\/8" has bits set after the \/8 prefix/);
  });
});
