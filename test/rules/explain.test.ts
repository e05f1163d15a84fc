import { describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import { GraygateError } from '../../src/errors.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileRouting } from '../../src/rules/compile.js';
import { explainRequest, type RequestDescription } from '../../src/rules/explain.js';
import type { RoutingSnapshot } from '../../src/rules/snapshot.js';
import { makeFacts } from '../helpers/facts.js';

const upstreams = {
  v1: { servers: ['http://127.0.0.1:1'] },
  v2: { servers: ['http://127.0.0.1:2'] },
  a: { servers: ['http://127.0.0.1:3'] },
  b: { servers: ['http://127.0.0.1:4'] },
};

function snapshotOf(services: unknown[], identity: Record<string, unknown> = { sources: [{ header: { name: 'x-user-id' } }] }): RoutingSnapshot {
  return compileRouting(parseRoutingDocument({ upstreams, identity, services }), 9, { identity: identityCompiler() });
}

const canary = snapshotOf([
  {
    name: 'shop',
    stable: 'v1',
    release: {
      candidate: 'v2',
      rules: [
        { name: 'blocked', to: 'stable', uidList: { ids: [13] } },
        { name: 'testers', header: { name: 'x-canary', equals: '1' } },
        { name: 'office', cidr: { cidrs: ['10.0.0.0/8'] } },
        { name: 'first-users', uidRange: { from: 1, to: 100 } },
      ],
    },
  },
  { name: 'idle', stable: 'v1', match: { pathPrefix: '/idle' }, release: { candidate: 'v2', state: 'idle', rules: [{ uidRange: { from: 1, to: 100 } }] } },
  { name: 'full', stable: 'v1', match: { pathPrefix: '/full' }, release: { candidate: 'v2', state: 'full' } },
  {
    name: 'ab',
    stable: 'v1',
    match: { host: 'ab.example.com' },
    release: { candidates: [{ upstream: 'a', weight: 30 }, { upstream: 'b', weight: 30 }], rules: [{ name: 'force-b', to: 'b', query: { name: 'variant', equals: 'b' } }], cache: 'private' },
  },
]);

describe('explainRequest', () => {
  it('names the deciding rule and says what each rule before it said', async () => {
    const explained = await explainRequest(canary, { path: '/cart', headers: { 'X-User-Id': '50' } });
    expect(explained).toEqual({
      service: 'shop',
      version: 'candidate',
      upstream: 'v2',
      reason: 'first-users',
      identity: { source: 'header:x-user-id', userId: '50' },
      rules: [
        { name: 'blocked', to: 'stable', matched: false },
        { name: 'testers', to: 'v2', matched: false },
        { name: 'office', to: 'v2', matched: false },
        { name: 'first-users', to: 'v2', matched: true },
      ],
      // The office rule read the client address, which no header names: Vary: *.
      cache: { vary: '*', private: false },
      routingVersion: 9,
    });
  });

  it('stops at the first match; a deny rule beats later candidate rules', async () => {
    const explained = await explainRequest(canary, { path: '/', headers: { 'x-user-id': '13', 'x-canary': '1' } });
    expect(explained).toMatchObject({ version: 'stable', upstream: 'v1', reason: 'blocked', rules: [{ name: 'blocked', to: 'stable', matched: true }] });
    expect(explained.cache).toEqual({ vary: 'x-user-id', private: false });
  });

  it('reads the client address and cookies from the description, and reports no rule matched', async () => {
    expect(await explainRequest(canary, { path: '/', clientIp: '10.1.2.3' })).toMatchObject({ reason: 'office', version: 'candidate', identity: { source: undefined, userId: undefined } });
    const none = await explainRequest(canary, { path: '/', clientIp: '192.0.2.1', headers: { 'x-user-id': '500' } });
    expect(none).toMatchObject({ reason: 'no rule matched', version: 'stable' });
    expect(none.rules.map((rule) => rule.matched)).toEqual([false, false, false, false]);
  });

  it('explains idle and full without rules', async () => {
    expect(await explainRequest(canary, { path: '/idle/x', headers: { 'x-user-id': '5' } })).toMatchObject({ service: 'idle', version: 'stable', reason: 'idle', rules: [], identity: { userId: undefined } });
    expect(await explainRequest(canary, { path: '/full' })).toMatchObject({ service: 'full', version: 'candidate', upstream: 'v2', reason: 'full', rules: [], cache: { vary: undefined, private: false } });
  });

  it('explains the A/B/n split with the bucket, and a rule naming a candidate', async () => {
    const split = await explainRequest(canary, { host: 'AB.example.com:8443', path: '/', headers: { 'x-user-id': 'user-7' } });
    expect(split).toMatchObject({ service: 'ab', reason: 'split', rules: [{ name: 'force-b', to: 'b', matched: false }], cache: { vary: undefined, private: true } });
    const bucket = split.splitBucket!;
    expect(bucket).toBeGreaterThanOrEqual(0);
    expect(split.upstream).toBe(bucket < 3000 ? 'a' : bucket >= 7000 ? 'b' : 'v1');
    const service = canary.matchService('ab.example.com', '/')!;
    expect(service.decide(makeFacts({ userId: 'user-7' })).upstream).toBe(split.upstream);
    const forced = await explainRequest(canary, { host: 'ab.example.com', path: '/?variant=b', headers: { 'x-user-id': 'user-7' } });
    expect(forced).toMatchObject({ upstream: 'b', version: 'candidate', reason: 'force-b' });
    expect(forced.splitBucket).toBeUndefined();
  });

  it('mints no anonymous id, but recognizes a returning anonymous cookie', async () => {
    const anon = snapshotOf(
      [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', rules: [{ percentage: { percent: 100 } }] } }],
      { sources: [], anonymousCookie: {} },
    );
    expect(await explainRequest(anon, { path: '/' })).toMatchObject({ version: 'stable', reason: 'no rule matched', identity: { source: undefined, userId: undefined } });
    const id = '0f8fad5b-d9cb-469f-a165-70867728950e';
    expect(await explainRequest(anon, { path: '/', headers: { cookie: `x=1; gg_anon=${id}` } })).toMatchObject({
      version: 'candidate',
      identity: { source: 'anonymous', userId: id },
    });
  });

  it('refuses a malformed description naming the field, and a request no service takes', async () => {
    const bad = async (description: unknown) => {
      try {
        await explainRequest(canary, description as RequestDescription);
      } catch (error) {
        return error as GraygateError;
      }
      throw new Error('accepted');
    };
    expect(await bad({ path: 'cart' })).toMatchObject({ code: 'GG_EXPLAIN_INVALID', message: expect.stringMatching(/^path: expected a path starting with "\/"/) });
    expect(await bad({ path: '/', headers: { 'x-a': 5 } })).toMatchObject({ code: 'GG_EXPLAIN_INVALID', message: expect.stringMatching(/^headers\.x-a: expected string, got 5/) });
    expect(await bad({ path: '/', colour: 'red' })).toMatchObject({ code: 'GG_EXPLAIN_INVALID', message: 'colour: unknown field "colour"' });
    const lonely = snapshotOf([{ name: 'only', stable: 'v1', match: { host: 'a.com' } }]);
    const error = await explainRequest(lonely, { host: 'b.com', path: '/' }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(GraygateError);
    expect(error).toMatchObject({ code: 'GG_NO_SERVICE' });
  });
});
