import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RoutingDocument } from '../../src/config/schema.js';
import { GraygateError, type ErrorCode } from '../../src/errors.js';
import type { Store } from '../../src/store/store.js';
import { eventually } from '../helpers/eventually.js';

/**
 * The contract every Store implementation keeps. Call it from a test file:
 *
 *   storeContract('file', async () => ({ store, cleanup }));
 *
 * `makeStore` returns a fresh, isolated store that already holds one valid routing document
 * (so `current()` answers), e.g. `contractDocument(0)` written with expectedVersion 0; `cleanup`
 * closes the store and removes what it created. Each test makes its own store.
 */
export function storeContract(name: string, makeStore: () => Promise<{ store: Store; cleanup: () => Promise<void> }>): void {
  describe(`Store contract: ${name}`, () => {
    const withStore = async (body: (store: Store) => Promise<void>) => {
      const { store, cleanup } = await makeStore();
      try {
        await body(store);
      } finally {
        await cleanup();
      }
    };

    it('current() returns a version from 1 with a frozen document and who/when/why', () =>
      withStore(async (store) => {
        const current = await store.current();
        expect(Number.isInteger(current.version)).toBe(true);
        expect(current.version).toBeGreaterThanOrEqual(1);
        expect(RoutingDocument.safeParse(current.document).success).toBe(true);
        expect(Object.isFrozen(current.document)).toBe(true);
        expectMeta(current.meta);
        // Reading twice without a change is the same version.
        expect((await store.current()).version).toBe(current.version);
      }));

    it('write() with the current version stores the next version with its meta', () =>
      withStore(async (store) => {
        const before = await store.current();
        const document = contractDocument(1);
        const written = await store.write(document, { expectedVersion: before.version, actor: 'alice', reason: 'open the canary' });
        expect(written.version).toBe(before.version + 1);
        expect(written.document).toEqual(document);
        expect(written.meta).toMatchObject({ actor: 'alice', reason: 'open the canary' });
        expectMeta(written.meta);
        const after = await store.current();
        expect(after.version).toBe(written.version);
        expect(after.document).toEqual(document);
      }));

    it('write() naming a stale version is refused with GG_VERSION_CONFLICT and changes nothing', () =>
      withStore(async (store) => {
        const start = await store.current();
        await store.write(contractDocument(1), { expectedVersion: start.version, actor: 'alice', reason: 'first' });
        await expectCode(store.write(contractDocument(2), { expectedVersion: start.version, actor: 'bob', reason: 'stale' }), 'GG_VERSION_CONFLICT');
        await expectCode(store.write(contractDocument(2), { expectedVersion: start.version + 5, actor: 'bob', reason: 'future' }), 'GG_VERSION_CONFLICT');
        const current = await store.current();
        expect(current.version).toBe(start.version + 1);
        expect(current.document).toEqual(contractDocument(1));
      }));

    it('of concurrent writes naming the same version exactly one wins', () =>
      withStore(async (store) => {
        const start = await store.current();
        const results = await Promise.allSettled(
          [1, 2, 3, 4, 5].map((n) => store.write(contractDocument(n), { expectedVersion: start.version, actor: `writer-${n}`, reason: 'race' })),
        );
        const won = results.filter((r) => r.status === 'fulfilled');
        expect(won).toHaveLength(1);
        for (const r of results) if (r.status === 'rejected') expect((r.reason as GraygateError).code).toBe('GG_VERSION_CONFLICT');
        const current = await store.current();
        expect(current.version).toBe(start.version + 1);
        expect(current.document).toEqual((won[0] as PromiseFulfilledResult<{ document: unknown }>).value.document);
      }));

    it('history() lists versions newest first with who, when and why; limit bounds it', () =>
      withStore(async (store) => {
        const start = await store.current();
        let version = start.version;
        for (const n of [1, 2, 3]) {
          version = (await store.write(contractDocument(n), { expectedVersion: version, actor: `actor-${n}`, reason: `reason ${n}` })).version;
        }
        const history = await store.history();
        expect(history.map((h) => h.version).slice(0, 4)).toEqual([version, version - 1, version - 2, start.version]);
        for (const entry of history) expectMeta(entry.meta);
        expect(history[0]?.meta).toMatchObject({ actor: 'actor-3', reason: 'reason 3' });
        expect(history[2]?.meta).toMatchObject({ actor: 'actor-1', reason: 'reason 1' });
        expect(history[0]?.document).toEqual(contractDocument(3));
        expect(Date.parse(history[0]!.meta.time)).toBeGreaterThanOrEqual(Date.parse(history[2]!.meta.time));
        expect((await store.history({ limit: 2 })).map((h) => h.version)).toEqual([version, version - 1]);
      }));

    it('version(n) returns that version; an unknown one is GG_VERSION_UNKNOWN', () =>
      withStore(async (store) => {
        const start = await store.current();
        const second = await store.write(contractDocument(7), { expectedVersion: start.version, actor: 'alice', reason: 'seven' });
        await store.write(contractDocument(8), { expectedVersion: second.version, actor: 'alice', reason: 'eight' });
        const got = await store.version(second.version);
        expect(got.version).toBe(second.version);
        expect(got.document).toEqual(contractDocument(7));
        expect(got.meta).toMatchObject({ actor: 'alice', reason: 'seven' });
        await expectCode(store.version(second.version + 100), 'GG_VERSION_UNKNOWN');
        await expectCode(store.version(0), 'GG_VERSION_UNKNOWN');
        await expectCode(store.version(-1), 'GG_VERSION_UNKNOWN');
      }));

    it('restoring is writing an older document as a new version', () =>
      withStore(async (store) => {
        const start = await store.current();
        const v1 = await store.write(contractDocument(1), { expectedVersion: start.version, actor: 'alice', reason: 'one' });
        const v2 = await store.write(contractDocument(2), { expectedVersion: v1.version, actor: 'alice', reason: 'two' });
        const old = await store.version(v1.version);
        const restored = await store.write(old.document, { expectedVersion: v2.version, actor: 'bob', reason: `restore version ${v1.version}` });
        expect(restored.version).toBe(v2.version + 1);
        expect(restored.document).toEqual(contractDocument(1));
        expect((await store.current()).document).toEqual(contractDocument(1));
        // The restored-over version is still in history.
        expect((await store.version(v2.version)).document).toEqual(contractDocument(2));
      }));

    it('watch() notifies after a write, and its stop function stops it', () =>
      withStore(async (store) => {
        let calls = 0;
        let otherCalls = 0;
        const stop = store.watch(() => calls++);
        const stopOther = store.watch(() => otherCalls++);
        try {
          const start = await store.current();
          await store.write(contractDocument(3), { expectedVersion: start.version, actor: 'alice', reason: 'watch me' });
          await eventually(() => expect(calls).toBeGreaterThan(0), { withinMs: 5_000 });
          await eventually(() => expect(otherCalls).toBeGreaterThan(0), { withinMs: 5_000 });
          stop();
          const frozen = calls;
          const seen = otherCalls;
          const next = await store.current();
          await store.write(contractDocument(4), { expectedVersion: next.version, actor: 'alice', reason: 'again' });
          // The listener still watching hears the second write; by then the stopped one would have too.
          await eventually(() => expect(otherCalls).toBeGreaterThan(seen), { withinMs: 5_000 });
          expect(calls).toBe(frozen);
        } finally {
          stop();
          stopOther();
        }
      }));

    it('versions only grow, one per accepted write, whatever mix of fresh and stale writes', () =>
      withStore(async (store) => {
        await fc.assert(
          fc.asyncProperty(fc.array(fc.record({ n: fc.nat(50), stale: fc.boolean() }), { minLength: 1, maxLength: 6 }), async (steps) => {
            let expected = (await store.current()).version;
            for (const step of steps) {
              const attempt = store.write(contractDocument(step.n), {
                expectedVersion: step.stale ? expected - 1 : expected,
                actor: 'prop',
                reason: `n=${step.n}`,
              });
              if (step.stale) {
                await expectCode(attempt, 'GG_VERSION_CONFLICT');
              } else {
                const written = await attempt;
                expect(written.version).toBe(expected + 1);
                expected = written.version;
              }
              const current = await store.current();
              expect(current.version).toBe(expected);
            }
            const history = await store.history();
            const versions = history.map((h) => h.version);
            expect([...versions].sort((a, b) => b - a)).toEqual(versions);
            expect(new Set(versions).size).toBe(versions.length);
          }),
          { numRuns: 15 },
        );
      }));
  });
}

/**
 * A valid routing document, distinct for each `n` (an upstream's port), in validated form (defaults
 * filled in), so a store's round trip can be compared with toEqual.
 */
export function contractDocument(n: number): RoutingDocument {
  return RoutingDocument.parse({
    upstreams: {
      stable: { servers: [`http://127.0.0.1:${10_000 + n}`] },
      candidate: { servers: ['http://127.0.0.1:9999'] },
    },
    services: [
      {
        name: 'shop',
        match: { host: 'shop.example.com', pathPrefix: '/' },
        stable: 'stable',
        release: { candidate: 'candidate', state: 'canary', rules: [{ name: `range-${n}`, uidRange: { ranges: [{ from: 1, to: 1000 + n }] } }] },
      },
    ],
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
  });
}

function expectMeta(meta: { actor: string; time: string; reason: string }): void {
  expect(typeof meta.actor).toBe('string');
  expect(meta.actor.length).toBeGreaterThan(0);
  expect(typeof meta.reason).toBe('string');
  expect(Number.isNaN(Date.parse(meta.time))).toBe(false);
  expect(new Date(meta.time).toISOString()).toBe(meta.time);
}

/** Awaits `promise` and checks it rejects with a GraygateError of `code`. */
export async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<GraygateError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, `expected a rejection with ${code}`).toBeInstanceOf(GraygateError);
  expect((error as GraygateError).code).toBe(code);
  return error as GraygateError;
}
