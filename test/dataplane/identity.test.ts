import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { rawExchange, send, startPlane, type PlaneUnderTest } from './harness.js';

// A store lookup on a cache miss makes identity asynchronous: the data plane must wait for it
// (and only then decide), and must not trip over a client that leaves meanwhile. The store is
// outside what is tested here, so a Map with a delay stands in for it.

const tokens = new Map([
  ['TOKEN_inside', '1234'],
  ['TOKEN_outside', '9999'],
]);
let lookups = 0;
let lookupsDone = 0;

let stable: Backend;
let candidate: Backend;
let gateway: PlaneUnderTest;

beforeAll(async () => {
  [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  gateway = await startPlane(
    {
      upstreams: { stable: { servers: [stable.url] }, candidate: { servers: [candidate.url] } },
      identity: { sources: [{ tokenLookup: { header: 'token', deadlineMs: 5_000 } }] },
      services: [{ name: 'web', stable: 'stable', release: { candidate: 'candidate', rules: [{ uidRange: { from: 1, to: 5000 } }] } }],
    },
    {},
    {
      identity: identityCompiler({
        context: {
        readKey: (key) => {
          lookups++;
          return new Promise((resolve) =>
            setTimeout(
              () => {
                lookupsDone++;
                resolve(tokens.get(key));
              },
              // The leaving client's lookup outlasts its connection by far, even on a loaded box whose
              // event loop stalls: the close is seen before the answer, as the test means.
              key === 'TOKEN_fresh-token' ? 2_000 : 30,
            ),
          );
        },
        },
      }),
    },
  );
});

afterAll(async () => {
  await gateway?.close();
  await Promise.all([stable?.close(), candidate?.close()]);
});

describe('identity from a store lookup', () => {
  it('waits for the lookup on a miss, then decides by the user id', async () => {
    const inside = await send(gateway.url, { headers: { token: 'inside' } });
    expect(inside.headers['x-backend']).toBe('candidate');
    expect(String(inside.headers.vary)).toMatch(/token/i);
    const outside = await send(gateway.url, { headers: { token: 'outside' } });
    expect(outside.headers['x-backend']).toBe('stable');
    const anonymous = await send(gateway.url);
    expect(anonymous.headers['x-backend']).toBe('stable');
    // A warm cache answers without another lookup.
    const before = lookups;
    expect((await send(gateway.url, { headers: { token: 'inside' } })).headers['x-backend']).toBe('candidate');
    expect(lookups).toBe(before);
  });

  it('survives a client that leaves during the lookup', async () => {
    // The connection is closed right after the request; the lookup finishes with no one to answer.
    const before = lookups;
    await rawExchange(gateway.port, 'GET / HTTP/1.1\r\nHost: a\r\nToken: fresh-token\r\n\r\n', 5);
    await eventually(() => expect(lookups).toBe(before + 1));
    await eventually(() => expect(gateway.plane.stats()).toMatchObject({ openConnections: 0, inFlightRequests: 0 }));
    // Nothing is left counted in flight to any upstream either.
    expect(Object.values(gateway.plane.stats().upstreams).map((load) => load.inFlightRequests)).toEqual(Object.values(gateway.plane.stats().upstreams).map(() => 0));
    // Once the lookup has answered, nothing is forwarded for a client that is gone.
    await eventually(() => expect(lookupsDone).toBe(lookups));
    // A request sent after it gives a wrongly forwarded one time to arrive first.
    const reply = await send(gateway.url, { headers: { token: 'outside' } });
    expect(reply.status).toBe(200);
    const forwarded = [...stable.seen, ...candidate.seen].filter((r) => r.headers.token === 'fresh-token');
    expect(forwarded).toHaveLength(0);
  });
});
