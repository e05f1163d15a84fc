import { isBehind } from '../../dataplane/workers/metrics.js';
import { isGraygateError } from '../../errors.js';
import { candidatesOf } from '../../config/release-checks.js';
import { fleetViewOf, type FleetView } from '../../gateway/fleet-view.js';
import type { StoredVersion } from '../../store/store.js';
import { stateOf } from '../lifecycle.js';
import { defineRoute, type AdminContext, type Route } from './context.js';
import { scopedLoad, type ScopedLoad } from './drain-report.js';
import { FleetViewShape, Health, Ready, StatusResult } from './shapes.js';

type Failure = { code: string; message: string };

/** A store error as the API shows it; anything else is rethrown (a bug, a 500). */
function failureOf(error: unknown): Failure {
  if (!isGraygateError(error)) throw error;
  return { code: error.code, message: error.message };
}

/**
 * The store's current version and the fleet's load, read side by side under one deadline, so a
 * store outage costs one deadline (not one per read) before the answer.
 */
async function readStoreAndFleet(context: AdminContext): Promise<{
  current: StoredVersion | undefined;
  load: ScopedLoad | undefined;
  loadError: Failure | undefined;
}> {
  const [current, load] = await Promise.allSettled([context.store.current({ deadline: Date.now() + context.store.deadlineMs }), scopedLoad(context)]);
  return {
    current: current.status === 'fulfilled' ? current.value : undefined,
    load: load.status === 'fulfilled' ? load.value : undefined,
    loadError: load.status === 'rejected' ? failureOf(load.reason) : undefined,
  };
}

function fleetOf(context: AdminContext, current: StoredVersion | undefined, load: ScopedLoad): FleetView {
  return fleetViewOf({ instanceId: context.instanceId, report: context.localLoad() }, load.others, current);
}

/** Health (the process answers), readiness (a snapshot is served, the store was reached), the fleet view and a status overview. */
export const healthRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/healthz',
    summary: 'The admin listener answers. No token needed.',
    tag: 'health',
    auth: false,
    response: Health,
    async handler() {
      return { body: { status: 'ok' } };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/readyz',
    summary:
      'Ready (200) once the gateway serves a routing snapshot in every worker and its store has answered at least once since start, else 503. ' +
      'A gateway whose store was never reached still routes (its last good copy, the config file, or stable), but is not ready. No token needed.',
    tag: 'health',
    auth: false,
    response: Ready,
    errors: [503],
    async handler(_request, context) {
      const snapshot = context.snapshot();
      const workers = context.workers?.().map((worker) => ({ pid: worker.pid, version: worker.version, behind: isBehind(worker), behindMs: worker.behindMs }));
      const behind = workers?.filter((worker) => worker.behind) ?? [];
      const storeReached = context.store.health().everUp;
      // A worker that serves an older routing than the others answers some requests by it: not ready.
      const reason =
        snapshot === undefined
          ? 'no routing snapshot is served yet'
          : behind.length > 0
            ? `${behind.length} worker(s) have not confirmed routing version ${snapshot.version}: ${behind.map((w) => `pid ${w.pid} serves ${w.version ?? 'nothing'}`).join(', ')}`
            : !storeReached
              ? `the ${context.store.kind} store has not been reached since start (check its address); routing is on what the gateway had at start`
              : undefined;
      return {
        status: reason === undefined ? 200 : 503,
        body: { ready: reason === undefined, servedVersion: snapshot?.version ?? null, storeReached, ...(workers ? { workers } : {}), ...(reason ? { reason } : {}) },
      };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/fleet',
    summary: 'What each gateway of the fleet serves (version and store epoch) against the store, and whether the fleet is split.',
    tag: 'health',
    response: FleetViewShape,
    errors: [503],
    async handler(_request, context) {
      const [current, load] = await Promise.allSettled([context.store.current({ deadline: Date.now() + context.store.deadlineMs }), scopedLoad(context)]);
      // Without the reports there is no fleet to show: the store is unreachable (503).
      if (load.status === 'rejected') throw load.reason;
      const stored = current.status === 'fulfilled' ? current.value : undefined;
      return { body: { ...fleetOf(context, stored, load.value), ...(current.status === 'rejected' ? { storeError: failureOf(current.reason) } : {}) } };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/status',
    summary: 'Services, their release states and rules, the store\'s and the served versions, what each gateway of the fleet serves, and the load in flight.',
    tag: 'health',
    response: StatusResult,
    async handler(_request, context) {
      const snapshot = context.snapshot();
      const { current, load, loadError } = await readStoreAndFleet(context);
      const document = current?.document ?? snapshot?.document;
      const services = (document?.services ?? []).map((service) => ({
        name: service.name,
        stable: service.stable,
        state: stateOf(service),
        candidates: service.release ? candidatesOf(service.release).map((c) => c.upstream) : [],
        rules: (service.release?.rules ?? []).map((rule, i) => rule.name ?? `rule ${i + 1}`),
      }));
      const lastError = context.syncStats().lastError;
      return {
        body: {
          version: current?.version ?? null,
          servedVersion: snapshot?.version ?? null,
          ready: snapshot !== undefined,
          services,
          dataPlane: context.dataPlaneStats(),
          ...(load ? { load: { scope: load.scope, gateways: load.reports.length, inFlightRequests: load.inFlightRequests, openConnections: load.openConnections, upstreams: load.upstreams } } : {}),
          ...(loadError ? { loadError } : {}),
          storeKind: context.store.kind,
          storeUp: context.store.health().up,
          ...(load ? { fleet: fleetOf(context, current, load) } : {}),
          ...(lastError ? { lastSyncError: lastError } : {}),
        },
      };
    },
  }),
];
