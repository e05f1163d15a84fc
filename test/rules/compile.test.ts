import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { compiledRulesOf, compileRouting, prefixMatches, releaseSeedOf, storeKeysOf, varyFor } from '../../src/rules/compile.js';
import type { CompiledService } from '../../src/rules/snapshot.js';
import { makeFacts } from '../helpers/facts.js';

const upstreams = { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } };
const identity = { sources: [{ header: { name: 'x-user-id' } }] };

function serviceWith(release: Record<string, unknown>, extra: Record<string, unknown> = {}): CompiledService {
  const document = parseRoutingDocument({
    upstreams,
    identity,
    services: [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', ...release }, ...extra }],
  });
  return compileRouting(document, 1).matchService('any.host', '/')!;
}

describe('compileRouting: release states', () => {
  const rules = [{ uidRange: { from: 1, to: 10 } }];
  const inRange = makeFacts({ userId: '5' });
  const outside = makeFacts({ userId: '50' });

  it('idle sends everyone to stable without reading the caller', () => {
    const service = serviceWith({ state: 'idle', rules });
    expect(service.decide(inRange)).toMatchObject({ version: 'stable', upstream: 'v1', reason: 'idle', dependsOnCaller: false });
    expect(service.needsIdentity).toBe(false);
    expect(service.vary).toBeUndefined();
  });

  it('full sends everyone to the candidate without reading the caller', () => {
    const service = serviceWith({ state: 'full', rules });
    expect(service.decide(outside)).toMatchObject({ version: 'candidate', upstream: 'v2', reason: 'full', dependsOnCaller: false });
    expect(service.needsIdentity).toBe(false);
    expect(service.vary).toBeUndefined();
  });

  it('canary lets the first matching rule decide; no match goes to stable', () => {
    const service = serviceWith({ state: 'canary', rules });
    expect(service.decide(inRange)).toMatchObject({ version: 'candidate', upstream: 'v2', reason: 'rule 1', dependsOnCaller: true });
    expect(service.decide(outside)).toMatchObject({ version: 'stable', upstream: 'v1', reason: 'no rule matched', dependsOnCaller: true });
    expect(service.decide(makeFacts())).toMatchObject({ version: 'stable', reason: 'no rule matched' });
    expect(service.needsIdentity).toBe(true);
    expect(service.vary).toBe('x-user-id');
  });

  it('a service without a release always decides stable', () => {
    const document = parseRoutingDocument({ upstreams, services: [{ name: 'plain', stable: 'v1' }] });
    const service = compileRouting(document, 3).matchService('h', '/x')!;
    expect(service.candidate).toBeUndefined();
    expect(service.decide(makeFacts())).toBe(service.stableDecision);
    expect(service.needsIdentity).toBe(false);
  });

  it('a canary without rules keeps everyone on stable and says it did not depend on the caller', () => {
    const service = serviceWith({ state: 'canary', rules: [] });
    expect(service.decide(inRange)).toMatchObject({ version: 'stable', reason: 'no rule matched', dependsOnCaller: false });
    expect(service.vary).toBeUndefined();
  });
});

describe('compileRouting: rules', () => {
  it('the first matching rule decides, in order; deny rules (to: stable) beat later candidate rules', () => {
    const service = serviceWith({
      rules: [
        { name: 'staff-stay', to: 'stable', header: { name: 'x-staff', present: true } },
        { name: 'beta', uidRange: { from: 1, to: 100 } },
        { header: { name: 'x-canary', equals: 'on' } },
      ],
    });
    expect(service.decide(makeFacts({ userId: '5', headers: { 'x-staff': '1' } }))).toMatchObject({
      version: 'stable',
      upstream: 'v1',
      reason: 'staff-stay',
      dependsOnCaller: true,
    });
    expect(service.decide(makeFacts({ userId: '5' }))).toMatchObject({ version: 'candidate', reason: 'beta' });
    expect(service.decide(makeFacts({ userId: '500', headers: { 'x-canary': 'on' } }))).toMatchObject({ version: 'candidate', reason: 'rule 3' });
    expect(service.decide(makeFacts({ userId: '500' }))).toMatchObject({ version: 'stable', reason: 'no rule matched' });
    expect(service.vary).toBe('x-canary, x-staff, x-user-id');
  });

  it('all / any / not compose like the boolean operators (property)', () => {
    const service = serviceWith({
      rules: [
        {
          all: [
            { any: [{ header: { name: 'a', present: true } }, { header: { name: 'b', present: true } }] },
            { not: { header: { name: 'c', present: true } } },
          ],
        },
      ],
    });
    fc.assert(
      fc.property(fc.boolean(), fc.boolean(), fc.boolean(), (a, b, c) => {
        const headers: Record<string, string> = {};
        if (a) headers.a = '1';
        if (b) headers.b = '1';
        if (c) headers.c = '1';
        const expected = (a || b) && !c;
        expect(service.decide(makeFacts({ headers })).version).toBe(expected ? 'candidate' : 'stable');
      }),
    );
  });

  it('deciding allocates nothing: the same frozen Decision object comes back', () => {
    const service = serviceWith({ rules: [{ uidRange: { from: 1, to: 10 } }] });
    const first = service.decide(makeFacts({ userId: '3' }));
    expect(service.decide(makeFacts({ userId: '4' }))).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(service.decide(makeFacts()))).toBe(true);
    expect(compiledRulesOf(service).map((rule) => rule.decision)).toEqual([first]);
  });

  it('uses the service name as the release seed', () => {
    expect(releaseSeedOf('checkout')).toBe('checkout');
  });
});

describe('compileRouting: frozen snapshot', () => {
  it('freezes the snapshot, its document, services and decisions', () => {
    const raw = { upstreams, identity, services: [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', rules: [{ uidRange: { from: 1, to: 2 } }] } }] };
    const snapshot = compileRouting(parseRoutingDocument(raw), 7);
    expect(snapshot.version).toBe(7);
    expect(Object.isFrozen(snapshot)).toBe(true);
    expect(Object.isFrozen(snapshot.document)).toBe(true);
    expect(Object.isFrozen(snapshot.document.services[0]!.release!.rules[0])).toBe(true);
    expect(Object.isFrozen(snapshot.upstreams)).toBe(true);
    const service = snapshot.matchService('h', '/')!;
    expect(Object.isFrozen(service)).toBe(true);
    expect(Object.isFrozen(service.stableDecision)).toBe(true);
    expect(() => {
      (snapshot.document.services as unknown[]).push({});
    }).toThrow(TypeError);
  });

  it('two snapshots of the same document share no decision objects', () => {
    const raw = { upstreams, identity, services: [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', rules: [{ uidRange: { from: 1, to: 2 } }] } }] };
    const a = compileRouting(parseRoutingDocument(raw), 1).matchService('h', '/')!;
    const b = compileRouting(parseRoutingDocument(raw), 2).matchService('h', '/')!;
    expect(a.decide(makeFacts({ userId: '1' }))).not.toBe(b.decide(makeFacts({ userId: '1' })));
  });
});

describe('Vary', () => {
  it('names headers, folds cookies into Cookie, ignores query and time, and gives * for the client address', () => {
    expect(varyFor([{ kind: 'header', name: 'x-a' }, { kind: 'cookie', name: 'c' }, { kind: 'query', name: 'q' }], [])).toBe('Cookie, x-a');
    expect(varyFor([{ kind: 'identity' }], [{ kind: 'cookie', name: 'sid' }, { kind: 'header', name: 'x-user-id' }])).toBe('Cookie, x-user-id');
    expect(varyFor([{ kind: 'clientIp' }, { kind: 'header', name: 'x' }], [])).toBe('*');
    expect(varyFor([{ kind: 'query', name: 'q' }, { kind: 'time' }], [])).toBeUndefined();
  });
});

describe('service matching', () => {
  it('matches path prefixes on whole segments', () => {
    expect(prefixMatches('/api', '/api')).toBe(true);
    expect(prefixMatches('/api', '/api/x')).toBe(true);
    expect(prefixMatches('/api', '/apix')).toBe(false);
    expect(prefixMatches('/', '/anything')).toBe(true);
  });

  const hostPatterns = [undefined, 'a.com', 'b.a.com', '*.a.com', '*.b.a.com', 'x.org', '*.org'] as const;
  const prefixes = ['/', '/api', '/api/v1', '/apix', '/b', '/api/v1/', '/b/c/d', '/api/v1/z', '/c'] as const;
  const hosts = ['a.com', 'b.a.com', 'c.b.a.com', 'q.a.com', 'x.org', 'y.x.org', 'org', 'other.net', ''];
  const paths = ['/', '/api', '/api/', '/api/v1', '/api/v1/z', '/api/v1/z/', '/api/v1/zz', '/apix', '/apixy', '/b', '/b/c', '/b/c/d/e', '/bc', '/c', '/c/', '//c', ''];

  const normalize = (prefix: string) => (prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix);
  const servicesArb = fc.uniqueArray(fc.tuple(fc.constantFrom(...hostPatterns), fc.constantFrom(...prefixes)), {
    maxLength: 40,
    size: 'max',
    selector: ([host, prefix]) => `${host} ${normalize(prefix)}`,
  });

  /** The precedence stated in the docs, written the slow obvious way. */
  function naive(services: readonly (readonly [string | undefined, string])[], host: string, path: string): number | undefined {
    const candidates = services
      .map(([pattern, prefix], index) => ({ pattern, prefix: normalize(prefix), index }))
      .filter(({ pattern }) =>
        pattern === undefined ? true : pattern.startsWith('*.') ? host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1 : host === pattern,
      )
      .filter(({ prefix }) => prefix === '/' || path === prefix || path.startsWith(`${prefix}/`));
    const rank = (pattern: string | undefined) => (pattern === undefined ? [2, 0] : pattern.startsWith('*.') ? [1, -pattern.length] : [0, 0]);
    candidates.sort((x, y) => {
      const [tx, sx] = rank(x.pattern);
      const [ty, sy] = rank(y.pattern);
      return tx! - ty! || sx! - sy! || y.prefix.length - x.prefix.length;
    });
    return candidates[0]?.index;
  }

  it('takes exact host, then the longest wildcard, then any host; then the longest prefix (property vs naive)', () => {
    fc.assert(
      fc.property(servicesArb, fc.array(fc.tuple(fc.constantFrom(...hosts), fc.constantFrom(...paths)), { minLength: 1, maxLength: 30 }), (services, requests) => {
        const document = parseRoutingDocument({
          upstreams,
          services: services.map(([host, pathPrefix], i) => ({
            name: `s${i}`,
            stable: 'v1',
            match: host === undefined ? { pathPrefix } : { host, pathPrefix },
          })),
        });
        const snapshot = compileRouting(document, 1);
        for (const [host, path] of requests) {
          const expected = naive(services, host, path);
          expect(snapshot.matchService(host, path)?.name, `${host} ${path}`).toBe(expected === undefined ? undefined : `s${expected}`);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('an exact host without a matching prefix falls through to wildcard and any-host services', () => {
    const document = parseRoutingDocument({
      upstreams,
      services: [
        { name: 'exact-api', stable: 'v1', match: { host: 'shop.example.com', pathPrefix: '/api' } },
        { name: 'wild', stable: 'v1', match: { host: '*.example.com', pathPrefix: '/static' } },
        { name: 'fallback', stable: 'v1' },
      ],
    });
    const snapshot = compileRouting(document, 1);
    expect(snapshot.matchService('shop.example.com', '/api/cart')?.name).toBe('exact-api');
    expect(snapshot.matchService('shop.example.com', '/static/a.css')?.name).toBe('wild');
    expect(snapshot.matchService('shop.example.com', '/')?.name).toBe('fallback');
    expect(snapshot.matchService('example.com', '/static/a.css')?.name).toBe('fallback');
  });

  it('finds the longest whole-segment prefix among many on one host', () => {
    const prefixes = ['/', '/api', '/b', '/c', '/d', '/e/f', '/api/v1'];
    const document = parseRoutingDocument({ upstreams, services: prefixes.map((pathPrefix, i) => ({ name: `s${i}`, stable: 'v1', match: { pathPrefix } })) });
    const snapshot = compileRouting(document, 1);
    const expected: Record<string, string> = { '/api/x': 's1', '/api': 's1', '/api/v1/x': 's6', '/api/v1x': 's1', '/e/f/g': 's5', '/e': 's0', '/apix': 's0', '/': 's0' };
    for (const [path, name] of Object.entries(expected)) expect(snapshot.matchService('h', path)?.name, path).toBe(name);
  });

  it('answers undefined when nothing matches', () => {
    const document = parseRoutingDocument({ upstreams, services: [{ name: 'only', stable: 'v1', match: { host: 'a.com' } }] });
    expect(compileRouting(document, 1).matchService('b.com', '/')).toBeUndefined();
  });
});

describe('compileRouting: identity', () => {
  const raw = (sources: unknown[]) => ({
    upstreams,
    identity: { sources },
    services: [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', rules: [{ uidRange: { from: 1, to: 5000 } }] } }],
  });

  it('resolves the identity through the chain with the given context, then decides on it', async () => {
    const reads: string[] = [];
    const snapshot = compileRouting(parseRoutingDocument(raw([{ tokenLookup: {} }])), 1, {
      identityContext: {
        readKey: async (key) => {
          reads.push(key);
          return key === 'TOKEN_abc' ? '1234' : undefined;
        },
      },
    });
    const service = snapshot.matchService('h', '/')!;
    expect(service.needsIdentity).toBe(true);
    expect(service.vary).toBe('token');
    const facts = makeFacts({ headers: { token: 'abc' } });
    await service.resolveIdentity(facts);
    expect(service.decide(facts)).toMatchObject({ version: 'candidate', reason: 'rule 1' });
    expect(reads).toEqual(['TOKEN_abc']);
  });

  it('refuses, naming the source, an identity source that cannot work without a store', () => {
    let error: unknown;
    try {
      compileRouting(parseRoutingDocument(raw([{ tokenLookup: {} }])), 1);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues[0]).toMatch(/^identity\.sources\[0\]\.tokenLookup: /);
  });

  it('lists no store keys for rules that read none', () => {
    expect(storeKeysOf(parseRoutingDocument(raw([{ header: { name: 'x-user-id' } }])))).toEqual([]);
  });
});
