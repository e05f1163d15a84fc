import { describe, expect, it } from 'vitest';
import { RoutingDocument } from '../../src/config/schema.js';
import { compileRouting } from '../../src/rules/compile.js';
import { makeFacts } from '../helpers/facts.js';

function doc(raw: unknown): RoutingDocument {
  return RoutingDocument.parse(raw);
}

const upstreams = { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } };

describe('compileRouting: release states', () => {
  it('idle sends everyone to stable, full to the candidate, canary lets rules decide', () => {
    const make = (state: string) =>
      compileRouting(
        doc({
          upstreams,
          services: [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', state, rules: [{ uidRange: { from: 1, to: 10 } }] } }],
        }),
        1,
      ).matchService('x', '/')!;
    const inRange = makeFacts({ userId: '5' });
    const outside = makeFacts({ userId: '50' });
    expect(make('idle').decide(inRange)).toMatchObject({ version: 'stable', reason: 'idle', dependsOnCaller: false });
    expect(make('full').decide(outside)).toMatchObject({ version: 'candidate', upstream: 'v2', reason: 'full', dependsOnCaller: false });
    const canary = make('canary');
    expect(canary.decide(inRange)).toMatchObject({ version: 'candidate', upstream: 'v2', reason: 'rule 1', dependsOnCaller: true });
    expect(canary.decide(outside)).toMatchObject({ version: 'stable', upstream: 'v1', reason: 'no rule matched', dependsOnCaller: true });
    expect(canary.needsIdentity).toBe(true);
    expect(make('idle').needsIdentity).toBe(false);
  });
});
