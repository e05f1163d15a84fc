import { GraygateError } from '../../errors.js';
import { diffValues } from '../diff.js';
import { commitChange, defineRoute, preconditionOf, type Route } from './context.js';
import { DiffQuery, DiffResult, HistoryList, HistoryQuery, VersionedDocument, WriteBody, WriteResult } from './shapes.js';

function versionParam(text: string | undefined): number {
  const version = Number(text);
  if (!Number.isSafeInteger(version) || version < 1) throw new GraygateError('GG_REQUEST_INVALID', `version: expected an integer from 1, got ${JSON.stringify(text)}`);
  return version;
}

/** History: who changed what, when and why; a diff between two versions; restore an earlier one. */
export const historyRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/v1/history',
    summary: 'Versions kept, newest first: each with the versions before and after, actor, time and reason.',
    tag: 'history',
    query: HistoryQuery,
    response: HistoryList,
    async handler(request, context) {
      const versions = await context.store.history(request.query.limit !== undefined ? { limit: request.query.limit } : {});
      return {
        body: { versions: versions.map((entry) => ({ version: entry.version, previousVersion: entry.version - 1, ...entry.meta })) },
      };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/history/:version',
    summary: 'One kept version, with its document.',
    tag: 'history',
    response: VersionedDocument,
    errors: [404],
    async handler(request, context) {
      const entry = await context.store.version(versionParam(request.params.version));
      return { body: { version: entry.version, meta: entry.meta, document: entry.document } };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/diff',
    summary: 'What changed between two kept versions (`to` defaults to the current one).',
    tag: 'history',
    query: DiffQuery,
    response: DiffResult,
    errors: [400, 404],
    async handler(request, context) {
      const from = await context.store.version(request.query.from);
      const to = request.query.to !== undefined ? await context.store.version(request.query.to) : await context.store.current();
      return { body: { from: from.version, to: to.version, changes: diffValues(from.document, to.document) } };
    },
  }),
  defineRoute({
    method: 'POST',
    url: '/v1/history/:version/restore',
    summary: 'Write an earlier version\'s document as a new version (history is never rewritten). Refused with 409 when the precondition is stale.',
    tag: 'history',
    body: WriteBody,
    response: WriteResult,
    errors: [400, 404, 409],
    async handler(request, context) {
      const target = await context.store.version(versionParam(request.params.version));
      const reason = `restore version ${target.version}: ${request.body.reason}`;
      const outcome = await commitChange(context, { actor: request.actor, reason, expectedVersion: preconditionOf(request) }, (current) => ({
        document: target.document,
        changed: diffValues(current, target.document).length > 0,
      }));
      return { body: outcome };
    },
  }),
];
