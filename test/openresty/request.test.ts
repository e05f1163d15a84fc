import http from 'node:http';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalizeRouting, normalizeSettings } from '../../src/openresty/normalize.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';
import { documentArb, RANGE_KEY, requestArb, TOKENS, tsEvaluator, validated, type GeneratedRequest, type Outcome } from './corpus.js';

/**
 * request.lua: the `req` decide.evaluate reads, filled from nginx's own variables for real HTTP
 * requests (Host without port, the path as sent, the raw query, headers through ngx.var, the
 * peer), decided and answered with the decision and its response headers; graygate's evaluator
 * must give the same answer for the same bytes.
 */

let nginx: Nginx;
beforeAll(async () => {
  nginx = await startNginx({
    http: ([port]) => `
  client_max_body_size 64m; client_body_buffer_size 64m;
  server { listen 127.0.0.1:${port};
    location = /__form { content_by_lua_block { require("gg_test_harness").set_form() } }
    location / { content_by_lua_block { require("gg_test_harness").serve() } } }`,
  });
});
afterAll(() => nginx?.stop());

const port = () => nginx.ports[0]!;

/** One real request; header values are sent as the Latin-1 bytes of the generated strings. */
function send(request: GeneratedRequest): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  const path = request.query === undefined ? request.path : `${request.path}?${request.query}`;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: port(), path, method: 'GET', headers: request.headers, setHost: false, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A generated request as a real client can send it: from 127.0.0.1 over plain HTTP, ASCII in the request line, a Host. */
function sendable(request: GeneratedRequest): GeneratedRequest | undefined {
  if (request.query !== undefined && /[^\x21-\x7e]/.test(request.query)) return undefined;
  if (request.headers.host === undefined) return undefined;
  return { ...request, peer: '127.0.0.1', tls: false, upstreamHeaders: {}, servedUpstream: undefined as never };
}

describe('request.lua over real requests', () => {
  it('fills req from nginx so that decide.lua answers as graygate does', async () => {
    let compared = 0;
    for (const generated of fc.sample(documentArb, { numRuns: 40 })) {
      const valid = validated(generated);
      if (valid === undefined) continue;
      let form;
      try {
        form = normalizeRouting(valid.document, 3, { storeValue: (key) => (key === RANGE_KEY ? generated.rangeValue : undefined) });
      } catch {
        continue;
      }
      const set = await fetch(`${nginx.url}/__form`, { method: 'POST', body: JSON.stringify({ form, settings: normalizeSettings(valid.settings), tokens: TOKENS }) });
      expect(set.status, await set.text()).toBe(200);
      const ts = tsEvaluator(valid.document, valid.settings, generated.rangeValue);
      for (const candidate of fc.sample(requestArb, { numRuns: 25 })) {
        const request = sendable(candidate);
        if (request === undefined) continue;
        const { servedUpstream: _unused, ...plain } = request;
        const ours = await ts.evaluate(plain);
        const answer = await send(plain);
        const where = JSON.stringify({ form, request: plain });
        if ('none' in ours) {
          expect(answer.status, where).toBe(404);
          continue;
        }
        expect(answer.status, `${where}\n${answer.body}`).toBe(200);
        const theirs = JSON.parse(answer.body) as Omit<Outcome, 'headers'>;
        let expected: Outcome = ours;
        if (theirs.setCookie !== null) {
          // The minted id is random: graygate must answer the caller returning with Lua's id the same way.
          const id = /^gg_anon=([0-9a-f-]{36});/.exec(theirs.setCookie)![1]!;
          expect(ours.setCookie, where).not.toBeNull();
          expected = (await ts.evaluate(plain, { cookie: `gg_anon=${id}`, minted: theirs.setCookie })) as Outcome;
          expect(answer.headers['set-cookie'], where).toEqual([theirs.setCookie]);
        }
        const { headers, ...decision } = expected;
        expect(theirs, where).toEqual(decision);
        // The response headers the decision calls for, set by decide.apply_headers on ngx.header.
        expect(answer.headers.vary, where).toBe(headers.vary);
        expect(answer.headers['cache-control'], where).toBe(headers['cache-control']);
        expect(answer.headers['x-graygate-version'], where).toBe(headers['x-graygate-version']);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(100);
  });
});
