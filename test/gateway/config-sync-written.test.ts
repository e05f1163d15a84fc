import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError, GraygateError } from '../../src/errors.js';
import { ConfigSync } from '../../src/gateway/config-sync.js';
import { createLogger } from '../../src/observe/log.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileRouting } from '../../src/rules/compile.js';
import type { StoredVersion } from '../../src/store/store.js';
import { ScriptedStoreBase } from '../helpers/scripted-store.js';
import { contractDocument } from '../store/contract.js';

const identity = identityCompiler();
const compile = (document: Parameters<typeof compileRouting>[0], version: number) => compileRouting(document, version, { identity });

/** A version as one write stored it: the same meta every time it is read. */
function stored(version: number): StoredVersion {
  return { version, document: contractDocument(version), meta: { actor: 'script', time: new Date(version * 1_000).toISOString(), reason: 'script' } };
}

interface Step {
  readonly version: number | 'outage';
  /** Microtask turns the read takes: reads that began before the write may finish after it. */
  readonly delay: number;
}

/** Answers `current()` from a script, slowly; a slow poll of a store that has not seen the write yet. */
class SlowStore extends ScriptedStoreBase {
  readonly kind = 'slow';
  private next = 0;
  constructor(private readonly script: readonly Step[]) {
    super();
  }
  async current(): Promise<StoredVersion> {
    const step = this.script[this.next++ % this.script.length]!;
    for (let i = 0; i < step.delay; i++) await Promise.resolve();
    if (step.version === 'outage') throw new GraygateError('GG_STORE_UNAVAILABLE', 'scripted outage');
    return stored(step.version);
  }
}

describe('ConfigSync.applyWritten: a version this gateway wrote', () => {
  const step: fc.Arbitrary<Step> = fc.record({ version: fc.oneof(fc.integer({ min: 1, max: 30 }), fc.constant('outage' as const)), delay: fc.nat(6) });

  it('is served the moment it is applied, and no read that began before or after takes the gateway below it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), fc.nat(6), fc.nat(6), async (script, before, after) => {
        const WRITTEN = 20;
        const applied: number[] = [];
        const sync = new ConfigSync({ store: new SlowStore([{ version: 1, delay: 0 }, ...script]), compile, apply: (s) => applied.push(s.version), logger: createLogger({ level: 'silent' }) });
        await sync.start();
        const pending: Promise<void>[] = [];
        for (let i = 0; i < before; i++) pending.push(sync.refresh());
        await Promise.resolve();
        const servedBefore = sync.version!;
        expect(sync.applyWritten(stored(WRITTEN))).toBe(true);
        // Synchronously: the write's acknowledgement may go out now.
        expect(sync.version).toBe(Math.max(servedBefore, WRITTEN));
        const appliedAtWrite = applied.length;
        for (let i = 0; i < after; i++) pending.push(sync.refresh());
        await Promise.all(pending);
        expect(applied.slice(appliedAtWrite).every((version) => version >= WRITTEN)).toBe(true);
        expect(sync.version).toBeGreaterThanOrEqual(WRITTEN);
        expect(applied.every((version, i) => i === 0 || version > applied[i - 1]!)).toBe(true);
        sync.stop();
      }),
      { numRuns: 300 },
    );
  });

  it('is refused like a read one when it does not compile, and the served version stays', async () => {
    // A strategy that refuses its config at compile time (as a malformed store key value would).
    const refusing = (document: StoredVersion['document'], version: number) => {
      if (version === 2) throw new ConfigError(['services[0].release.rules[0]: refused at compile']);
      return compile(document, version);
    };
    const sync = new ConfigSync({ store: new SlowStore([{ version: 1, delay: 0 }]), compile: refusing, apply: () => undefined, logger: createLogger({ level: 'silent' }) });
    await sync.start();
    expect(sync.applyWritten(stored(2))).toBe(false);
    expect(sync.version).toBe(1);
    expect(sync.stats().lastError?.kind).toBe('refused');
    sync.stop();
  });
});
