import { describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import type { RoutingDocument } from '../../src/config/schema.js';
import { planConfigApply, type HistoryReader } from '../../src/control/config-apply.js';
import { applyAction } from '../../src/control/lifecycle.js';

const doc = (release?: Record<string, unknown>, stableServer = 'http://127.0.0.1:1'): RoutingDocument =>
  parseRoutingDocument({
    upstreams: { v1: { servers: [stableServer] }, v2: { servers: ['http://127.0.0.1:2'] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'shop', stable: 'v1', ...(release ? { release } : {}) }],
  });

/** A history of `documents` as versions 1..n (the last one is live), counting the reads. */
function historyOf(documents: RoutingDocument[]): { live: { version: number; document: RoutingDocument }; history: HistoryReader; reads: number[] } {
  const reads: number[] = [];
  return {
    live: { version: documents.length, document: documents.at(-1)! },
    reads,
    history: {
      versions: () => Promise.resolve(documents.map((_d, i) => i + 1).reverse()),
      read: (version) => {
        reads.push(version);
        return Promise.resolve(documents[version - 1]);
      },
    },
  };
}

const canary = { candidate: 'v2', rules: [{ name: 'first', uidRange: { from: 1, to: 100 } }] };

describe('planConfigApply', () => {
  it('keeps a release the lifecycle moved on when the file\'s release section is unchanged (seeded without one)', async () => {
    const seeded = doc();
    const started = applyAction(seeded, 'shop', 'start', { candidate: 'v2', percentage: 5 }).document;
    const full = applyAction(started, 'shop', 'full').document;
    const { live, history } = historyOf([seeded, started, full]);
    const plan = await planConfigApply(live, doc(undefined, 'http://127.0.0.1:3'), history);
    expect(plan.releases).toMatchObject([{ service: 'shop', outcome: 'kept', liveState: 'full', fileState: 'idle', sameAsVersion: 1 }]);
    expect(plan.document.services[0]!.release).toEqual(full.services[0]!.release);
    expect(plan.document.upstreams.v1!.servers).toEqual(['http://127.0.0.1:3']);
  });

  it('keeps no release after finish when the file still says canary as it did at the seed', async () => {
    const seeded = doc(canary);
    const full = applyAction(seeded, 'shop', 'full').document;
    const finished = applyAction(full, 'shop', 'finish').document;
    const { live, history } = historyOf([seeded, full, finished]);
    const plan = await planConfigApply(live, doc(canary), history);
    expect(plan.releases).toMatchObject([{ outcome: 'kept', liveState: 'idle', fileState: 'canary', sameAsVersion: 1 }]);
    expect(plan.document.services[0]!.release).toBeUndefined();
  });

  it('applies an edited release section that keeps the state', async () => {
    const seeded = doc(canary);
    const { live, history } = historyOf([seeded]);
    const edited = { ...canary, rules: [{ name: 'first', uidRange: { from: 1, to: 10 } }] };
    const plan = await planConfigApply(live, doc(edited), history);
    expect(plan.releases).toMatchObject([{ outcome: 'file', liveState: 'canary', fileState: 'canary' }]);
    expect(plan.document.services[0]!.release!.rules).toEqual(doc(edited).services[0]!.release!.rules);
  });

  it('applies a release the file adds (idle → canary is the lifecycle\'s start)', async () => {
    const { live, history } = historyOf([doc()]);
    const plan = await planConfigApply(live, doc(canary), history);
    expect(plan.releases).toMatchObject([{ outcome: 'file', liveState: 'idle', fileState: 'canary', move: 'start' }]);
    expect(plan.document.services[0]!.release?.state).toBe('canary');
  });

  it('refuses an edited release section that would move full back to canary, saying what to do', async () => {
    const seeded = doc(canary);
    const full = applyAction(seeded, 'shop', 'full').document;
    const { live, history } = historyOf([seeded, full]);
    const edited = { ...canary, rules: [{ name: 'first', uidRange: { from: 1, to: 10 } }] };
    const plan = await planConfigApply(live, doc(edited), history);
    expect(plan.releases).toMatchObject([{ outcome: 'refused', liveState: 'full', fileState: 'canary' }]);
    expect(plan.releases[0]!.message).toMatch(/state: full.*--release-from-file/);
    const forced = await planConfigApply(live, doc(edited), history, { releaseFromFile: true });
    expect(forced.releases).toMatchObject([{ outcome: 'file', liveState: 'full', fileState: 'canary' }]);
    expect(forced.document.services[0]!.release?.state).toBe('canary');
  });

  it('reads no history when every release equals the live one', async () => {
    const { live, history, reads } = historyOf([doc(canary), doc(canary, 'http://127.0.0.1:5')]);
    const plan = await planConfigApply(live, doc(canary, 'http://127.0.0.1:6'), history);
    expect(plan.releases).toEqual([]);
    expect(reads).toEqual([]);
  });
});
