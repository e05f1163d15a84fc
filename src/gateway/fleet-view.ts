import { Gauge, type Registry } from 'prom-client';
import type { FleetLoadEntry, LoadReport, StoreHealth } from '../store/store.js';

/** One gateway of the fleet as its last report shows it. */
export interface FleetGateway {
  readonly instanceId: string;
  /** This process. */
  readonly self: boolean;
  readonly servedVersion: number | null;
  readonly servedEpoch: string | null;
  readonly servedForMs: number;
  /** Serves something other than the store's current version (or, with the store unknown, than the newest served). */
  readonly behind: boolean;
  /** What serves its traffic when not graygate itself (`openresty`). */
  readonly dataPlane?: string;
}

/** What every gateway serves, against the store. */
export interface FleetView {
  /** `fleet`: every gateway reporting to a shared store; `process`: this gateway alone (a store that serves one). */
  readonly scope: 'fleet' | 'process';
  /** The store's current version and epoch; null when it could not be read. */
  readonly store: { readonly version: number; readonly epoch: string | null } | null;
  readonly gateways: readonly FleetGateway[];
  /** Each distinct served (version, epoch) and how many gateways serve it, newest first. */
  readonly versions: readonly { readonly version: number | null; readonly epoch: string | null; readonly gateways: number }[];
  /** More than one (version, epoch) is served: requests get different routing on different gateways. */
  readonly split: boolean;
}

const keyOf = (version: number | null, epoch: string | null) => `${version ?? ''}@${epoch ?? ''}`;

/**
 * The fleet view of `own` (this gateway's report) and `others` (the other gateways' fresh
 * reports; undefined when the store holds none, and then the view is this process alone).
 */
export function fleetViewOf(
  own: { readonly instanceId: string; readonly report: LoadReport },
  others: readonly FleetLoadEntry[] | undefined,
  store: { readonly version: number; readonly epoch?: string | undefined } | undefined,
): FleetView {
  const reports = [{ instanceId: own.instanceId, self: true, report: own.report }, ...(others ?? []).filter((entry) => entry.instanceId !== own.instanceId).map((entry) => ({ ...entry, self: false }))];
  const counts = new Map<string, { version: number | null; epoch: string | null; gateways: number }>();
  for (const { report } of reports) {
    const key = keyOf(report.servedVersion, report.servedEpoch);
    const entry = counts.get(key) ?? { version: report.servedVersion, epoch: report.servedEpoch, gateways: 0 };
    entry.gateways++;
    counts.set(key, entry);
  }
  const versions = [...counts.values()].sort((a, b) => (b.version ?? -1) - (a.version ?? -1) || b.gateways - a.gateways);
  const storeKey = store ? keyOf(store.version, store.epoch ?? null) : undefined;
  const newest = versions[0];
  const gateways = reports.map(({ instanceId, self, report }) => ({
    instanceId,
    self,
    servedVersion: report.servedVersion,
    servedEpoch: report.servedEpoch,
    servedForMs: report.servedForMs,
    ...(report.dataPlane !== undefined ? { dataPlane: report.dataPlane } : {}),
    behind:
      storeKey !== undefined
        ? keyOf(report.servedVersion, report.servedEpoch) !== storeKey
        : newest !== undefined && keyOf(report.servedVersion, report.servedEpoch) !== keyOf(newest.version, newest.epoch),
  }));
  return {
    scope: others === undefined ? 'process' : 'fleet',
    store: store ? { version: store.version, epoch: store.epoch ?? null } : null,
    gateways,
    versions,
    split: versions.length > 1,
  };
}

/**
 * `graygate_store_up`, `graygate_fleet_versions` and `graygate_fleet_split`, at scrape time. The
 * fleet's reports are read then (one read per scrape, bounded by the store's deadline; with the
 * store unreachable the view is this gateway alone), not on a timer: an idle fleet costs the
 * store nothing more. Registered by the process that holds the store (the single process, or the
 * `--workers` primary); `max` so workers never add up.
 */
export function registerFleetMetrics(registry: Registry, inputs: { readonly storeHealth: () => StoreHealth; readonly fleet: () => Promise<FleetView> }): void {
  // One read serves both fleet gauges of a scrape.
  let pending: Promise<FleetView> | undefined;
  const fleetOnce = () => {
    pending ??= inputs.fleet().finally(() => setImmediate(() => (pending = undefined)));
    return pending;
  };
  new Gauge({
    name: 'graygate_store_up',
    help: 'Whether the store answers (1) or not (0): routing stays on the last good version while it does not.',
    registers: [registry],
    aggregator: 'max',
    collect() {
      this.set(inputs.storeHealth().up ? 1 : 0);
    },
  });
  new Gauge({
    name: 'graygate_fleet_versions',
    help: 'Distinct routing versions (version and store epoch) served by the gateways reporting to the shared store, this one included.',
    registers: [registry],
    aggregator: 'max',
    async collect() {
      this.set((await fleetOnce()).versions.length);
    },
  });
  new Gauge({
    name: 'graygate_fleet_split',
    help: '1 while the gateways of the fleet serve different routing versions (a split fleet), else 0.',
    registers: [registry],
    aggregator: 'max',
    async collect() {
      this.set((await fleetOnce()).split ? 1 : 0);
    },
  });
}
