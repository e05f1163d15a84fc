import type { z } from 'zod';
import { GraygateError } from '../../errors.js';
import { FLEET_LOAD_STALE_MS } from '../../gateway/load-reporter.js';
import type { FleetLoadEntry, LoadFigures, LoadReport } from '../../store/store.js';
import { findService, stateOf } from '../lifecycle.js';
import type { AdminContext } from './context.js';
import type { DrainReport } from './shapes.js';

/**
 * The drain report: after `full`, whether stable has drained, from the load every gateway of the
 * fleet reports (requests in flight and connections open per upstream), so an operator knows when
 * stable can be updated. Also the fleet's summed load that the status and fleet views show.
 */

/**
 * How long a gateway must have served a version before its in-flight count of 0 proves a drain:
 * with `--workers`, the counts are what each worker last reported (every 100 ms, on change) and
 * the snapshot reaches the workers by message, so a 0 read at once could predate the switch.
 */
export const DRAIN_SETTLE_MS = 500;

/** Load figures summed over `scope`: this process, or every gateway that reported recently. */
export interface ScopedLoad {
  readonly scope: 'process' | 'fleet';
  readonly reports: readonly LoadReport[];
  /** The other gateways' reports with their names (undefined in the `process` scope). */
  readonly others: readonly FleetLoadEntry[] | undefined;
  readonly inFlightRequests: number;
  readonly openConnections: number;
  readonly upstreams: Readonly<Record<string, LoadFigures>>;
}

/**
 * This gateway's load, or, on a store shared by a fleet (Redis), the sum of every gateway's last
 * report fresher than FLEET_LOAD_STALE_MS, with this gateway's own figures taken live. Rejects
 * GG_STORE_UNAVAILABLE when the fleet's reports cannot be read: a fleet figure is never guessed.
 */
export async function scopedLoad(context: AdminContext): Promise<ScopedLoad> {
  const own = context.localLoad();
  let reports: LoadReport[] = [own];
  let scope: ScopedLoad['scope'] = 'process';
  let others: FleetLoadEntry[] | undefined;
  if (context.store.fleet !== undefined) {
    const entries = await context.store.fleet.readFleetLoad(FLEET_LOAD_STALE_MS);
    others = entries.filter((entry) => entry.instanceId !== context.instanceId);
    reports = [own, ...others.map((entry) => entry.report)];
    scope = 'fleet';
  }
  let inFlightRequests = 0;
  let openConnections = 0;
  const upstreams: Record<string, { inFlightRequests: number; openConnections: number }> = {};
  for (const report of reports) {
    inFlightRequests += report.inFlightRequests;
    openConnections += report.openConnections;
    for (const [name, load] of Object.entries(report.upstreams)) {
      const sum = (upstreams[name] ??= { inFlightRequests: 0, openConnections: 0 });
      sum.inFlightRequests += load.inFlightRequests;
      sum.openConnections += load.openConnections;
    }
  }
  return { scope, reports, others, inFlightRequests, openConnections, upstreams };
}

/**
 * Whether stable has drained after full (see DrainReport): over the fleet on a shared store, else
 * this process. Drained when the release is full here, every reporting gateway has served at
 * least this version for DRAIN_SETTLE_MS, and nothing is in flight to the stable upstream.
 */
export async function drainReport(context: AdminContext, serviceName: string): Promise<z.output<typeof DrainReport>> {
  const snapshot = context.snapshot();
  if (!snapshot) throw new GraygateError('GG_NOT_READY', 'the gateway serves no routing snapshot yet');
  const { service } = findService(snapshot.document, serviceName);
  const state = stateOf(service);
  const load = await scopedLoad(context);
  const stableLoad = load.upstreams[service.stable] ?? { inFlightRequests: 0, openConnections: 0 };
  const gatewaysBehind = load.reports.filter((report) => report.servedVersion === null || report.servedVersion < snapshot.version || report.servedForMs < DRAIN_SETTLE_MS).length;
  return {
    service: serviceName,
    state,
    servedVersion: snapshot.version,
    scope: load.scope,
    gateways: load.reports.length,
    gatewaysBehind,
    inFlightRequests: load.inFlightRequests,
    openConnections: load.openConnections,
    stable: { upstream: service.stable, ...stableLoad },
    upstreams: load.upstreams,
    drained: state === 'full' && gatewaysBehind === 0 && stableLoad.inFlightRequests === 0,
  };
}
