import type { RoutingDocument } from '../../config/schema.js';
import { commitChange, defineRoute, notFound, preconditionOf, readCurrent, type Route } from './context.js';
import { UpstreamList, UpstreamOne, UpstreamPutBody, WriteBody, WriteResult } from './shapes.js';

const has = (document: RoutingDocument, name: string) => Object.prototype.hasOwnProperty.call(document.upstreams, name);

/** Upstreams: list, read, create or replace, delete (refused while a service names it). */
export const upstreamRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/v1/upstreams',
    summary: 'Every upstream, by name.',
    tag: 'upstreams',
    response: UpstreamList,
    async handler(_request, context) {
      const current = await readCurrent(context);
      return { body: { version: current.version, upstreams: current.document.upstreams } };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/upstreams/:name',
    summary: 'One upstream.',
    tag: 'upstreams',
    response: UpstreamOne,
    errors: [404],
    async handler(request, context) {
      const current = await readCurrent(context);
      const name = request.params.name!;
      if (!has(current.document, name)) throw notFound('upstream', name, Object.keys(current.document.upstreams));
      return { body: { version: current.version, name, upstream: current.document.upstreams[name] } };
    },
  }),
  defineRoute({
    method: 'PUT',
    url: '/v1/upstreams/:name',
    summary: 'Create or replace an upstream (e.g. point stable at updated servers).',
    tag: 'upstreams',
    body: UpstreamPutBody,
    response: WriteResult,
    errors: [400, 409],
    async handler(request, context) {
      const name = request.params.name!;
      const outcome = await commitChange(context, { actor: request.actor, reason: request.body.reason, expectedVersion: preconditionOf(request) }, (document) => ({
        document: { ...document, upstreams: { ...document.upstreams, [name]: request.body.upstream } },
      }));
      return { body: outcome };
    },
  }),
  defineRoute({
    method: 'DELETE',
    url: '/v1/upstreams/:name',
    summary: 'Delete an upstream; refused (400, naming the service) while a service or release names it.',
    tag: 'upstreams',
    body: WriteBody,
    response: WriteResult,
    errors: [400, 404, 409],
    async handler(request, context) {
      const name = request.params.name!;
      const outcome = await commitChange(context, { actor: request.actor, reason: request.body.reason, expectedVersion: preconditionOf(request) }, (document) => {
        if (!has(document, name)) throw notFound('upstream', name, Object.keys(document.upstreams));
        const upstreams = { ...document.upstreams };
        delete upstreams[name];
        return { document: { ...document, upstreams } };
      });
      return { body: outcome };
    },
  }),
];
