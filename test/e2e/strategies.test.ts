import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bucketOf, deriveSeed } from '../../src/rules/hash.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { get, versionFor } from '../helpers/load.js';


// Every strategy and every identity source that needs no Redis, through the real gateway process:
// one process, one service per strategy by path prefix, all on the same two real backends.
const SECRET = 'e2e-secret-that-is-at-least-32-bytes-long!';
const UPSTREAM_CACHE_CONTROL = 'public, max-age=60, s-maxage=600';

/** Backends that mark their responses cacheable by shared caches, as a real app might. */
function cacheableBackend(name: string): Promise<Backend> {
  return startBackend(name, (req, res) => {
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ version: name, url: req.url });
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'cache-control': UPSTREAM_CACHE_CONTROL,
        vary: 'Accept-Encoding',
      });
      res.end(body);
    });
    return true;
  });
}

const release = (rules: unknown[], extra: Record<string, unknown> = {}) => ({ candidate: 'v2', rules, ...extra });
const service = (name: string, rules: unknown[], extra: Record<string, unknown> = {}) => ({
  name,
  stable: 'v1',
  match: { pathPrefix: `/${name}` },
  release: release(rules, extra),
});

describe('every strategy and identity source through the real gateway', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let byIp: GatewayProcess;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([cacheableBackend('stable'), cacheableBackend('candidate')]);
    const upstreams = { v1: { servers: [stable.url] }, v2: { servers: [candidate.url] } };
    [gateway, byIp] = await Promise.all([
      startGatewayProcess({
        config: {
          log: { level: 'info' },
          // The test client (127.0.0.1) plays a trusted proxy, so X-Forwarded-For names the caller.
          trustedProxies: ['127.0.0.1/32'],
          upstreams,
          identity: {
            sources: [{ header: { name: 'x-user-id' } }, { cookie: { name: 'uid' } }, { jwt: { secret: SECRET } }, { query: { name: 'uid' } }],
            anonymousCookie: { maxAgeDays: 120 },
          },
          services: [
            service('uid-range', [{ uidRange: { ranges: [{ from: 1, to: 100 }] } }]),
            service('uid-list', [{ uidList: { ids: [7, 'alice'] } }]),
            service('uid-modulo', [{ uidModulo: { modulo: 10, remainders: [3] } }]),
            service('pct', [{ percentage: { percent: 30 } }]),
            service('header', [{ header: { name: 'x-beta', prefix: 'ios-' } }]),
            service('cookie', [{ cookie: { name: 'beta', equals: 'on' } }]),
            service('query', [{ query: { name: 'beta', oneOf: ['1', 'yes'] } }]),
            service('cidr', [{ cidr: { cidrs: ['10.0.0.0/8', '2001:db8::/32'] } }]),
            service('time-open', [{ timeWindow: { from: '2000-01-01T00:00:00Z', to: '2999-01-01T00:00:00Z' } }]),
            service('time-closed', [{ timeWindow: { to: '2001-01-01T00:00:00Z' } }]),
            service('who', [{ uidList: { ids: ['from-header', 'from-cookie', 'from-jwt', 'from-query'] } }]),
            service('anon', [{ percentage: { percent: 50 } }]),
            service('private', [{ header: { name: 'x-beta', present: true } }], { cache: 'private' }),
            service('deny', [
              { name: 'blocked', to: 'stable', uidList: { ids: [5] } },
              { uidRange: { ranges: [{ from: 1, to: 100 }] } },
            ]),
          ],
        },
      }),
      startGatewayProcess({
        config: {
          log: { level: 'info' },
          trustedProxies: ['127.0.0.1/32'],
          upstreams,
          identity: { sources: [{ clientIp: {} }] },
          services: [{ name: 'by-ip', stable: 'v1', release: release([{ uidList: { ids: ['10.9.8.7'] } }]) }],
        },
      }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([gateway?.stop(), byIp?.stop()]);
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  const at = (path: string, headers: Record<string, string> = {}) => versionFor(`${gateway.url}${path}`, headers);

  it('uidRange, uidList, uidModulo', async () => {
    expect(await at('/uid-range', { 'x-user-id': '100' })).toBe('candidate');
    expect(await at('/uid-range', { 'x-user-id': '101' })).toBe('stable');
    expect(await at('/uid-list', { 'x-user-id': '7' })).toBe('candidate');
    expect(await at('/uid-list', { 'x-user-id': 'alice' })).toBe('candidate');
    expect(await at('/uid-list', { 'x-user-id': '007' })).toBe('stable');
    expect(await at('/uid-modulo', { 'x-user-id': '1233' })).toBe('candidate');
    expect(await at('/uid-modulo', { 'x-user-id': '1234' })).toBe('stable');
  });

  it('percentage: the gateway buckets exactly as the documented hash says, and stays put per caller', async () => {
    const seed = deriveSeed('pct');
    let inCount = 0;
    for (let i = 0; i < 150; i++) {
      const id = `caller-${i}`;
      const expected = bucketOf(id, seed) < 3000 ? 'candidate' : 'stable';
      if (expected === 'candidate') inCount++;
      expect(await at('/pct', { 'x-user-id': id }), id).toBe(expected);
      expect(await at('/pct/again', { 'x-user-id': id }), id).toBe(expected);
    }
    expect(inCount).toBeGreaterThan(0);
  });

  it('header, cookie and query match', async () => {
    expect(await at('/header', { 'x-beta': 'ios-17' })).toBe('candidate');
    expect(await at('/header', { 'x-beta': 'android' })).toBe('stable');
    expect(await at('/cookie', { cookie: 'a=1; beta=on' })).toBe('candidate');
    expect(await at('/cookie', { cookie: 'beta=off' })).toBe('stable');
    expect(await at('/query?beta=yes')).toBe('candidate');
    expect(await at('/query?beta=no')).toBe('stable');
  });

  it('cidr reads X-Forwarded-For through the trusted proxy', async () => {
    expect(await at('/cidr', { 'x-forwarded-for': '10.1.2.3' })).toBe('candidate');
    expect(await at('/cidr', { 'x-forwarded-for': '2001:db8::5' })).toBe('candidate');
    expect(await at('/cidr', { 'x-forwarded-for': '192.0.2.1' })).toBe('stable');
    expect(await at('/cidr')).toBe('stable'); // the peer itself: 127.0.0.1
  });

  it('timeWindow: inside the window to the candidate, after it to stable', async () => {
    expect(await at('/time-open')).toBe('candidate');
    expect(await at('/time-closed')).toBe('stable');
  });

  it('a deny rule keeps a caller on stable ahead of a matching rule', async () => {
    expect(await at('/deny', { 'x-user-id': '5' })).toBe('stable');
    expect(await at('/deny', { 'x-user-id': '6' })).toBe('candidate');
  });

  it('identity from a header, a cookie, a verified JWT and a query parameter; a forged JWT gives none', async () => {
    expect(await at('/who', { 'x-user-id': 'from-header' })).toBe('candidate');
    expect(await at('/who', { cookie: 'uid=from-cookie' })).toBe('candidate');
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('from-jwt').setExpirationTime('5m').sign(new TextEncoder().encode(SECRET));
    expect(await at('/who', { authorization: `Bearer ${token}` })).toBe('candidate');
    const forged = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('from-jwt').sign(new TextEncoder().encode(`${SECRET}-not`));
    expect(await at('/who', { authorization: `Bearer ${forged}` })).toBe('stable');
    expect(await at('/who?uid=from-query')).toBe('candidate');
    expect(await at('/who', { 'x-user-id': 'someone-else' })).toBe('stable');
  });

  it('identity from the client address (through the trusted proxy)', async () => {
    expect(await versionFor(byIp.url, { 'x-forwarded-for': '10.9.8.7' })).toBe('candidate');
    expect(await versionFor(byIp.url, { 'x-forwarded-for': '10.9.8.8' })).toBe('stable');
    const response = await get(byIp.url, { 'x-forwarded-for': '10.9.8.7' });
    expect(response.headers.vary).toBe('Accept-Encoding, *');
  });

  it('anonymous callers get a sticky id cookie once; returning with it they keep their version, and about half are in', async () => {
    const first = await get(`${gateway.url}/anon`);
    const setCookie = String(first.headers['set-cookie']);
    expect(setCookie).toMatch(/^gg_anon=[0-9a-f-]{36}; Path=\/; Max-Age=10368000; SameSite=Lax; HttpOnly$/);
    expect(first.headers['cache-control']).toBe('private, max-age=60');
    const cookie = setCookie.split(';')[0]!;
    for (let i = 0; i < 5; i++) {
      const back = await get(`${gateway.url}/anon`, { cookie });
      expect(back.headers['set-cookie']).toBeUndefined();
      expect(back.json?.version).toBe(first.json?.version);
      expect(back.headers.vary).toBe('Accept-Encoding, Cookie, authorization, x-user-id');
    }
    // Through a trusted proxy that says the client used https, the cookie is Secure.
    const secure = await get(`${gateway.url}/anon`, { 'x-forwarded-proto': 'https' });
    expect(String(secure.headers['set-cookie'])).toMatch(/; Secure$/);
    // Over many fresh callers, each assigned once, the share is the configured 50 %, not drifting.
    let inCount = 0;
    const n = 300;
    for (let i = 0; i < n; i++) {
      const fresh = await get(`${gateway.url}/anon`);
      const version = fresh.json?.version;
      if (version === 'candidate') inCount++;
      const again = await get(`${gateway.url}/anon`, { cookie: String(fresh.headers['set-cookie']).split(';')[0]! });
      expect(again.json?.version).toBe(version);
    }
    expect(Math.abs(inCount - n / 2)).toBeLessThanOrEqual(5 * Math.sqrt(n / 4));
  });

  it('responses that depended on the caller carry Vary on what decided; private mode rewrites Cache-Control instead', async () => {
    const byHeader = await get(`${gateway.url}/header`, { 'x-beta': 'ios-1' });
    expect(byHeader.headers.vary).toBe('Accept-Encoding, x-beta');
    expect(byHeader.headers['cache-control']).toBe(UPSTREAM_CACHE_CONTROL);
    expect((await get(`${gateway.url}/cookie`)).headers.vary).toBe('Accept-Encoding, Cookie');
    expect((await get(`${gateway.url}/cidr`)).headers.vary).toBe('Accept-Encoding, *');
    // By the URL or the clock alone: nothing about the caller to name.
    expect((await get(`${gateway.url}/query?beta=1`)).headers.vary).toBe('Accept-Encoding');
    expect((await get(`${gateway.url}/time-open`)).headers.vary).toBe('Accept-Encoding');
    const identified = await get(`${gateway.url}/uid-range`, { 'x-user-id': '3' });
    expect(identified.headers.vary).toBe('Accept-Encoding, Cookie, authorization, x-user-id');
    expect(identified.headers['set-cookie']).toBeUndefined();
    const priv = await get(`${gateway.url}/private`, { 'x-beta': '1' });
    expect(priv.json?.version).toBe('candidate');
    expect(priv.headers['cache-control']).toBe('private, max-age=60');
    expect(priv.headers.vary).toBe('Accept-Encoding');
  });
});
