import type { Service } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import { findService } from '../lifecycle.js';
import { commitChange, defineRoute, preconditionOf, readCurrent, type Route } from './context.js';
import { ServiceList, ServiceOne, ServicePutBody, WriteBody, WriteResult } from './shapes.js';

/** Services: list, read, create or replace, delete. */
export const serviceRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/v1/services',
    summary: 'Every service with its release.',
    tag: 'services',
    response: ServiceList,
    async handler(_request, context) {
      const current = await readCurrent(context);
      return { body: { version: current.version, services: current.document.services } };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/services/:name',
    summary: 'One service.',
    tag: 'services',
    response: ServiceOne,
    errors: [404],
    async handler(request, context) {
      const current = await readCurrent(context);
      return { body: { version: current.version, service: findService(current.document, request.params.name!).service } };
    },
  }),
  defineRoute({
    method: 'PUT',
    url: '/v1/services/:name',
    summary: 'Create or replace a service (its name is the one in the path).',
    tag: 'services',
    body: ServicePutBody,
    response: WriteResult,
    errors: [400, 409],
    async handler(request, context) {
      const name = request.params.name!;
      const given = { ...request.body.service, name: request.body.service.name ?? name } as Service;
      if (given.name !== name) throw new GraygateError('GG_REQUEST_INVALID', `service.name: "${given.name}" differs from the name in the path ("${name}")`);
      const outcome = await commitChange(context, { actor: request.actor, reason: request.body.reason, expectedVersion: preconditionOf(request) }, (document) => {
        const services = [...document.services];
        const at = services.findIndex((service) => service.name === name);
        if (at >= 0) services[at] = given;
        else services.push(given);
        return { document: { ...document, services } };
      });
      return { body: outcome };
    },
  }),
  defineRoute({
    method: 'DELETE',
    url: '/v1/services/:name',
    summary: 'Delete a service.',
    tag: 'services',
    body: WriteBody,
    response: WriteResult,
    errors: [404, 409],
    async handler(request, context) {
      const name = request.params.name!;
      const outcome = await commitChange(context, { actor: request.actor, reason: request.body.reason, expectedVersion: preconditionOf(request) }, (document) => {
        const { index } = findService(document, name);
        return { document: { ...document, services: document.services.filter((_, i) => i !== index) } };
      });
      return { body: outcome };
    },
  }),
];
