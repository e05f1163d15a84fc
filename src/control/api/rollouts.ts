import type { RolloutRun } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import { notificationOf, sendNotification } from '../../rollout/notify.js';
import { activeRun, advance, pauseOrResume, rollBack, startRun, type Move } from '../../rollout/run.js';
import { findService, stateOf } from '../lifecycle.js';
import { commitChange, defineRoute, preconditionOf, readCurrent, type AdminContext, type Route } from './context.js';
import { RolloutActionResult, RolloutStartBody, RolloutStatus, WriteBody } from './shapes.js';

const actions = ['pause', 'resume', 'promote', 'abort'] as const;
type Action = (typeof actions)[number];

/** Writes a rollout move through the one write path, then notifies and logs it. */
async function commitMove(context: AdminContext, name: string, request: { actor: string; reason: string; expectedVersion: number | undefined }, mutate: (document: Parameters<typeof startRun>[0]) => Move) {
  let move: Move | undefined;
  const outcome = await commitChange(context, request, (document) => {
    move = mutate(document);
    return { document: move.document, changed: move.document !== document };
  });
  const run = move?.run as RolloutRun | undefined;
  if (move && run && outcome.changed) {
    const evidence = run.records.at(-1)?.evidence ?? [];
    context.logger[move.event === 'abort' ? 'warn' : 'info'](
      { event: `rollout-${move.event}`, service: name, rollout: run.id, step: run.step + 1, status: run.status, actor: request.actor, version: outcome.version },
      `rollout of ${run.candidate} on ${name}: ${move.event} by ${request.actor}: ${request.reason}`,
    );
    void sendNotification(run, notificationOf(name, run, move.event, request.actor, request.reason, evidence), context.logger);
  }
  return { body: { ...outcome, service: name, run: run ?? null } };
}

/** A service's progressive rollout: its status with live evidence, start, and the operator's controls. */
export const rolloutRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/v1/services/:name/rollout',
    summary: 'The rollout of a service: its plan, the current or last run with every step\'s record and evidence, and live evidence from the driving gateway.',
    tag: 'rollouts',
    response: RolloutStatus,
    errors: [404],
    async handler(request, context) {
      const current = await readCurrent(context);
      const { service } = findService(current.document, request.params.name!);
      const live = service.rolloutRun && context.rolloutLive ? await context.rolloutLive(service.name) : undefined;
      const { service: _service, status: _status, ...liveBody } = (live ?? {}) as Record<string, unknown>;
      return {
        body: {
          version: current.version,
          service: service.name,
          state: stateOf(service),
          plan: service.rollout ?? null,
          run: service.rolloutRun ?? null,
          live: live && live.rollout === service.rolloutRun?.id ? liveBody : null,
        },
      };
    },
  }),
  defineRoute({
    method: 'POST',
    url: '/v1/services/:name/rollout/start',
    summary: 'Start a rollout at step 1 (a run after a rollback starts over). From idle or canary; 409 while one is in progress or in full.',
    tag: 'rollouts',
    body: RolloutStartBody,
    response: RolloutActionResult,
    errors: [400, 404, 409],
    async handler(request, context) {
      const name = request.params.name!;
      return commitMove(context, name, { actor: request.actor, reason: request.body.reason, expectedVersion: preconditionOf(request) }, (document) => {
        const next = startRun(document, name, { candidate: request.body.candidate, plan: request.body.plan, actor: request.actor, reason: request.body.reason, now: new Date() });
        return { document: next, run: findService(next, name).service.rolloutRun!, event: 'start' };
      });
    },
  }),
  defineRoute({
    method: 'POST',
    url: '/v1/services/:name/rollout/:action',
    summary:
      'pause (routing stays; the driver waits), resume (the step starts over, its routing put back), promote (the next step now: passes a gate, or skips the rest of a hold), ' +
      'abort (rolled back to stable at once, hold or not). 409 GG_ROLLOUT_NOT_RUNNING when no rollout is in progress: nothing is changed, stable included.',
    tag: 'rollouts',
    body: WriteBody,
    response: RolloutActionResult,
    errors: [400, 404, 409],
    async handler(request, context) {
      const name = request.params.name!;
      const action = request.params.action as Action;
      if (!actions.includes(action)) throw new GraygateError('GG_NOT_FOUND', `rollout action "${request.params.action}" does not exist; actions: start, ${actions.join(', ')}`);
      const { actor } = request;
      const reason = request.body.reason;
      return commitMove(context, name, { actor, reason, expectedVersion: preconditionOf(request) }, (document) => {
        const now = new Date();
        if (action === 'pause' || action === 'resume') return pauseOrResume(document, name, action, actor, reason, now);
        if (action === 'abort') return rollBack(document, name, actor, reason, now, [], 'abort');
        const { run } = activeRun(document, name);
        return advance(document, name, actor, reason, now, run.records.at(-1)?.evidence ?? [], 'promote');
      });
    },
  }),
];
