import { LATENCY_BUCKET_COUNT, type SparseHistogram } from './histogram.js';
import type { CounterReset, ExcludedGateway, FleetSample, FleetWindow, GatewayFigures, GatewaySample, ServiceFigures, VersionFigures } from './types.js';

/** A version's figures with nothing counted. */
export const NO_FIGURES: VersionFigures = Object.freeze({ requests: 0, errors: 0, failures: 0, latency: Object.freeze({}) });

/**
 * The fleet's figures between two reads of the store: for every gateway in both, its end figures
 * minus its start figures, summed. Pure.
 * - A gateway stale (or absent) at the end is left out and named: its requests of the window are unknown.
 * - A gateway absent at the start whose counters began after the start (a new or restarted
 *   gateway) contributes everything it counted; one whose counters began before is left out, named.
 * - A gateway whose counters went back, or whose `countersId` changed (a restart), contributes only
 *   what it counted since its restart, and is named in `resets`; a window is never negative.
 */
export function fleetWindow(start: FleetSample, end: FleetSample): FleetWindow {
  const before = new Map<string, GatewaySample>();
  for (const gateway of start.gateways) before.set(gateway.instanceId, gateway);
  const services: Record<string, ServiceFigures> = {};
  const gateways: string[] = [];
  const excluded: ExcludedGateway[] = [];
  const resets: CounterReset[] = [];
  const add = (figures: GatewayFigures, base: GatewayFigures | undefined): void => {
    for (const [name, service] of Object.entries(figures.services)) {
      const from = base?.services[name];
      const delta: ServiceFigures = { stable: subtract(service.stable, from?.stable), candidate: subtract(service.candidate, from?.candidate) };
      const sum = services[name];
      services[name] = sum === undefined ? delta : { stable: addVersionFigures(sum.stable, delta.stable), candidate: addVersionFigures(sum.candidate, delta.candidate) };
    }
  };
  for (const gateway of end.gateways) {
    const { instanceId, figures } = gateway;
    if (figures === undefined) {
      excluded.push({ instanceId, reason: 'its report carries no per-version figures (an older graygate, or a data plane whose figures could not be read)' });
      continue;
    }
    const first = before.get(instanceId)?.figures;
    if (first === undefined) {
      if (figures.startedAt >= start.at) {
        add(figures, undefined);
        gateways.push(instanceId);
      } else {
        excluded.push({ instanceId, reason: 'no report of it at the start of the window, and its counters began before: its share of the window is unknown' });
      }
      continue;
    }
    if (first.countersId !== figures.countersId || wentBack(first, figures)) {
      resets.push({
        instanceId,
        reason: first.countersId !== figures.countersId ? 'it restarted during the window; only what it counted since its restart is included' : 'its counters went back during the window; only what it counted since is included',
      });
      add(figures, undefined);
    } else {
      add(figures, first);
    }
    gateways.push(instanceId);
  }
  const atEnd = new Set(end.gateways.map((gateway) => gateway.instanceId));
  for (const stale of end.stale) {
    excluded.push({ instanceId: stale.instanceId, reason: stale.ageMs === null ? 'its report could not be read' : `its last report is ${Math.round(stale.ageMs)} ms old (stale)` });
    atEnd.add(stale.instanceId);
  }
  for (const gateway of start.gateways) {
    if (!atEnd.has(gateway.instanceId)) excluded.push({ instanceId: gateway.instanceId, reason: 'it stopped reporting during the window (stopped, or its report went stale)' });
  }
  return { fromMs: start.at, toMs: end.at, services, gateways, excluded, resets };
}

/** True when any counter of `later` is below the same counter of `earlier` (counters only grow). */
function wentBack(earlier: GatewayFigures, later: GatewayFigures): boolean {
  for (const [name, service] of Object.entries(earlier.services)) {
    const now = later.services[name];
    if (now === undefined) return true;
    for (const version of ['stable', 'candidate'] as const) {
      const a = service[version];
      const b = now[version];
      if (b.requests < a.requests || b.errors < a.errors || b.failures < a.failures) return true;
      for (const key in a.latency) if ((b.latency[key] ?? 0) < a.latency[key]!) return true;
    }
  }
  return false;
}

function subtract(a: VersionFigures, b: VersionFigures | undefined): VersionFigures {
  if (b === undefined) return a;
  const latency: Record<string, number> = {};
  for (const key in a.latency) {
    const count = a.latency[key]! - (b.latency[key] ?? 0);
    if (count > 0) latency[key] = count;
  }
  return { requests: Math.max(0, a.requests - b.requests), errors: Math.max(0, a.errors - b.errors), failures: Math.max(0, a.failures - b.failures), latency };
}

/** `a + b`, field by field and bucket by bucket. */
export function addVersionFigures(a: VersionFigures, b: VersionFigures): VersionFigures {
  return { requests: a.requests + b.requests, errors: a.errors + b.errors, failures: a.failures + b.failures, latency: addHistograms(a.latency, b.latency) };
}

function addHistograms(a: SparseHistogram, b: SparseHistogram): SparseHistogram {
  const sum: Record<string, number> = { ...a };
  for (const key in b) sum[key] = (sum[key] ?? 0) + b[key]!;
  return sum;
}

/** A service's figures in a window; both versions at zero when it had no traffic. */
export function serviceFiguresOf(window: FleetWindow, service: string): ServiceFigures {
  return window.services[service] ?? { stable: NO_FIGURES, candidate: NO_FIGURES };
}

/**
 * One gateway's own figures as a fleet sample (the file store, where the single gateway drives:
 * there is no fleet to read, and the figures are its own).
 */
export function localFleetSample(instanceId: string, figures: GatewayFigures | undefined, atMs: number): FleetSample {
  return { at: atMs, gateways: [{ instanceId, at: atMs, figures }], stale: [] };
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;

function parseVersion(raw: unknown): VersionFigures | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const value = raw as { requests?: unknown; errors?: unknown; failures?: unknown; latency?: unknown };
  if (!isCount(value.requests) || !isCount(value.errors) || !isCount(value.failures)) return undefined;
  if (value.latency === null || typeof value.latency !== 'object' || Array.isArray(value.latency)) return undefined;
  const latency: Record<string, number> = {};
  for (const [key, count] of Object.entries(value.latency as Record<string, unknown>)) {
    const index = Number(key);
    if (!Number.isInteger(index) || index < 0 || index >= LATENCY_BUCKET_COUNT || !isCount(count)) return undefined;
    latency[key] = count;
  }
  return { requests: value.requests, errors: value.errors, failures: value.failures, latency };
}

/** Checks the shape of figures read from a report (a malformed one is left out, never trusted). */
export function parseGatewayFigures(raw: unknown): GatewayFigures | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const value = raw as { countersId?: unknown; startedAt?: unknown; services?: unknown };
  if (typeof value.countersId !== 'string' || !isCount(value.startedAt)) return undefined;
  if (value.services === null || typeof value.services !== 'object') return undefined;
  const services: Record<string, ServiceFigures> = {};
  for (const [name, service] of Object.entries(value.services as Record<string, { stable?: unknown; candidate?: unknown } | null>)) {
    if (service === null || typeof service !== 'object') return undefined;
    const stable = parseVersion(service.stable);
    const candidate = parseVersion(service.candidate);
    if (stable === undefined || candidate === undefined) return undefined;
    services[name] = { stable, candidate };
  }
  return { countersId: value.countersId, startedAt: value.startedAt, services };
}
