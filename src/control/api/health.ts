import { isBehind } from '../../dataplane/workers/metrics.js';
import { isGraygateError } from '../../errors.js';
import { candidatesOf } from '../../config/release-checks.js';
import { stateOf } from '../lifecycle.js';
import { defineRoute, type Route } from './context.js';
import { scopedLoad, type ScopedLoad } from './releases.js';
import { Health, Ready, StatusResult } from './shapes.js';

/** Health (the process answers), readiness (a snapshot is served) and a status overview. */
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
    summary: 'Ready (200) once the gateway serves a routing snapshot in every worker, else 503. No token needed.',
    tag: 'health',
    auth: false,
    response: Ready,
    errors: [503],
    async handler(_request, context) {
      const snapshot = context.snapshot();
      const workers = context.workers?.().map((worker) => ({ pid: worker.pid, version: worker.version, behind: isBehind(worker), behindMs: worker.behindMs }));
      const behind = workers?.filter((worker) => worker.behind) ?? [];
      // A worker that serves an older routing than the others answers some requests by it: not ready.
      const ready = snapshot !== undefined && behind.length === 0;
      const reason =
        snapshot === undefined
          ? 'no routing snapshot is served yet'
          : behind.length > 0
            ? `${behind.length} worker(s) have not confirmed routing version ${snapshot.version}: ${behind.map((w) => `pid ${w.pid} serves ${w.version ?? 'nothing'}`).join(', ')}`
            : undefined;
      return { status: ready ? 200 : 503, body: { ready, servedVersion: snapshot?.version ?? null, ...(workers ? { workers } : {}), ...(reason ? { reason } : {}) } };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/status',
    summary: 'Services, their release states and rules, the store\'s and the served versions, and this process\'s in-flight requests.',
    tag: 'health',
    response: StatusResult,
    async handler(_request, context) {
      const snapshot = context.snapshot();
      let version: number | null = null;
      let document = snapshot?.document;
      try {
        const current = await context.store.current();
        version = current.version;
        document = current.document;
      } catch (error) {
        if (!isGraygateError(error)) throw error;
      }
      const services = (document?.services ?? []).map((service) => ({
        name: service.name,
        stable: service.stable,
        state: stateOf(service),
        candidates: service.release ? candidatesOf(service.release).map((c) => c.upstream) : [],
        rules: (service.release?.rules ?? []).map((rule, i) => rule.name ?? `rule ${i + 1}`),
      }));
      const lastError = context.syncStats().lastError;
      let load: Omit<ScopedLoad, 'reports'> & { gateways: number } | undefined;
      let loadError: { code: string; message: string } | undefined;
      try {
        const { reports, ...sums } = await scopedLoad(context);
        load = { ...sums, gateways: reports.length };
      } catch (error) {
        if (!isGraygateError(error)) throw error;
        loadError = { code: error.code, message: error.message };
      }
      return {
        body: {
          version,
          servedVersion: snapshot?.version ?? null,
          ready: snapshot !== undefined,
          services,
          dataPlane: context.dataPlaneStats(),
          ...(load ? { load } : {}),
          ...(loadError ? { loadError } : {}),
          storeKind: context.store.kind,
          ...(lastError ? { lastSyncError: lastError } : {}),
        },
      };
    },
  }),
];
