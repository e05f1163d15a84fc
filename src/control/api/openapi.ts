import { z } from 'zod';
import { ErrorCodes } from '../../errors.js';
import { defineRoute, type Route } from './context.js';
import { ErrorBody } from './shapes.js';

const jsonSchema = (schema: z.ZodType, io: 'input' | 'output') => z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'openapi-3.0' });

/** The OpenAPI 3.0 document of `routes`, generated from their zod shapes. */
export function openApiDocument(routes: readonly Route[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = route.url.replace(/:([A-Za-z]+)/g, '{$1}');
    const parameters = [...route.url.matchAll(/:([A-Za-z]+)/g)].map((match) => ({ name: match[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (route.query) {
      const query = jsonSchema(route.query, 'input') as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(query.properties ?? {})) {
        parameters.push({ name, in: 'query', required: (query.required ?? []).includes(name), schema: schema as { type: string } });
      }
    }
    const responses: Record<string, unknown> = { 200: { description: 'OK', content: { [route.responseType ?? 'application/json']: { schema: jsonSchema(route.response, 'output') } } } };
    const errors = new Set<number>([...(route.errors ?? []), ...(route.auth === false ? [] : [401]), ...(route.body ? [400, 413] : [])]);
    for (const status of [...errors].sort()) {
      const codes = Object.entries(ErrorCodes).filter(([, entry]) => entry.status === status).map(([code]) => code);
      responses[status] = { description: `Error: ${codes.join(', ')}`, content: { 'application/json': { schema: jsonSchema(ErrorBody, 'output') } } };
    }
    (paths[path] ??= {})[route.method.toLowerCase()] = {
      summary: route.summary,
      tags: [route.tag],
      ...(route.auth === false ? { security: [] } : {}),
      ...(parameters.length ? { parameters } : {}),
      ...(route.body ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(route.body, 'input') } } } } : {}),
      responses,
    };
  }
  return {
    openapi: '3.0.3',
    info: { title: 'graygate admin API', version, description: 'Every write is validated, versioned (compare-and-set) and recorded with actor, time and reason.' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths,
  };
}

/** GET /openapi.json: the document of every route, this one included. */
export function openApiRoute(routes: () => readonly Route[], version: string): Route {
  let cached: Record<string, unknown> | undefined;
  return defineRoute({
    method: 'GET',
    url: '/openapi.json',
    summary: 'This OpenAPI document, generated from the zod schemas the API validates with. No token needed.',
    tag: 'health',
    auth: false,
    response: z.record(z.string(), z.unknown()),
    async handler() {
      cached ??= openApiDocument(routes(), version);
      return { body: cached };
    },
  });
}
