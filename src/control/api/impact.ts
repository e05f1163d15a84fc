import { parseRoutingDocument } from '../../config/load.js';
import type { RoutingDocument } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import { compileForImpact, type ProposedRouting } from '../../observe/impact.js';
import { advance, startRun } from '../../rollout/run.js';
import { applyAction } from '../lifecycle.js';
import { defineRoute, readCurrent, type AdminContext, type Route } from './context.js';
import { ImpactBody, ImpactResult } from './shapes.js';
import type { z } from 'zod';

type Body = z.output<typeof ImpactBody>;

/** The document a body proposes, validated (400 naming each field when it is not valid). */
async function proposedOf(body: Body, context: AdminContext): Promise<{ document: RoutingDocument; version: number | 'proposed' }> {
  const given = [body.to !== undefined, body.document !== undefined, body.release !== undefined, body.rollout !== undefined].filter(Boolean).length;
  if (given !== 1) throw new GraygateError('GG_REQUEST_INVALID', `body: give exactly one of to, document, release, rollout (got ${given})`);
  if (body.to !== undefined) {
    const entry = await context.store.version(body.to);
    return { document: entry.document, version: entry.version };
  }
  if (body.document !== undefined) return { document: parseRoutingDocument(body.document), version: 'proposed' };
  const current = (await readCurrent(context)).document;
  if (body.release !== undefined) {
    const { service, action, params } = body.release;
    return { document: parseRoutingDocument(applyAction(current, service, action, params ?? {}).document), version: 'proposed' };
  }
  const { service, action, candidate, plan } = body.rollout!;
  const next =
    action === 'start'
      ? startRun(current, service, { candidate, plan, actor: 'impact', reason: 'dry run', now: new Date() })
      : advance(current, service, 'impact', 'dry run', new Date()).document;
  return { document: parseRoutingDocument(next), version: 'proposed' };
}

/** The impact of a change: how many recently seen callers would change version (counts only). */
export const impactRoutes: Route[] = [
  defineRoute({
    method: 'POST',
    url: '/v1/impact',
    summary:
      'How many of the callers this gateway saw recently (its in-memory identity sample) would change version under a proposed change: a kept version, a document, ' +
      'a release action or a rollout step. Counts only; no id ever leaves the gateway. Nothing is written.',
    tag: 'history',
    body: ImpactBody,
    response: ImpactResult,
    errors: [400, 404, 409, 503],
    async handler(request, context) {
      const served = context.snapshot();
      if (!served || !context.impact) throw new GraygateError('GG_NOT_READY', 'the gateway serves no routing snapshot yet');
      const proposed = await proposedOf(request.body, context);
      const fromEntry = request.body.from !== undefined ? await context.store.version(request.body.from) : undefined;
      const values = [...(served.storeValues ?? new Map<string, string | undefined>())];
      const to: ProposedRouting = { document: proposed.document, version: proposed.version === 'proposed' ? 0 : proposed.version, values };
      const from: ProposedRouting | undefined = fromEntry ? { document: fromEntry.document, version: fromEntry.version, values } : undefined;
      // Compiled here first: a document that does not compile is a 400 here, not a failure in every worker.
      compileForImpact(to);
      if (from) compileForImpact(from);
      const counts = await context.impact(from ? { from, to } : { to });
      return { body: { from: fromEntry?.version ?? served.version, to: proposed.version, scope: 'gateway', ...counts } };
    },
  }),
];
