import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import { IdentitySample } from '../../src/observe/identity-sample.js';
import { compileForImpact, impactOfViews, type ServiceImpact } from '../../src/observe/impact.js';
import { DescribedFacts } from '../../src/rules/described-facts.js';
import { bucketOf, deriveSeed } from '../../src/rules/hash.js';
import type { RoutingSnapshot } from '../../src/rules/snapshot.js';

const upstreams = { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] }, v3: { servers: ['http://127.0.0.1:3'] } };

/** A release of `shop` in canary with these rules, and optionally an A/B/n split of v2/v3. */
function documentOf(rules: unknown[], split?: [number, number]): RoutingSnapshot {
  const release = split
    ? { candidates: [{ upstream: 'v2', weight: split[0] }, { upstream: 'v3', weight: split[1] }], state: 'canary', rules }
    : { candidate: 'v2', state: 'canary', rules };
  // Identity is resolved in the test's facts (userId given): compiled as the impact query compiles.
  const document = parseRoutingDocument({ upstreams, identity: { sources: [{ header: { name: 'x-user-id' } }] }, services: [{ name: 'shop', stable: 'v1', release }] });
  return compileForImpact({ document, version: 1, values: [] });
}

const samples: IdentitySample[] = [];
function newSample(options: Partial<{ windowMs: number; maxPerService: number }> = {}): IdentitySample {
  const sample = new IdentitySample({ enabled: true, windowMs: options.windowMs ?? 60_000, maxPerService: options.maxPerService ?? 10_000 });
  samples.push(sample);
  return sample;
}
afterEach(() => {
  for (const sample of samples.splice(0)) sample.close();
});

/** Offers each caller as the data plane does: the service the request matches, after identity. */
function record(sample: IdentitySample, snapshot: RoutingSnapshot, callers: readonly { id: string; beta?: string }[]): void {
  for (const caller of callers) {
    const facts = new DescribedFacts({ path: '/', userId: caller.id, ...(caller.beta !== undefined ? { headers: { 'x-beta': caller.beta } } : {}) });
    const service = snapshot.matchService(facts.host, facts.path)!;
    service.decide(facts);
    sample.offer(service, facts);
  }
}

const ruleArb = fc.oneof(
  fc.tuple(fc.integer({ min: 0, max: 100 }), fc.constantFrom(undefined, 'exp2')).map(([percent, salt]) => ({ percentage: { percent, ...(salt ? { salt } : {}) } })),
  fc.tuple(fc.integer({ min: 0, max: 500 }), fc.integer({ min: 0, max: 500 })).map(([a, b]) => ({ uidRange: { ranges: [{ from: Math.min(a, b), to: Math.max(a, b) }] } })),
  fc.constant({ header: { name: 'x-beta', equals: '1' } }),
  fc.constant({ to: 'stable', header: { name: 'x-beta', equals: '0' } }),
);
const docArb = fc.record({
  rules: fc.array(ruleArb, { maxLength: 3 }),
  split: fc.option(fc.tuple(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 1, max: 40 })), { nil: undefined }),
});
const callersArb = fc.uniqueArray(
  fc.record({ id: fc.oneof(fc.integer({ min: 0, max: 600 }).map(String), fc.string({ minLength: 1, maxLength: 12 })), beta: fc.option(fc.constantFrom('0', '1', 'x'), { nil: undefined }) }),
  { selector: (caller) => caller.id, maxLength: 200 },
);
const compile = (doc: { rules: unknown[]; split: [number, number] | undefined }) =>
  documentOf(
    // A rule to a candidate must name one of several: the split's first.
    doc.split ? doc.rules.map((rule) => ((rule as { to?: string }).to === 'stable' ? rule : { ...(rule as object), to: 'v2' })) : doc.rules,
    doc.split,
  );

const moveKey = (move: { from: string; to: string; count: number }) => `${move.from}>${move.to}:${move.count}`;

describe('the impact of a change over the recent-identity sample', () => {
  it('a 10 → 20 % change moves exactly the sampled callers whose bucket is in [1000, 2000)', () => {
    const at10 = documentOf([{ name: 'percentage', percentage: { percent: 10 } }]);
    const at20 = documentOf([{ name: 'percentage', percentage: { percent: 20 } }]);
    const sample = newSample();
    const ids = Array.from({ length: 1_000 }, (_, i) => `user-${i}`);
    record(sample, at10, ids.map((id) => ({ id })));
    const seed = deriveSeed('shop');
    const expected = ids.filter((id) => bucketOf(id, seed) >= 1_000 && bucketOf(id, seed) < 2_000).length;
    const [impact] = impactOfViews(sample.view(), at10, at20);
    expect(impact).toMatchObject({ service: 'shop', sampled: 1_000, stableToCandidate: expected, candidateToStable: 0, unchanged: 1_000 - expected });
  });

  it('impact(a, a) moves nobody; impact(a, b) moves are impact(b, a) moves reversed (A/B/n included)', () => {
    fc.assert(
      fc.property(docArb, docArb, callersArb, (a, b, callers) => {
        const [first, second] = [compile(a), compile(b)];
        const sample = newSample();
        // Sampled under a document that reads the header, as a live one naming it would.
        record(sample, compile({ rules: [{ header: { name: 'x-beta', equals: '1' } }], split: undefined }), callers);
        const views = sample.view();
        const same = impactOfViews(views, first, first);
        for (const s of same) {
          expect(s.moves).toEqual([]);
          expect(s.unchanged).toBe(s.sampled);
        }
        const forward = impactOfViews(views, first, second);
        const backward = impactOfViews(views, second, first);
        expect(forward.length).toBe(backward.length);
        forward.forEach((f: ServiceImpact, i) => {
          const r = backward[i]!;
          expect(f.sampled).toBe(callers.length);
          expect(f.stableToCandidate).toBe(r.candidateToStable);
          expect(f.candidateToStable).toBe(r.stableToCandidate);
          expect(f.candidateToCandidate).toBe(r.candidateToCandidate);
          expect(f.unchanged).toBe(r.unchanged);
          expect(f.moves.map(moveKey).sort()).toEqual(r.moves.map((m) => moveKey({ from: m.to, to: m.from, count: m.count })).sort());
          expect(f.stableToCandidate + f.candidateToStable + f.candidateToCandidate + f.unchanged).toBe(f.sampled);
        });
        sample.close();
      }),
      { numRuns: 150 },
    );
  });

  it('keeps a caller once however often seen, and drops callers not seen within the window', () => {
    const snapshot = documentOf([{ name: 'percentage', percentage: { percent: 50 } }]);
    const sample = newSample({ windowMs: 60_000 });
    record(sample, snapshot, [{ id: '7' }, { id: '7' }, { id: '8' }, { id: '7' }]);
    expect(sample.view()[0]!.facts.length).toBe(2);
    expect(sample.view(Date.now() + 120_000)[0]!.facts.length).toBe(0);
  });

  it('at its bound keeps a uniform sample: the size stays at the bound and every caller offered is sampled or counted as not', () => {
    const snapshot = documentOf([{ name: 'percentage', percentage: { percent: 50 } }]);
    const sample = newSample({ maxPerService: 100 });
    record(sample, snapshot, Array.from({ length: 1_000 }, (_, i) => ({ id: `c${i}` })));
    const [view] = sample.view();
    expect(view!.facts.length).toBe(100);
    expect(view!.full).toBe(true);
    expect(view!.facts.length + view!.notSampled).toBe(1_000);
    // Reservoir: later callers get in too, not only the first hundred.
    expect(view!.facts.some((facts) => Number(facts.userId!.slice(1)) >= 500)).toBe(true);
    const [impact] = impactOfViews(sample.view(), snapshot, snapshot);
    expect(impact).toMatchObject({ sampled: 100, full: true, notSampled: 900 });
  });

  it('keeps the header values the current rules read, and names the inputs a proposal reads that the sample lacks', () => {
    const current = documentOf([{ header: { name: 'x-beta', equals: '1' } }]);
    const sample = newSample();
    record(sample, current, [
      { id: 'a', beta: '1' },
      { id: 'b', beta: '0' },
      { id: 'c' },
    ]);
    const [facts] = sample.view()[0]!.facts;
    expect(facts!.header('x-beta')).toBe('1');
    expect(facts!.header('x-other')).toBeUndefined();
    const off = documentOf([]);
    expect(impactOfViews(sample.view(), current, off)[0]).toMatchObject({ candidateToStable: 1, unchanged: 2, unobserved: [] });
    const other = documentOf([{ cookie: { name: 'beta', equals: '1' } }, { query: { name: 'preview', equals: '1' } }]);
    expect(impactOfViews(sample.view(), current, other)[0]!.unobserved).toEqual(['cookie beta', 'query preview']);
  });

  it('records nothing for a request without an identity, or when disabled', () => {
    const snapshot = documentOf([{ name: 'percentage', percentage: { percent: 50 } }]);
    const sample = newSample();
    const facts = new DescribedFacts({ path: '/' });
    sample.offer(snapshot.matchService('', '/')!, facts);
    expect(sample.view()).toEqual([]);
    const off = new IdentitySample({ enabled: false, windowMs: 60_000, maxPerService: 10 });
    record(off, snapshot, [{ id: '1' }]);
    expect(off.view()).toEqual([]);
  });
});
