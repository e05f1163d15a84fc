import { GraygateError } from '../../errors.js';
import { explainRequest } from '../../rules/explain.js';
import { defineRoute, type Route } from './context.js';
import { ExplainBody, Explanation } from './shapes.js';

/** Explain: where the snapshot this gateway serves sends a described request, and why. */
export const explainRoutes: Route[] = [
  defineRoute({
    method: 'POST',
    url: '/v1/explain',
    summary: 'Where a described request (host, path, headers, cookies, query, client IP) goes, which rule decided, and the identity seen.',
    tag: 'explain',
    body: ExplainBody,
    response: Explanation,
    errors: [400, 404, 503],
    async handler(request, context) {
      const snapshot = context.snapshot();
      if (!snapshot) throw new GraygateError('GG_NOT_READY', 'the gateway serves no routing snapshot yet');
      return { body: await explainRequest(snapshot, request.body) };
    },
  }),
];
