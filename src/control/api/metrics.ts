import { z } from 'zod';
import { defineRoute, type Route } from './context.js';

/**
 * The gateway's metrics, behind the same bearer token as the rest of /v1 (a Prometheus scrape
 * job sends it with `authorization: { credentials_file: … }`): metrics name services, upstreams
 * and release progress, which is not for anyone who can reach the port.
 */
export const metricsRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    url: '/metrics',
    summary: 'Prometheus text exposition of the gateway\'s metrics (with --workers: every worker summed). Needs the bearer token when tokens are configured.',
    tag: 'metrics',
    response: z.string(),
    responseType: 'text/plain; version=0.0.4',
    async handler(_request, context) {
      return { headers: { 'content-type': context.metrics.contentType }, body: await context.metrics.text() };
    },
  }),
  defineRoute({
    method: 'GET',
    url: '/v1/metrics',
    summary: 'The same metrics as JSON: prom-client\'s getMetricsAsJSON() of the aggregated registry (what the dashboard polls).',
    tag: 'metrics',
    response: z.array(z.record(z.string(), z.unknown())),
    async handler(_request, context) {
      return { body: await context.metrics.json() };
    },
  }),
];
