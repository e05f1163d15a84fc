import { z } from 'zod';
import type { Release } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import { applyAction, checkTransition, findService, stateOf, transitions, type LifecycleAction, type LifecycleState } from '../lifecycle.js';
import { commitChange, defineRoute, preconditionOf, readCurrent, type AdminContext, type Route } from './context.js';
import { drainReport } from './drain-report.js';
import { ActionBody, ActionResult, DrainReport, ReleaseOne, ReleasePutBody, WriteBody, WriteResult } from './shapes.js';

const actions = Object.keys(transitions) as LifecycleAction[];

/** The action that moves a release from `from` to `to` by a direct edit, if the table has one. */
function moveFor(from: LifecycleState, to: LifecycleState): LifecycleAction | undefined {
  if (from === to) return undefined;
  return actions.find((action) => transitions[action].from.includes(from) && transitions[action].to === to && action !== 'set');
}

/** A service's release: read it, edit it within the lifecycle, act on it, watch stable drain. */
export const releaseRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/v1/services/:name/release',
    summary: 'The release of a service and its lifecycle state (null release: idle, all stable).',
    tag: 'releases',
    response: ReleaseOne,
    errors: [404],
    async handler(request, context) {
      const current = await readCurrent(context);
      const { service } = findService(current.document, request.params.name!);
      return { body: { version: current.version, service: service.name, state: stateOf(service), release: service.release ?? null } };
    },
  }),
  defineRoute({
    method: 'PUT',
    url: '/v1/services/:name/release',
    summary:
      'Create or replace a release. A change of state must be a move of the lifecycle (idle → canary, canary → full, full → idle, any → idle); others are 409.',
    tag: 'releases',
    body: ReleasePutBody,
    response: WriteResult,
    errors: [400, 404, 409],
    async handler(request, context) {
      const name = request.params.name!;
      const outcome = await commitChange(context, { actor: request.actor, reason: request.body.reason, expectedVersion: preconditionOf(request) }, (document) => {
        const { service, index } = findService(document, name);
        const from = stateOf(service);
        const release = request.body.release as Release;
        const to: LifecycleState = release.state;
        const move = moveFor(from, to);
        if (from !== to && move === undefined) {
          // No single move goes there: let the table say why (e.g. idle → full skips canary).
          checkTransition(name, to === 'full' ? 'full' : to === 'canary' ? 'start' : 'rollback', from);
          throw new GraygateError('GG_ILLEGAL_TRANSITION', `cannot move the release of service "${name}" from ${from} to ${to}`);
        }
        const services = [...document.services];
        services[index] = { ...service, release };
        return { document: { ...document, services } };
      });
      return { body: outcome };
    },
  }),
  defineRoute({
    method: 'DELETE',
    url: '/v1/services/:name/release',
    summary: 'Remove the release: the same as rollback (allowed from every state, idempotent).',
    tag: 'releases',
    body: WriteBody,
    response: ActionResult,
    errors: [404, 409],
    async handler(request, context) {
      return act(request.params.name!, 'rollback', request.actor, request.body, preconditionOf(request), context);
    },
  }),
  defineRoute({
    method: 'POST',
    url: '/v1/services/:name/release/:action',
    summary:
      'A release action: start (idle → canary, with candidate and rules or percentage), set (canary: rules, percentage), full (canary → full), ' +
      'finish (full → idle, the release removed; rules that read a store key stay, back in canary), rollback (any → idle at once; idempotent). Illegal moves are 409 GG_ILLEGAL_TRANSITION.',
    tag: 'releases',
    body: ActionBody,
    response: ActionResult,
    errors: [400, 404, 409],
    async handler(request, context) {
      const action = request.params.action as LifecycleAction;
      if (!actions.includes(action)) {
        throw new GraygateError('GG_NOT_FOUND', `release action "${request.params.action}" does not exist; actions: ${actions.join(', ')}`);
      }
      return act(request.params.name!, action, request.actor, request.body, preconditionOf(request), context);
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/services/:name/release/drain',
    summary:
      'In full: whether stable has drained, from requests in flight and connections open per upstream, summed over every gateway that ' +
      'reported its load recently when the store is shared (Redis: scope fleet), else this gateway process\'s (scope process).',
    tag: 'releases',
    response: DrainReport,
    errors: [404, 503],
    async handler(request, context) {
      return { body: await drainReport(context, request.params.name!) };
    },
  }),
];

async function act(
  name: string,
  action: LifecycleAction,
  actor: string,
  body: z.output<typeof ActionBody>,
  expectedVersion: number | undefined,
  context: AdminContext,
) {
  let from: LifecycleState = 'idle';
  let to: LifecycleState = 'idle';
  const { reason, version: _version, ...params } = body;
  const outcome = await commitChange(context, { actor, reason, expectedVersion }, (document) => {
    const result = applyAction(document, name, action, params);
    from = result.from;
    to = result.to;
    return result;
  });
  return { body: { ...outcome, service: name, from, to } };
}
