import { existsSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { z } from 'zod';
import { formatIssues } from '../../config/issues.js';
import type { AdminSettings } from '../../config/schema.js';
import { ConfigError, GraygateError, isGraygateError } from '../../errors.js';
import { authenticate, resolveTokens } from './auth.js';
import type { AdminContext, Route } from './context.js';
import { configRoutes } from './config.js';
import { explainRoutes } from './explain.js';
import { impactRoutes } from './impact.js';
import { healthRoutes } from './health.js';
import { historyRoutes } from './history.js';
import { metricsRoutes } from './metrics.js';
import { openApiRoute } from './openapi.js';
import { releaseRoutes } from './releases.js';
import { rolloutRoutes } from './rollouts.js';
import { serviceRoutes } from './services.js';
import { upstreamRoutes } from './upstreams.js';

export interface AdminServer {
  readonly address: { host: string; port: number };
  readonly app: FastifyInstance;
  close(): Promise<void>;
}

export interface AdminServerOptions {
  readonly settings: AdminSettings;
  readonly context: AdminContext;
  /** graygate's version, shown in the OpenAPI document. */
  readonly version?: string;
  /** Where `tokenEnv` names are looked up (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** The built dashboard (default: dist/ui of this package, which `npm run build` writes). */
  readonly uiDir?: string;
}

// Both src/control/api and dist/control/api are three levels below the package root, so the
// same path finds the built dashboard whether the API runs from dist/ or from the sources.
const defaultUiDir = fileURLToPath(new URL('../../../dist/ui/', import.meta.url));

// The page and its bundle come from this origin only; the API is called on the same origin.
const UI_CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/**
 * The dashboard (src/control/ui, bundled into dist/ui) at /ui/, `/` redirecting there. The files
 * hold no secrets, so they need no token; every API call the page makes sends the token the
 * operator typed. Hashed bundles are cached for good, index.html is revalidated on each load.
 */
function serveDashboard(app: FastifyInstance, uiDir: string): void {
  app.get('/', (_request, reply) => reply.redirect('/ui/', 302));
  if (!existsSync(path.join(uiDir, 'index.html'))) {
    app.get('/ui/*', () => {
      throw new GraygateError('GG_NOT_FOUND', `the dashboard is not built (no ${path.join(uiDir, 'index.html')}); run npm run build`);
    });
    return;
  }
  void app.register(fastifyStatic, {
    root: uiDir,
    prefix: '/ui/',
    redirect: true,
    cacheControl: false,
    setHeaders(reply, filePath) {
      const immutable = filePath.includes(`${path.sep}assets${path.sep}`);
      void reply.header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-cache');
      void reply.header('content-security-policy', UI_CSP);
      void reply.header('x-content-type-options', 'nosniff');
      void reply.header('referrer-policy', 'no-referrer');
    },
  });
}

/** Every route of the admin API (the OpenAPI route adds itself). */
export function adminRoutes(version = '0'): Route[] {
  const routes: Route[] = [...healthRoutes, ...configRoutes, ...serviceRoutes, ...upstreamRoutes, ...releaseRoutes, ...rolloutRoutes, ...historyRoutes, ...explainRoutes, ...impactRoutes, ...metricsRoutes];
  routes.push(openApiRoute(() => routes, version));
  return routes;
}

function ifMatchOf(header: string | string[] | undefined): number | undefined {
  if (header === undefined) return undefined;
  const text = Array.isArray(header) ? header.join(',') : header;
  const match = /^\s*(?:W\/)?"?(\d{1,15})"?\s*$/.exec(text);
  if (!match) throw new GraygateError('GG_REQUEST_INVALID', `If-Match: expected a version like "3", got ${JSON.stringify(text.slice(0, 40))}`);
  return Number(match[1]);
}

function parseWith<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'query'): z.output<S> {
  if (where === 'body' && (value === undefined || value === null)) throw new GraygateError('GG_REQUEST_INVALID', 'body: required: a JSON object');
  const parsed = schema.safeParse(value, { reportInput: true });
  if (!parsed.success) {
    const issues = formatIssues(parsed.error).map((line) => (line.startsWith(':') || line.startsWith(' ') ? `${where}${line}` : line));
    throw Object.assign(new GraygateError('GG_REQUEST_INVALID', issues.join('; ')), { issues });
  }
  return parsed.data;
}

/** The most of a refused body read and dropped so its client sees the answer; past it, the connection is closed. */
const DISCARD_MAX_BYTES = 64 * 1024 * 1024;
/** …and the longest that takes (a client that sends slowly, or stops sending). */
const DISCARD_MAX_MS = 10_000;

/** Reads and drops what is left of a request body, up to DISCARD_MAX_BYTES or DISCARD_MAX_MS. */
function discardBody(raw: IncomingMessage): Promise<void> {
  if (raw.complete || raw.destroyed) return Promise.resolve();
  const declared = Number(raw.headers['content-length']);
  if (declared > DISCARD_MAX_BYTES) return Promise.resolve();
  return new Promise((resolve) => {
    let received = 0;
    const done = () => {
      clearTimeout(timer);
      raw.off('data', onData).off('end', done).off('error', done).off('close', done);
      resolve();
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > DISCARD_MAX_BYTES) done();
    };
    const timer = setTimeout(done, DISCARD_MAX_MS);
    raw.on('data', onData).on('end', done).on('error', done).on('close', done);
    raw.resume();
  });
}

/** Maps any error to the API's error body; only real surprises are 500 (and logged). */
function errorReply(error: unknown, context: AdminContext, bodyLimitBytes: number): { status: number; body: unknown } {
  if (isGraygateError(error)) {
    const issues = error instanceof ConfigError ? error.issues : (error as { issues?: readonly string[] }).issues;
    return { status: error.status, body: { error: { code: error.code, message: error.message, ...(issues ? { issues } : {}) } } };
  }
  const fastifyError = error as FastifyError;
  if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return { status: 413, body: { error: { code: 'GG_BODY_TOO_LARGE', message: `body: larger than admin.bodyLimitBytes (limit ${bodyLimitBytes} bytes)` } } };
  }
  if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    const what = fastifyError.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'content-type: expected application/json' : `body: ${fastifyError.message}`;
    return { status: 400, body: { error: { code: 'GG_REQUEST_INVALID', message: what } } };
  }
  context.logger.error({ err: error, event: 'admin-error' }, 'unexpected error in the admin API');
  return { status: 500, body: { error: { code: 'GG_INTERNAL', message: 'unexpected error in the admin API; the gateway log has the details' } } };
}

/**
 * Builds the admin API (fastify) over a running gateway's context, without listening. Every route
 * but health, readiness, the OpenAPI document and the dashboard's static files needs
 * `Authorization: Bearer <token>` when tokens are configured; the token's name is the actor
 * recorded for each write.
 */
export function buildAdminApp(options: AdminServerOptions): FastifyInstance {
  const { settings, context } = options;
  const tokens = resolveTokens(settings, options.env ?? process.env);
  const app = Fastify({ bodyLimit: settings.bodyLimitBytes, logger: false, return503OnClosing: true });
  const routes = adminRoutes(options.version);
  serveDashboard(app, options.uiDir ?? defaultUiDir);

  app.setErrorHandler(async (error, request, reply) => {
    const { status, body } = errorReply(error, context, settings.bodyLimitBytes);
    // Refused from its headers, the body is still on its way: closing on it now resets the
    // connection, and clients that are still sending (Node's http, fetch, undici) then see a
    // write error instead of this answer. Read the rest and drop it first, within a bound.
    if (status === 413) await discardBody(request.raw);
    return reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: { code: 'GG_NOT_FOUND', message: `no admin route ${request.method} ${request.url.split('?')[0]}; see /openapi.json` } });
  });

  for (const route of routes) {
    const needsToken = route.auth !== false && tokens.length > 0;
    app.route({
      method: route.method,
      url: route.url,
      handler: async (request, reply) => {
        const actor = needsToken ? authenticate(request.headers.authorization, tokens, () => void reply.header('www-authenticate', 'Bearer realm="graygate"')) : 'anonymous';
        const body = route.body ? parseWith(route.body, request.body, 'body') : undefined;
        const query = route.query ? parseWith(route.query, request.query ?? {}, 'query') : undefined;
        const result = await route.handler(
          { params: request.params as Record<string, string>, query, body, actor, ifMatch: ifMatchOf(request.headers['if-match']) },
          context,
        );
        void reply.code(result.status ?? 200);
        if (result.headers) void reply.headers(result.headers);
        return result.body;
      },
    });
  }
  return app;
}

/** Starts the admin API on its own listener (loopback by default); refuses a non-loopback address without tokens. */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const app = buildAdminApp(options);
  const { host, port } = options.settings.listen;
  await app.listen({ host, port });
  const address = app.server.address();
  const bound = typeof address === 'object' && address !== null ? { host: address.address, port: address.port } : { host, port };
  options.context.logger.info(
    { event: 'admin-listening', host: bound.host, port: bound.port, tokens: options.settings.tokens.map((token) => token.name) },
    `admin API on http://${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`,
  );
  return { address: bound, app, close: () => app.close() };
}
