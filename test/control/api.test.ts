import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { startAdminServer } from '../../src/control/api/server.js';
import { ConfigError } from '../../src/errors.js';
import { silentLogger } from '../../src/observe/log.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { versionFor } from '../helpers/load.js';
import { ALICE, BOB, startAdminGateway, type AdminGateway } from './admin-harness.js';

let stable: Backend;
let candidate: Backend;
let admin: AdminGateway;

const routing = () => ({
  upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
  identity: { sources: [{ header: { name: 'x-user-id' } }] },
  services: [{ name: 'shop', stable: 'shop-v1' }],
});
/** Sends a 5 MB body to the URL in argv with fetch, http with a length and http chunked; prints each status (or error code). */
const FIVE_MB_CLIENTS = `
import { request } from 'node:http';
const url = process.argv[1];
const body = 'x'.repeat(5 * 1024 * 1024);
const viaHttp = (headers) => new Promise((resolve) => {
  const req = request(url, { method: 'PUT', headers: { 'content-type': 'application/json', ...headers } }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
  req.on('error', (error) => resolve(error.code ?? error.message));
  req.end(body);
});
const viaFetch = await fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json' }, body }).then((r) => r.status, (e) => e.cause?.code ?? e.message);
console.log(JSON.stringify({ fetch: viaFetch, http: await viaHttp({ 'content-length': body.length }), chunked: await viaHttp({}) }));
`;
const firstUsers = [{ name: 'first-users', uidRange: { ranges: [{ from: 1, to: 5000 }] } }];

beforeAll(async () => {
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  admin = await startAdminGateway(routing());
});
afterAll(async () => {
  await admin?.close();
  await Promise.all([stable?.close(), candidate?.close()]);
});

const current = async () => (await admin.api('GET', '/v1/config')).body.version as number;
const user = (id: number) => versionFor(admin.proxyUrl, { 'x-user-id': String(id) });

describe('admin API: health, readiness, OpenAPI (no token needed)', () => {
  it('answers health and readiness, and serves an OpenAPI document of every route', async () => {
    expect(await admin.api('GET', '/healthz', { token: null })).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await admin.api('GET', '/readyz', { token: null })).toMatchObject({ status: 200, body: { ready: true } });
    const openapi = await admin.api('GET', '/openapi.json', { token: null });
    expect(openapi.status).toBe(200);
    expect(openapi.body.openapi).toBe('3.0.3');
    for (const path of ['/v1/config', '/v1/services/{name}', '/v1/upstreams/{name}', '/v1/services/{name}/release/{action}', '/v1/history', '/v1/diff', '/v1/history/{version}/restore', '/v1/explain']) {
      expect(Object.keys(openapi.body.paths)).toContain(path);
    }
    // The request shape comes from the config schema: a service's stable is described there.
    expect(JSON.stringify(openapi.body.paths['/v1/services/{name}'].put.requestBody)).toContain('Upstream that serves the stable version.');
    // The drain report is documented with its scope and per-upstream figures.
    const drainDoc = JSON.stringify(openapi.body.paths['/v1/services/{name}/release/drain'].get);
    for (const word of ['"fleet"', 'gatewaysBehind', 'upstreams', 'stable']) expect(drainDoc).toContain(word);
    // The Prometheus exposition is text, its JSON twin is JSON.
    expect(Object.keys(openapi.body.paths['/metrics'].get.responses[200].content)).toEqual(['text/plain; version=0.0.4']);
    expect(Object.keys(openapi.body.paths['/v1/metrics'].get.responses[200].content)).toEqual(['application/json']);
  });
});

describe('admin API: authentication', () => {
  it('refuses a missing or wrong token with 401 and applies nothing', async () => {
    const before = await current();
    const none = await admin.api('GET', '/v1/config', { token: null });
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('GG_UNAUTHORIZED');
    expect(none.headers['www-authenticate']).toMatch(/^Bearer/);
    const wrong = await admin.api('PUT', '/v1/upstreams/x', { token: `${ALICE}x`, body: { reason: 'r', upstream: { servers: ['http://127.0.0.1:1'] } } });
    expect(wrong.status).toBe(401);
    expect((await admin.api('POST', '/v1/services/shop/release/rollback', { token: 'Basic abc', body: { reason: 'r' } })).status).toBe(401);
    expect(await current()).toBe(before);
  });

  it('attributes each write to the token\'s name (bob\'s token comes from the environment)', async () => {
    const write = await admin.api('PUT', '/v1/upstreams/spare', { token: BOB, body: { reason: 'add a spare', upstream: { servers: ['http://127.0.0.1:9'] } } });
    expect(write.status).toBe(200);
    expect(write.body).toMatchObject({ changed: true, actor: 'bob', reason: 'add a spare', version: write.body.previousVersion + 1 });
    const history = await admin.api('GET', '/v1/history?limit=1');
    expect(history.body.versions[0]).toMatchObject({ version: write.body.version, previousVersion: write.body.previousVersion, actor: 'bob', reason: 'add a spare' });
    expect(Date.parse(history.body.versions[0].time)).toBeGreaterThan(Date.now() - 60_000);
    const removed = await admin.api('DELETE', '/v1/upstreams/spare', { body: { reason: 'not needed' } });
    expect(removed.body).toMatchObject({ changed: true, actor: 'alice' });
  });

  it('will not listen on a non-loopback address without a token', async () => {
    expect(() => parseConfig({ admin: { listen: '0.0.0.0:9901' } })).toThrow(/admin\.tokens: the admin API would listen on 0\.0\.0\.0 without a token/);
    const settings = { listen: { host: '0.0.0.0', port: 0 }, tokens: [], bodyLimitBytes: 1024 * 1024 };
    const context = { store: admin.gateway.store, snapshot: () => undefined, dataPlaneStats: () => ({ openConnections: 0, inFlightRequests: 0, upstreams: {} }), instanceId: 'test', localLoad: () => ({ servedVersion: null, servedEpoch: null, servedForMs: 0, openConnections: 0, inFlightRequests: 0, upstreams: {} }), syncStats: () => admin.gateway.sync.stats(), metrics: admin.gateway.metrics, applyWritten: async () => ({ everywhere: true, version: null, behind: [] }), logger: silentLogger() };
    await expect(startAdminServer({ settings, context })).rejects.toBeInstanceOf(ConfigError);
    // And a tokenEnv that is not set is named.
    const missing = { ...settings, listen: { host: '127.0.0.1', port: 0 }, tokens: [{ name: 'ci', tokenEnv: 'GG_TEST_UNSET_TOKEN' }] };
    await expect(startAdminServer({ settings: missing, context })).rejects.toThrow(/admin\.tokens\[0\]\.tokenEnv: environment variable GG_TEST_UNSET_TOKEN is not set/);
  });
});

describe('admin API: whole config with a version precondition', () => {
  it('reads with an ETag; replaces with If-Match or version; 409 when stale; 400 without a version', async () => {
    const read = await admin.api('GET', '/v1/config');
    expect(read.status).toBe(200);
    expect(read.headers.etag).toBe(`"${read.body.version}"`);
    const document = { ...read.body.document, upstreams: { ...read.body.document.upstreams, extra: { servers: ['http://127.0.0.1:7'] } } };

    const noVersion = await admin.api('PUT', '/v1/config', { body: { reason: 'r', document } });
    expect(noVersion.status).toBe(400);
    expect(noVersion.body.error).toMatchObject({ code: 'GG_REQUEST_INVALID', message: expect.stringMatching(/^version: required/) });

    const stale = await admin.api('PUT', '/v1/config', { body: { reason: 'r', document, version: read.body.version - 1 } });
    expect(stale.status).toBe(409);
    expect(stale.body.error.code).toBe('GG_VERSION_CONFLICT');
    const staleIfMatch = await admin.api('PUT', '/v1/config', { body: { reason: 'r', document }, headers: { 'if-match': `"${read.body.version + 5}"` } });
    expect(staleIfMatch.status).toBe(409);
    expect(await current()).toBe(read.body.version);

    const ok = await admin.api('PUT', '/v1/config', { body: { reason: 'add extra', document }, headers: { 'if-match': `"${read.body.version}"` } });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ changed: true, previousVersion: read.body.version, version: read.body.version + 1 });
    expect(ok.headers.etag).toBe(`"${read.body.version + 1}"`);
    const back = await admin.api('PUT', '/v1/config', { body: { reason: 'remove extra', document: read.body.document, version: ok.body.version } });
    expect(back.status).toBe(200);
  });

  it('refuses an invalid document with 400 naming each field, and applies nothing', async () => {
    const read = await admin.api('GET', '/v1/config');
    const bad = { ...read.body.document, services: [{ name: 'shop', stable: 'nope' }] };
    const reply = await admin.api('PUT', '/v1/config', { body: { reason: 'r', document: bad, version: read.body.version } });
    expect(reply.status).toBe(400);
    expect(reply.body.error.code).toBe('GG_CONFIG_INVALID');
    expect(reply.body.error.message).toContain('upstream "nope" is not defined (services[0].stable)');
    const shape = await admin.api('PUT', '/v1/config', { body: { reason: 'r', document: { ...read.body.document, upstreams: { a: { servers: ['ftp://x'] } } }, version: read.body.version } });
    expect(shape.status).toBe(400);
    expect(shape.body.error.message).toContain('document.upstreams.a.servers[0]');
    const missingReason = await admin.api('PUT', '/v1/config', { body: { document: read.body.document, version: read.body.version } });
    expect(missingReason.status).toBe(400);
    expect(missingReason.body.error.message).toMatch(/^reason: /);
    expect(await current()).toBe(read.body.version);
  });

  it('answers 413 to an oversized body and 400 to malformed JSON', async () => {
    const huge = await admin.api('PUT', '/v1/config', { rawBody: JSON.stringify({ reason: 'x'.repeat(2 * 1024 * 1024) }) });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('GG_BODY_TOO_LARGE');
    // Refused from its headers, a body of several MB is still read (and dropped) before the
    // answer, so clients that are still sending it get the 413 and not a write error. The
    // clients run in another process, as the CLI does: in this one they would share the event
    // loop with the server and always finish sending first.
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', FIVE_MB_CLIENTS, `${admin.adminUrl}/v1/config`], { timeout: 60_000 });
    expect(JSON.parse(stdout)).toEqual({ fetch: 413, http: 413, chunked: 413 });
    const broken = await admin.api('PUT', '/v1/config', { rawBody: '{"reason": ' });
    expect(broken.status).toBe(400);
    expect(broken.body.error.code).toBe('GG_REQUEST_INVALID');
    const badIfMatch = await admin.api('PUT', '/v1/config', { body: { reason: 'r' }, headers: { 'if-match': 'abc' } });
    expect(badIfMatch.status).toBe(400);
  });
});

describe('admin API: services and upstreams', () => {
  it('lists, reads, creates, replaces and deletes services; 404 names the unknown one', async () => {
    expect((await admin.api('GET', '/v1/services')).body.services.map((s: { name: string }) => s.name)).toEqual(['shop']);
    expect((await admin.api('GET', '/v1/services/shop')).body.service).toMatchObject({ name: 'shop', stable: 'shop-v1' });
    const unknown = await admin.api('GET', '/v1/services/nope');
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatchObject({ code: 'GG_NOT_FOUND', message: 'service "nope" is not defined; known: shop' });
    expect((await admin.api('POST', '/v1/services/nope/release/start', { body: { reason: 'r', candidate: 'shop-v2' } })).status).toBe(404);
    expect((await admin.api('DELETE', '/v1/services/nope', { body: { reason: 'r' } })).status).toBe(404);

    const created = await admin.api('PUT', '/v1/services/api', { body: { reason: 'new service', service: { match: { pathPrefix: '/api' }, stable: 'shop-v1' } } });
    expect(created.status).toBe(200);
    const mismatch = await admin.api('PUT', '/v1/services/api', { body: { reason: 'r', service: { name: 'other', stable: 'shop-v1' } } });
    expect(mismatch.status).toBe(400);
    expect(mismatch.body.error.message).toMatch(/^service\.name: /);
    const invalid = await admin.api('PUT', '/v1/services/api', { body: { reason: 'r', service: { match: { pathPrefix: 'api' }, stable: 'shop-v1' } } });
    expect(invalid.status).toBe(400);
    expect(invalid.body.error.message).toContain('service.match.pathPrefix');
    expect((await admin.api('DELETE', '/v1/services/api', { body: { reason: 'gone' } })).status).toBe(200);
    expect((await admin.api('GET', '/v1/services')).body.services).toHaveLength(1);
  });

  it('lists, reads and replaces upstreams; refuses deleting one in use, naming where', async () => {
    expect(Object.keys((await admin.api('GET', '/v1/upstreams')).body.upstreams)).toEqual(['shop-v1', 'shop-v2']);
    expect((await admin.api('GET', '/v1/upstreams/shop-v1')).body.upstream.servers).toEqual([stable.url]);
    expect((await admin.api('GET', '/v1/upstreams/nope')).status).toBe(404);
    const inUse = await admin.api('DELETE', '/v1/upstreams/shop-v1', { body: { reason: 'r' } });
    expect(inUse.status).toBe(400);
    expect(inUse.body.error.message).toContain('services[0].stable');
    const bad = await admin.api('PUT', '/v1/upstreams/shop-v1', { body: { reason: 'r', upstream: { servers: [] } } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toContain('upstream.servers');
  });
});

describe('admin API: release lifecycle', () => {
  it('start → set → full → drain → finish, with illegal moves refused (409) and routing following each step', async () => {
    const illegal = await admin.api('POST', '/v1/services/shop/release/full', { body: { reason: 'too early' } });
    expect(illegal.status).toBe(409);
    expect(illegal.body.error).toMatchObject({ code: 'GG_ILLEGAL_TRANSITION', message: expect.stringContaining('no canary running') });
    expect((await admin.api('POST', '/v1/services/shop/release/promote', { body: { reason: 'r' } })).status).toBe(404);

    const start = await admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'canary 1..5000', candidate: 'shop-v2', rules: firstUsers } });
    expect(start.status).toBe(200);
    expect(start.body).toMatchObject({ from: 'idle', to: 'canary', changed: true });
    await eventually(async () => expect(await user(42)).toBe('candidate'));
    expect(await user(5001)).toBe('stable');

    const badRule = await admin.api('POST', '/v1/services/shop/release/set', { body: { reason: 'r', rules: [{ uidRange: { ranges: [{ from: 1, to: '5k' }] } }] } });
    expect(badRule.status).toBe(400);
    expect(badRule.body.error.message).toContain('rules[0].uidRange.ranges[0].to');
    const set = await admin.api('POST', '/v1/services/shop/release/set', { body: { reason: 'add 100 %', percentage: 100 } });
    expect(set.body).toMatchObject({ from: 'canary', to: 'canary' });
    await eventually(async () => expect(await user(5001)).toBe('candidate'));
    const again = await admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'r', candidate: 'shop-v2' } });
    expect(again.status).toBe(409);
    const finishEarly = await admin.api('POST', '/v1/services/shop/release/finish', { body: { reason: 'r' } });
    expect(finishEarly.body.error.message).toContain('still in canary');
    const direct = await admin.api('PUT', '/v1/services/shop/release', { body: { reason: 'r', release: { candidate: 'shop-v2', state: 'idle' } } });
    expect(direct.status).toBe(200); // canary → idle is a rollback
    const skip = await admin.api('PUT', '/v1/services/shop/release', { body: { reason: 'r', release: { candidate: 'shop-v2', state: 'full' } } });
    expect(skip.status).toBe(409);
    expect(skip.body.error.code).toBe('GG_ILLEGAL_TRANSITION');
    expect((await admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'again', rules: firstUsers } })).status).toBe(200);

    const full = await admin.api('POST', '/v1/services/shop/release/full', { body: { reason: 'everyone' } });
    expect(full.body).toMatchObject({ from: 'canary', to: 'full' });
    // Right after the switch it is never "drained": counts must be read 500 ms past it.
    expect((await admin.api('GET', '/v1/services/shop/release/drain')).body).toMatchObject({ drained: false });
    await eventually(async () => expect(await user(9999)).toBe('candidate'));
    const drain = await eventually(async () => {
      const reply = await admin.api('GET', '/v1/services/shop/release/drain');
      expect(reply.body).toMatchObject({ state: 'full', scope: 'process', gateways: 1, gatewaysBehind: 0, drained: true, inFlightRequests: 0 });
      return reply.body;
    });
    // The file store has no fleet: this process's figures, per upstream, stable's named.
    expect(drain.stable).toMatchObject({ upstream: 'shop-v1', inFlightRequests: 0 });
    expect(Object.keys(drain.upstreams).sort()).toEqual(['shop-v1', 'shop-v2']);
    expect(drain.servedVersion).toBe(full.body.version);
    const release = await admin.api('GET', '/v1/services/shop/release');
    expect(release.body).toMatchObject({ state: 'full', release: { candidate: 'shop-v2', state: 'full' } });

    const finish = await admin.api('POST', '/v1/services/shop/release/finish', { body: { reason: 'stable updated' } });
    expect(finish.body).toMatchObject({ from: 'full', to: 'idle' });
    await eventually(async () => expect(await user(42)).toBe('stable'));
    expect((await admin.api('GET', '/v1/services/shop/release')).body).toMatchObject({ state: 'idle', release: null });
    const drainIdle = await admin.api('GET', '/v1/services/shop/release/drain');
    expect(drainIdle.body.drained).toBe(false);
  });

  it('rollback from any state is idempotent: the second one writes nothing', async () => {
    await admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'r', candidate: 'shop-v2', rules: firstUsers } });
    await eventually(async () => expect(await user(42)).toBe('candidate'));
    const first = await admin.api('DELETE', '/v1/services/shop/release', { body: { reason: 'abort' } });
    expect(first.body).toMatchObject({ changed: true, from: 'canary', to: 'idle' });
    await eventually(async () => expect(await user(42)).toBe('stable'));
    const second = await admin.api('POST', '/v1/services/shop/release/rollback', { body: { reason: 'abort again' } });
    expect(second.status).toBe(200);
    expect(second.body).toMatchObject({ changed: false, version: first.body.version, previousVersion: first.body.version });
    expect((await admin.api('GET', '/v1/history?limit=1')).body.versions[0].version).toBe(first.body.version);
  });
});

describe('admin API: history, diff, restore, explain, status', () => {
  it('diffs two versions and restores an earlier one, checked by requests through the gateway', async () => {
    const start = await admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'canary', candidate: 'shop-v2', rules: firstUsers } });
    await eventually(async () => expect(await user(42)).toBe('candidate'));
    const narrowed = await admin.api('POST', '/v1/services/shop/release/set', { body: { reason: 'narrow', rules: [{ name: 'first-users', uidRange: { ranges: [{ from: 1, to: 10 }] } }] } });
    await eventually(async () => expect(await user(42)).toBe('stable'));

    const diff = await admin.api('GET', `/v1/diff?from=${start.body.version}&to=${narrowed.body.version}`);
    expect(diff.body.changes).toEqual([{ path: 'services[0].release.rules[0].uidRange.ranges[0].to', op: 'changed', before: 5000, after: 10 }]);
    expect((await admin.api('GET', '/v1/diff?from=abc')).status).toBe(400);
    expect((await admin.api('GET', '/v1/diff?from=99999')).status).toBe(404);

    const restored = await admin.api('POST', `/v1/history/${start.body.version}/restore`, { body: { reason: 'the narrow range was a mistake' } });
    expect(restored.status).toBe(200);
    expect(restored.body).toMatchObject({ changed: true, previousVersion: narrowed.body.version, version: narrowed.body.version + 1 });
    await eventually(async () => expect(await user(42)).toBe('candidate'));
    expect(await user(5000)).toBe('candidate');
    expect(await user(5001)).toBe('stable');
    const again = await admin.api('GET', `/v1/diff?from=${start.body.version}`);
    expect(again.body.changes).toEqual([]);
    const entry = await admin.api('GET', `/v1/history/${restored.body.version}`);
    expect(entry.body.meta.reason).toBe(`restore version ${start.body.version}: the narrow range was a mistake`);
    expect((await admin.api('POST', '/v1/history/99999/restore', { body: { reason: 'r' } })).status).toBe(404);
    expect((await admin.api('POST', `/v1/history/${start.body.version}/restore`, { body: { reason: 'r', version: 1 } })).status).toBe(409);
    await admin.api('POST', '/v1/services/shop/release/rollback', { body: { reason: 'clean up' } });
  });

  it('explains a request over the served snapshot; a malformed description is 400 naming the field', async () => {
    await admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'r', candidate: 'shop-v2', rules: firstUsers } });
    await eventually(async () => expect(await user(42)).toBe('candidate'));
    const explained = await admin.api('POST', '/v1/explain', { body: { path: '/', headers: { 'x-user-id': '42' } } });
    expect(explained.body).toMatchObject({ service: 'shop', version: 'candidate', upstream: 'shop-v2', reason: 'first-users', identity: { userId: '42' } });
    const bad = await admin.api('POST', '/v1/explain', { body: { path: 'no-slash' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/^path: /);
    const status = await admin.api('GET', '/v1/status');
    expect(status.body).toMatchObject({ ready: true, storeKind: 'file', services: [{ name: 'shop', state: 'canary', candidates: ['shop-v2'], rules: ['first-users'] }] });
    expect(status.body.servedVersion).toBe(status.body.version);
    await admin.api('POST', '/v1/services/shop/release/rollback', { body: { reason: 'clean up' } });
  });
});

describe('admin API: two writers at once', () => {
  it('one wins, the other gets 409, and history shows exactly one change', async () => {
    const read = await admin.api('GET', '/v1/config');
    const variant = (servers: string[]) => ({ ...read.body.document, upstreams: { ...read.body.document.upstreams, race: { servers } } });
    const [a, b] = await Promise.all([
      admin.api('PUT', '/v1/config', { body: { reason: 'writer a', version: read.body.version, document: variant(['http://127.0.0.1:11']) } }),
      admin.api('PUT', '/v1/config', { token: BOB, body: { reason: 'writer b', version: read.body.version, document: variant(['http://127.0.0.1:12']) } }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 409]);
    const loser = a.status === 409 ? a : b;
    expect(loser.body.error.code).toBe('GG_VERSION_CONFLICT');
    const history = await admin.api('GET', '/v1/history?limit=3');
    const newer = history.body.versions.filter((entry: { version: number }) => entry.version > read.body.version);
    expect(newer).toHaveLength(1);
    expect(newer[0].reason).toBe(a.status === 200 ? 'writer a' : 'writer b');
  });

  it('without a precondition, changes made at the same moment all land, each once', async () => {
    const before = await current();
    const names = Array.from({ length: 6 }, (_, i) => `burst-${i}`);
    const answers = await Promise.all(
      names.map((name, i) => admin.api('PUT', `/v1/upstreams/${name}`, { body: { reason: `add ${name}`, upstream: { servers: [`http://127.0.0.1:${20 + i}`] } } })),
    );
    expect(answers.map((a) => a.status)).toEqual(names.map(() => 200));
    // One version each, none lost to another: the latest document holds every upstream.
    expect(new Set(answers.map((a) => a.body.version)).size).toBe(names.length);
    expect(await current()).toBe(before + names.length);
    const read = await admin.api('GET', '/v1/config');
    names.forEach((name, i) => expect(read.body.document.upstreams[name].servers).toEqual([`http://127.0.0.1:${20 + i}`]));
    for (const name of names) await admin.api('DELETE', `/v1/upstreams/${name}`, { body: { reason: 'clean up' } });
  });

  it('two release actions at once on one version: one applies, the other is 409', async () => {
    const version = await current();
    const [a, b] = await Promise.all([
      admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'a', version, candidate: 'shop-v2', rules: firstUsers } }),
      admin.api('POST', '/v1/services/shop/release/start', { body: { reason: 'b', version, candidate: 'shop-v2', percentage: 5 } }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 409]);
    expect(await current()).toBe(version + 1);
    await admin.api('POST', '/v1/services/shop/release/rollback', { body: { reason: 'clean up' } });
  });
});
