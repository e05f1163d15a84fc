import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SPLIT_SALT } from '../../src/rules/compile.js';
import { bucketOf, deriveSeed } from '../../src/rules/hash.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { get } from '../helpers/load.js';

// An A/B/n release through the real gateway process: shares over thousands of distinct ids,
// stickiness, a rule naming one candidate, weight 0 never dialled, and the cache headers.
describe('A/B/n split through the real gateway', () => {
  let stable: Backend;
  let a: Backend;
  let b: Backend;
  let dark: Backend;
  let gateway: GatewayProcess;
  let agent: Agent;

  beforeAll(async () => {
    [stable, a, b, dark] = await Promise.all([startBackend('stable'), startBackend('a'), startBackend('b'), startBackend('dark')]);
    agent = new Agent({ connections: 8 });
    gateway = await startGatewayProcess({
      config: {
        log: { level: 'info' },
        upstreams: {
          'shop-v1': { servers: [stable.url] },
          'shop-v2a': { servers: [a.url] },
          'shop-v2b': { servers: [b.url] },
          'shop-v2c': { servers: [dark.url] },
        },
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
        services: [
          {
            name: 'shop',
            stable: 'shop-v1',
            release: {
              candidates: [
                { upstream: 'shop-v2a', weight: 20 },
                { upstream: 'shop-v2c', weight: 0 },
                { upstream: 'shop-v2b', weight: 30 },
              ],
              rules: [
                { name: 'blocked', to: 'stable', header: { name: 'x-blocked', present: true } },
                { name: 'dark-testers', to: 'shop-v2c', header: { name: 'x-tester', equals: 'dark' } },
              ],
            },
          },
          {
            name: 'shop-private',
            stable: 'shop-v1',
            match: { pathPrefix: '/private' },
            release: { candidates: [{ upstream: 'shop-v2a', weight: 50 }, { upstream: 'shop-v2b', weight: 50 }], cache: 'private' },
          },
        ],
      },
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await agent?.close();
    await Promise.all([stable, a, b, dark].map((backend) => backend?.close()));
  });

  /** Version for each id, `concurrency` requests at a time on keep-alive connections. */
  async function versionsFor(ids: readonly string[], path = '/', concurrency = 8): Promise<string[]> {
    const out: string[] = new Array(ids.length);
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const i = next++;
        const response = await request(`${gateway.url}${path}`, { dispatcher: agent, headers: { 'x-user-id': ids[i]! } });
        const body = (await response.body.json()) as { version: string };
        expect(response.statusCode).toBe(200);
        out[i] = body.version;
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return out;
  }

  it('gives each candidate its weight of 3000 distinct callers within a binomial bound, stable the rest, weight 0 nobody', async () => {
    const n = 3_000;
    const ids = Array.from({ length: n }, (_, i) => `ab-${i}`);
    const versions = await versionsFor(ids);
    const count = (name: string) => versions.filter((v) => v === name).length;
    const within = (observed: number, p: number) => Math.abs(observed - n * p) <= 5 * Math.sqrt(n * p * (1 - p));
    expect(within(count('a'), 0.2), `a: ${count('a')}`).toBe(true);
    expect(within(count('b'), 0.3), `b: ${count('b')}`).toBe(true);
    expect(within(count('stable'), 0.5), `stable: ${count('stable')}`).toBe(true);
    expect(count('dark')).toBe(0);
    expect(dark.seen).toHaveLength(0);
    // Exactly the documented buckets: a takes 0..1999, b (listed last) 7000..9999.
    const seed = deriveSeed('shop', SPLIT_SALT);
    ids.forEach((id, i) => {
      const bucket = bucketOf(id, seed);
      expect(versions[i], id).toBe(bucket < 2000 ? 'a' : bucket >= 7000 ? 'b' : 'stable');
    });
    // Sticky: the same callers again get the same versions.
    expect(await versionsFor(ids.slice(0, 500))).toEqual(versions.slice(0, 500));
  });

  it('rules go first: a deny rule keeps callers on stable, a rule naming the weight-0 candidate reaches it', async () => {
    const inA = Array.from({ length: 200 }, (_, i) => `ab-${i}`).find((id) => bucketOf(id, deriveSeed('shop', SPLIT_SALT)) < 2000)!;
    expect((await get(gateway.url, { 'x-user-id': inA })).json?.version).toBe('a');
    expect((await get(gateway.url, { 'x-user-id': inA, 'x-blocked': '1' })).json?.version).toBe('stable');
    expect((await get(gateway.url, { 'x-user-id': inA, 'x-tester': 'dark' })).json?.version).toBe('dark');
    expect((await get(gateway.url)).json?.version).toBe('stable');
  });

  it('says Vary on what decided, or Cache-Control: private in private mode', async () => {
    const split = await get(gateway.url, { 'x-user-id': 'someone' });
    expect(split.headers.vary).toBe('x-blocked, x-tester, x-user-id');
    expect(split.headers['cache-control']).toBeUndefined();
    const denied = await get(gateway.url, { 'x-blocked': '1' });
    expect(denied.headers.vary).toBe('x-blocked');
    const priv = await get(`${gateway.url}/private`, { 'x-user-id': 'someone' });
    expect(priv.headers['cache-control']).toBe('private');
    expect(priv.headers.vary).toBeUndefined();
  });
});
