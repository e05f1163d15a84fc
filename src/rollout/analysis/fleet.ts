import type { FleetSample, FleetWindow, GatewayFigures, ServiceFigures, VersionFigures } from './types.js';

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
  void start;
  return { fromMs: start.at, toMs: end.at, services: {}, gateways: [], excluded: [], resets: [] };
}

/** A version's figures with nothing counted. */
export const NO_FIGURES: VersionFigures = Object.freeze({ requests: 0, errors: 0, failures: 0, latency: Object.freeze({}) });

/** `a + b`, field by field and bucket by bucket. */
export function addVersionFigures(a: VersionFigures, b: VersionFigures): VersionFigures {
  return { requests: a.requests + b.requests, errors: a.errors + b.errors, failures: a.failures + b.failures, latency: { ...a.latency, ...b.latency } };
}

/** A service's figures in a window; both versions at zero when it had no traffic. */
export function serviceFiguresOf(window: FleetWindow, service: string): ServiceFigures {
  return window.services[service] ?? { stable: NO_FIGURES, candidate: NO_FIGURES };
}

/** Checks the shape of figures read from a report (a malformed one is left out, never trusted). */
export function parseGatewayFigures(raw: unknown): GatewayFigures | undefined {
  void raw;
  return undefined;
}
