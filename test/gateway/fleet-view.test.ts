import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fleetViewOf } from '../../src/gateway/fleet-view.js';
import type { FleetLoadEntry, LoadReport } from '../../src/store/store.js';

const report = (servedVersion: number | null, servedEpoch: string | null): LoadReport => ({ servedVersion, servedEpoch, servedForMs: 1_000, inFlightRequests: 0, openConnections: 0, upstreams: {} });

describe('fleet view', () => {
  const served = fc.record({ version: fc.option(fc.integer({ min: 0, max: 4 }), { nil: null }), epoch: fc.option(fc.constantFrom('a', 'b'), { nil: null }) });

  it('split exactly when two gateways serve a different version or epoch; behind exactly those that differ from the store', () => {
    fc.assert(
      fc.property(served, fc.array(served, { maxLength: 6 }), fc.option(fc.record({ version: fc.integer({ min: 0, max: 4 }), epoch: fc.constantFrom('a', 'b') }), { nil: undefined }), (own, others, store) => {
        const entries: FleetLoadEntry[] = others.map((o, i) => ({ instanceId: `g${i}`, at: 0, report: report(o.version, o.epoch) }));
        const view = fleetViewOf({ instanceId: 'self', report: report(own.version, own.epoch) }, entries, store);
        const all = [own, ...others];
        const distinct = new Set(all.map((g) => `${g.version}/${g.epoch}`));
        expect(view.split).toBe(distinct.size > 1);
        expect(view.versions.reduce((sum, v) => sum + v.gateways, 0)).toBe(all.length);
        expect(view.gateways).toHaveLength(all.length);
        expect(view.gateways.filter((g) => g.self)).toHaveLength(1);
        if (store) {
          view.gateways.forEach((g, i) => expect(g.behind).toBe(all[i]!.version !== store.version || all[i]!.epoch !== store.epoch));
        }
      }),
    );
  });

  it('without fleet reports (a store that serves one gateway) the view is this process, never split', () => {
    const view = fleetViewOf({ instanceId: 'self', report: report(3, 'a') }, undefined, { version: 3, epoch: 'a' });
    expect(view).toMatchObject({ scope: 'process', split: false, gateways: [{ instanceId: 'self', behind: false }] });
  });

  it('its own report in the store is not counted twice', () => {
    const view = fleetViewOf({ instanceId: 'self', report: report(3, 'a') }, [{ instanceId: 'self', at: 0, report: report(2, 'a') }], undefined);
    expect(view.gateways).toHaveLength(1);
    expect(view.split).toBe(false);
  });
});
