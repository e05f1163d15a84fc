import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { rawExchange, startPlane, type PlaneUnderTest } from './harness.js';

// Clients set up to use an HTTP proxy send the whole URL as the request target. RFC 9112 §3.2.2:
// the target's host is the one that counts, not the Host header.
describe('absolute-form request targets (Node data plane)', () => {
  let api: Backend;
  let web: Backend;
  let plane: PlaneUnderTest;

  beforeAll(async () => {
    [api, web] = await Promise.all([startBackend('api'), startBackend('web')]);
    plane = await startPlane(
      {
        upstreams: { api: { servers: [api.url] }, web: { servers: [web.url] } },
        services: [
          { name: 'api', match: { host: 'api.example' }, stable: 'api' },
          { name: 'web', match: { host: 'web.example' }, stable: 'web' },
        ],
      },
      { proxy: { preserveHost: true } },
    );
  });
  afterAll(async () => {
    await plane.close();
    await Promise.all([api.close(), web.close()]);
  });

  it('routes by the target host, forwards origin form and the target host, path bytes untouched', async () => {
    const reply = await rawExchange(plane.port, 'GET http://api.example/v1/a%2Fb/../c?x=1 HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1\.1 200/);
    expect(reply).toContain('x-backend: api');
    const seen = api.seen.at(-1)!;
    expect(seen.url).toBe('/v1/a%2Fb/../c?x=1');
    expect(seen.headers.host).toBe('api.example');
    expect(web.seen).toHaveLength(0);
  });

  it('treats an empty path as "/", keeps a port and drops userinfo', async () => {
    const reply = await rawExchange(plane.port, 'GET HTTP://user:pw@api.example:8443?q=2 HTTP/1.1\r\nHost: web.example\r\nConnection: close\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1\.1 200/);
    const seen = api.seen.at(-1)!;
    expect(seen.url).toBe('/?q=2');
    expect(seen.headers.host).toBe('api.example:8443');
  });

  it('answers an authority it routes nowhere with the usual 404', async () => {
    const reply = await rawExchange(plane.port, 'GET http://nowhere.example/ HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n');
    expect(reply).toMatch(/^HTTP\/1\.1 404/);
    expect(reply).toContain('GG_NO_SERVICE');
  });
});
