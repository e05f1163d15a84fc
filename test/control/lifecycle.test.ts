import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import type { RoutingDocument } from '../../src/config/schema.js';
import { applyAction, readsStoreKey, stateOf, transitions, type ActionParams, type LifecycleAction } from '../../src/control/lifecycle.js';
import { GraygateError } from '../../src/errors.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileRouting } from '../../src/rules/compile.js';
import { makeFacts } from '../helpers/facts.js';

const base = (): RoutingDocument =>
  parseRoutingDocument({
    upstreams: {
      'shop-v1': { servers: ['http://127.0.0.1:1'] },
      'shop-v2': { servers: ['http://127.0.0.1:2'] },
      'shop-v3': { servers: ['http://127.0.0.1:3'] },
      'api-v1': { servers: ['http://127.0.0.1:4'] },
      'api-v2': { servers: ['http://127.0.0.1:5'] },
    },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [
      { name: 'shop', match: { pathPrefix: '/' }, stable: 'shop-v1' },
      { name: 'api', match: { pathPrefix: '/api' }, stable: 'api-v1', release: { candidate: 'api-v2', state: 'idle', rules: [{ header: { name: 'x-canary', equals: '1' } }] } },
    ],
  });

const firstUsers = [{ name: 'first-users', uidRange: { ranges: [{ from: 1, to: 5000 }] } }] as unknown as ActionParams['rules'];

/** Applies and validates, as the control plane does before a write. */
function move(document: RoutingDocument, service: string, action: LifecycleAction, params?: ActionParams) {
  const result = applyAction(document, service, action, params);
  return { ...result, document: parseRoutingDocument(result.document) };
}

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (error) {
    if (error instanceof GraygateError) return error.code;
    throw error;
  }
}

const version = (document: RoutingDocument, path: string, userId?: string, headers?: Record<string, string>) =>
  compileRouting(document, 1, { identity: identityCompiler() }).matchService('any.host', path)!.decide(makeFacts({ path, ...(userId ? { userId } : {}), ...(headers ? { headers } : {}) })).version;

describe('release lifecycle: the allowed moves', () => {
  it('idle → canary → full → idle, each step routing as its state says', () => {
    const started = move(base(), 'shop', 'start', { candidate: 'shop-v2', rules: firstUsers });
    expect([started.from, started.to]).toEqual(['idle', 'canary']);
    expect(version(started.document, '/', '42')).toBe('candidate');
    expect(version(started.document, '/', '5001')).toBe('stable');

    const full = move(started.document, 'shop', 'full');
    expect([full.from, full.to]).toEqual(['canary', 'full']);
    expect(version(full.document, '/', '5001')).toBe('candidate');
    expect(version(full.document, '/')).toBe('candidate');

    const finished = move(full.document, 'shop', 'finish');
    expect([finished.from, finished.to]).toEqual(['full', 'idle']);
    expect(finished.document.services[0]!.release).toBeUndefined();
    expect(version(finished.document, '/', '42')).toBe('stable');
    // The other service is untouched throughout.
    expect(finished.document.services[1]).toEqual(base().services[1]);
  });

  it('start reuses an idle release\'s candidate and rules; set replaces rules and keeps one percentage rule', () => {
    const started = move(base(), 'api', 'start', {});
    expect(started.document.services[1]!.release).toMatchObject({ candidate: 'api-v2', state: 'canary' });
    expect(version(started.document, '/api', undefined, { 'x-canary': '1' })).toBe('candidate');

    const ten = move(started.document, 'api', 'set', { percentage: 10 });
    const twenty = move(ten.document, 'api', 'set', { percentage: 20 });
    const rules = twenty.document.services[1]!.release!.rules;
    expect(rules.map((rule) => rule.name)).toEqual([undefined, 'percentage']);
    expect(rules[1]).toMatchObject({ percentage: { percent: 20 } });
    const replaced = move(twenty.document, 'api', 'set', { rules: firstUsers });
    expect(replaced.document.services[1]!.release!.rules.map((rule) => rule.name)).toEqual(['first-users']);
  });

  it('refuses moves that make no sense with 409 GG_ILLEGAL_TRANSITION saying why', () => {
    const idle = base();
    for (const action of ['set', 'full', 'finish'] as const) {
      expect(codeOf(() => applyAction(idle, 'shop', action, { percentage: 5 }))).toBe('GG_ILLEGAL_TRANSITION');
    }
    const canary = move(idle, 'shop', 'start', { candidate: 'shop-v2', rules: firstUsers }).document;
    expect(() => applyAction(canary, 'shop', 'start', { candidate: 'shop-v2' })).toThrow(/already in canary/);
    expect(() => applyAction(canary, 'shop', 'finish')).toThrow(/still in canary; `release full` first/);
    const full = move(canary, 'shop', 'full').document;
    expect(() => applyAction(full, 'shop', 'set', { percentage: 5 })).toThrow(/in full/);
    expect(new GraygateError('GG_ILLEGAL_TRANSITION', 'x').status).toBe(409);
  });

  it('an unknown service is GG_NOT_FOUND naming the known ones; a start without a candidate names the field', () => {
    expect(() => applyAction(base(), 'nope', 'rollback')).toThrow(/service "nope" is not defined; known: shop, api/);
    expect(codeOf(() => applyAction(base(), 'nope', 'rollback'))).toBe('GG_NOT_FOUND');
    expect(() => applyAction(base(), 'shop', 'start', {})).toThrow(/^candidate: required/);
  });

  it('rollback works from every state and is idempotent', () => {
    const canary = move(base(), 'shop', 'start', { candidate: 'shop-v2', rules: firstUsers }).document;
    const full = move(canary, 'shop', 'full').document;
    for (const document of [base(), canary, full]) {
      const once = move(document, 'shop', 'rollback');
      expect(once.to).toBe('idle');
      const twice = move(once.document, 'shop', 'rollback');
      expect(twice.changed).toBe(false);
      expect(twice.document).toEqual(once.document);
    }
    // A hand-written idle release still holds rules: rollback clears them.
    const api = move(base(), 'api', 'rollback');
    expect(api.changed).toBe(true);
    expect(api.document.services[1]!.release).toBeUndefined();
  });

  it('full with A/B/n names a winner and zeroes the others', () => {
    const started = move(base(), 'shop', 'start', { candidates: [{ upstream: 'shop-v2', weight: 10 }, { upstream: 'shop-v3', weight: 10 }] });
    expect(() => applyAction(started.document, 'shop', 'full')).toThrow(/^winner: required/);
    const full = move(started.document, 'shop', 'full', { winner: 'shop-v3' });
    expect(full.document.services[0]!.release!.candidates).toEqual([
      { upstream: 'shop-v2', weight: 0 },
      { upstream: 'shop-v3', weight: 10 },
    ]);
    expect(compileRouting(full.document, 1, { identity: identityCompiler() }).matchService('h', '/')!.decide(makeFacts({ userId: '7' })).upstream).toBe('shop-v3');
  });
});

describe('release lifecycle: properties', () => {
  const actions: LifecycleAction[] = ['start', 'set', 'full', 'finish', 'rollback'];
  const ruleArb = fc.oneof(
    fc.record({ from: fc.integer({ min: 0, max: 10_000 }), width: fc.integer({ min: 0, max: 10_000 }) }).map(({ from, width }) => ({ uidRange: { ranges: [{ from, to: from + width }] } })),
    fc.constantFrom('a', 'b', '1').map((value) => ({ header: { name: 'x-canary', equals: value } })),
    fc.constantFrom('a', 'b').map((value) => ({ to: 'stable', header: { name: 'x-deny', equals: value } })),
    // A rule whose range lives in a store key (the recipe's Grayscale_Range): it outlives finish and rollback.
    fc.constant({ uidRange: { fromKey: 'Grayscale_Range' } }),
  );
  const paramsArb: fc.Arbitrary<ActionParams> = fc.record(
    {
      candidate: fc.constantFrom('shop-v2', 'shop-v3'),
      rules: fc.array(ruleArb, { maxLength: 3 }),
      percentage: fc.integer({ min: 0, max: 10_000 }).map((n) => n / 100),
    },
    { requiredKeys: [] },
  ) as fc.Arbitrary<ActionParams>;
  const stepArb = fc.record({ service: fc.constantFrom('shop', 'api'), action: fc.constantFrom(...actions), params: paramsArb });
  const callerArb = fc.record({
    path: fc.constantFrom('/', '/api', '/api/x', '/other'),
    userId: fc.option(fc.integer({ min: 0, max: 20_000 }).map(String), { nil: undefined }),
    canary: fc.option(fc.constantFrom('a', 'b', '1'), { nil: undefined }),
    deny: fc.option(fc.constantFrom('a', 'b'), { nil: undefined }),
  });

  it('any sequence of moves keeps the document valid, and every refusal follows the table and changes nothing', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 12 }), (steps) => {
        let document = base();
        for (const { service, action, params } of steps) {
          const before = stateOf(document.services.find((s) => s.name === service)!);
          const allowed = transitions[action].from.includes(before);
          let result;
          try {
            result = applyAction(document, service, action, params);
          } catch (error) {
            const code = (error as GraygateError).code;
            if (allowed) expect(code).toBe('GG_REQUEST_INVALID'); // e.g. set with neither rules nor percentage
            else expect(code).toBe('GG_ILLEGAL_TRANSITION');
            continue;
          }
          expect(allowed).toBe(true);
          // Throws (failing the property) when a move produced an invalid document.
          document = parseRoutingDocument(result.document);
          const after = document.services.find((s) => s.name === service)!;
          expect(stateOf(after)).toBe(result.to);
          // The table's target, except a finished release that keeps its store-key rules: back to canary on them alone.
          if (result.to !== transitions[action].to) {
            expect([action, result.to]).toEqual(['finish', 'canary']);
            expect(after.release!.rules.length).toBeGreaterThan(0);
            expect(after.release!.rules.every((rule) => readsStoreKey(rule))).toBe(true);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('rollback after any sequence ends idle with the candidate unreachable for every caller', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 10 }), fc.array(callerArb, { minLength: 1, maxLength: 20 }), (steps, callers) => {
        let document = base();
        for (const { service, action, params } of steps) {
          try {
            document = parseRoutingDocument(applyAction(document, service, action, params).document);
          } catch {
            // refused: the document stays as it was
          }
        }
        for (const service of ['shop', 'api']) document = parseRoutingDocument(applyAction(document, service, 'rollback').document);
        const snapshot = compileRouting(document, 1, { identity: identityCompiler() });
        for (const service of document.services) expect(stateOf(service)).toBe('idle');
        for (const caller of callers) {
          const compiled = snapshot.matchService('any.host', caller.path);
          if (!compiled) continue;
          const headers: Record<string, string> = {};
          if (caller.canary) headers['x-canary'] = caller.canary;
          if (caller.deny) headers['x-deny'] = caller.deny;
          const facts = makeFacts({ path: caller.path, headers, ...(caller.userId ? { userId: caller.userId } : {}) });
          expect(compiled.decide(facts).version).toBe('stable');
        }
      }),
      { numRuns: 200 },
    );
  });
});


describe('release lifecycle: a rule that reads a store key outlives the release', () => {
  // The drop-in's document: the recipe's range rule, its range in the Grayscale_Range key.
  const rangeRule = { name: 'gray-range', to: 'candidate', uidRange: { fromKey: 'Grayscale_Range' } };
  const dropIn = (): RoutingDocument =>
    parseRoutingDocument({
      upstreams: { stable: { servers: ['http://127.0.0.1:1'] }, candidate: { servers: ['http://127.0.0.1:2'] } },
      identity: { sources: [{ header: { name: 'x-user-id' } }] },
      services: [{ name: 'default', stable: 'stable', release: { candidate: 'candidate', state: 'canary', rules: [rangeRule] } }],
    });
  const versionWith = (document: RoutingDocument, range: string | undefined, userId: string) =>
    compileRouting(document, 1, { identity: identityCompiler(), storeValue: (key: string) => (key === 'Grayscale_Range' ? range : undefined) })
      .matchService('h', '/')!
      .decide(makeFacts({ userId })).version;

  it('full sends everyone to the candidate; finish returns to canary on the range rule alone, and the key decides again', () => {
    const set = move(dropIn(), 'default', 'set', { rules: [rangeRule, { name: 'testers', header: { name: 'x-canary', equals: '1' } }] as never });
    const full = move(set.document, 'default', 'full');
    expect(versionWith(full.document, '{"idStart":1,"idEnd":10}', '500')).toBe('candidate');
    const finished = move(full.document, 'default', 'finish');
    expect([finished.from, finished.to]).toEqual(['full', 'canary']);
    expect(finished.document.services[0]!.release!.rules).toEqual([rangeRule]);
    expect(versionWith(finished.document, '{"idStart":1,"idEnd":10}', '5')).toBe('candidate');
    expect(versionWith(finished.document, '{"idStart":1,"idEnd":10}', '500')).toBe('stable');
    expect(versionWith(finished.document, '{"idStart":1,"idEnd":1000}', '500')).toBe('candidate');
    expect(versionWith(finished.document, undefined, '5')).toBe('stable');
  });

  it('rollback leaves it idle (nobody on the candidate) with the range rule kept, idempotent; start resumes it', () => {
    const rolled = move(dropIn(), 'default', 'rollback');
    expect([rolled.from, rolled.to, rolled.changed]).toEqual(['canary', 'idle', true]);
    expect(rolled.document.services[0]!.release).toMatchObject({ state: 'idle', candidate: 'candidate', rules: [rangeRule] });
    expect(versionWith(rolled.document, '{"idStart":1,"idEnd":10}', '5')).toBe('stable');
    expect(move(rolled.document, 'default', 'rollback').changed).toBe(false);
    const resumed = move(rolled.document, 'default', 'start');
    expect(resumed.document.services[0]!.release).toMatchObject({ state: 'canary', candidate: 'candidate', rules: [rangeRule] });
    expect(versionWith(resumed.document, '{"idStart":1,"idEnd":10}', '5')).toBe('candidate');
  });
});
