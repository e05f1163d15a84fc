import { GraygateError } from '../../errors.js';
import { commitChange, defineRoute, preconditionOf, readCurrent, type Route } from './context.js';
import { ConfigPutBody, VersionedDocument, WriteResult } from './shapes.js';

/** The whole routing document: read it with its version, replace it naming the version read. */
export const configRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/v1/config',
    summary: 'The current routing document, its version (also as ETag) and who wrote it.',
    tag: 'config',
    response: VersionedDocument,
    async handler(_request, context) {
      const current = await readCurrent(context);
      return { headers: { etag: `"${current.version}"` }, body: { version: current.version, meta: current.meta, document: current.document } };
    },
  }),
  defineRoute({
    method: 'PUT',
    url: '/v1/config',
    summary: 'Replace the whole routing document. Needs the version read (If-Match or `version`; 0 seeds an empty store); 409 when stale.',
    tag: 'config',
    body: ConfigPutBody,
    response: WriteResult,
    errors: [400, 409],
    async handler(request, context) {
      const expectedVersion = preconditionOf(request);
      if (expectedVersion === undefined) {
        throw new GraygateError('GG_REQUEST_INVALID', 'version: required: the version you read (or If-Match: "N"), so a concurrent change is not overwritten');
      }
      const outcome = await commitChange(context, { actor: request.actor, reason: request.body.reason, expectedVersion, allowEmpty: true }, () => ({ document: request.body.document }));
      return { headers: { etag: `"${outcome.version}"` }, body: outcome };
    },
  }),
];
