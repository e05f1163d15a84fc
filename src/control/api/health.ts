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
    summary: 'Ready (200) once the gateway serves a routing snapshot, else 503. No token needed.',
    tag: 'health',
    auth: false,
    response: Ready,
    errors: [503],
    async handler(_request, context) {
      const snapshot = context.snapshot();
      return { status: snapshot ? 200 : 503, body: { ready: snapshot !== undefined, servedVersion: snapshot?.version ?? null } };
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
