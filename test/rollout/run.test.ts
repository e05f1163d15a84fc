import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import type { RoutingDocument } from '../../src/config/schema.js';
import { applyAction, findService, stateOf } from '../../src/control/lifecycle.js';
import { GraygateError } from '../../src/errors.js';
import { advance, isActive, manualChange, pauseOrResume, rollBack, startRun, type Move } from '../../src/rollout/run.js';

const base = parseRoutingDocument({
  upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
  identity: { sources: [{ header: { name: 'x-user-id' } }] },
  services: [
    {
      name: 'app',
      stable: 'v1',
      rollout: { steps: [{ percent: 1, holdMs: 10 }, { percent: 5, holdMs: 10 }, { gate: true }, { rules: [{ header: { name: 'x-beta', equals: '1' } }], holdMs: 10 }, { percent: 50, holdMs: 10 }] },
    },
  ],
});
const steps = 5;

type Op = 'start' | 'pass' | 'promote' | 'pause' | 'resume' | 'abort' | 'fail' | 'manual';
const ops: Op[] = ['start', 'pass', 'promote', 'pause', 'resume', 'abort', 'fail', 'manual'];

function apply(document: RoutingDocument, op: Op, now: Date): RoutingDocument {
  const move = (m: Move) => m.document;
  switch (op) {
    case 'start':
      return startRun(document, 'app', { candidate: 'v2', actor: 'ops', reason: 'go', now });
    case 'pass':
      return move(advance(document, 'app', 'graygate rollout', 'passed', now));
    case 'promote':
      return move(advance(document, 'app', 'ops', 'promote', now, [], 'promote'));
    case 'pause':
    case 'resume':
      return move(pauseOrResume(document, 'app', op, 'ops', op, now));
    case 'abort':
      return move(rollBack(document, 'app', 'ops', 'abort', now, [], 'abort'));
    case 'fail':
      return move(rollBack(document, 'app', 'graygate rollout', 'errorRate above its bound', now, [], 'rollback'));
    case 'manual':
      return applyAction(document, 'app', stateOf(findService(document, 'app').service) === 'idle' ? 'start' : 'set', { candidate: 'v2', percentage: 33 }).document;
  }
}

describe('rollout runs over the release lifecycle', () => {
  it('any sequence of moves: steps advance one at a time, full only at the end, an ended run leaves stable alone, a refused move changes nothing', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...ops), { maxLength: 30 }), (sequence) => {
        let document = base;
        let t = 0;
        for (const op of sequence) {
          const before = findService(document, 'app').service;
          let next: RoutingDocument;
          try {
            next = parseRoutingDocument(apply(document, op, new Date(1_800_000_000_000 + ++t * 1000)));
          } catch (error) {
            // Refused (no run in progress, one already running, an illegal lifecycle move): typed, and nothing written.
            expect(error).toBeInstanceOf(GraygateError);
            expect(['GG_ROLLOUT_NOT_RUNNING', 'GG_ILLEGAL_TRANSITION']).toContain((error as GraygateError).code);
            continue;
          }
          const after = findService(next, 'app').service;
          const run = after.rolloutRun;
          if (run) {
            expect(run.step).toBeGreaterThanOrEqual(0);
            expect(run.step).toBeLessThan(steps);
            if (op === 'start') expect(run.step).toBe(0);
            else if (before.rolloutRun?.id === run.id) expect(run.step - before.rolloutRun.step).toBeGreaterThanOrEqual(0);
            if (before.rolloutRun?.id === run.id) expect(run.step - before.rolloutRun.step).toBeLessThanOrEqual(1);
          }
          // Full only once every step passed (the plan's end), never by a jump.
          if (stateOf(after) === 'full') expect(run?.status === 'done' && run.step === steps - 1).toBe(true);
          // Every rollout move leaves the routing the step's own, so the driver never mistakes it for a manual change.
          const recorded = run !== undefined && (run.id !== before.rolloutRun?.id || run.records.length !== before.rolloutRun.records.length);
          if (recorded && (run.status === 'rolled-back' || run.status === 'aborted')) expect(stateOf(after)).toBe('idle');
          if (op !== 'manual' && op !== 'pause' && recorded && isActive(run)) expect(manualChange(next, 'app', run)).toBeUndefined();
          if (op === 'manual' && isActive(run) && run.plan.steps[run.step]!.percent !== 33) expect(manualChange(next, 'app', run)).toBeDefined();
          document = next;
        }
      }),
      { numRuns: 300 },
    );
  });

  it('abort with nothing in progress is refused and never touches stable', () => {
    expect(() => rollBack(base, 'app', 'ops', 'abort', new Date(), [], 'abort')).toThrow(expect.objectContaining({ code: 'GG_ROLLOUT_NOT_RUNNING' }));
  });
});
