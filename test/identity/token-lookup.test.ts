import { Writable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import type { IdentityContext, IdentityResolver } from '../../src/identity/source.js';
import { isCanonicalUserId, isWellFormedToken, tokenLookupIdentity, tokenLookupStats } from '../../src/identity/token-lookup.js';
import { createLogger } from '../../src/observe/log.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { eventually } from '../helpers/eventually.js';
import { LiteralFacts } from '../helpers/facts.js';
import { commandCounts, rawCommand, startRedis, type RedisServer } from '../helpers/redis.js';
import { validateRouting } from '../store/validate.js';

let redis: RedisServer;
let store: RedisStore;
const logLines: string[] = [];
let context: IdentityContext;
let prefixes = 0;

beforeAll(async () => {
  redis = await startRedis();
  store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url }), { validate: validateRouting });
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      callback();
    },
  });
  context = { readKey: (key, deadlineMs) => store.keyReader.readKey(key, deadlineMs), logger: createLogger({ level: 'warn', destination }) };
  await eventually(async () => expect(await store.keyReader.readKey('ping-probe', 500)).toBeUndefined());
});
afterAll(async () => {
  await store?.close();
  await redis?.stop();
});

/** A resolver whose keys live under a prefix of its own (`T<n>_{token}`), so tests never share cache entries. */
function resolverFor(config: Record<string, unknown> = {}, ctx: IdentityContext = context): { resolve: IdentityResolver; key: (token: string) => string } {
  const prefix = `T${++prefixes}_`;
  // A generous deadline unless the test is about the deadline: the box is shared and loaded.
  const parsed = tokenLookupIdentity.schema.parse({ keyTemplate: `${prefix}{token}`, deadlineMs: 2_000, ...config });
  return { resolve: tokenLookupIdentity.create(parsed, ctx), key: (token) => `${prefix}${token}` };
}

const request = (token?: string) => new LiteralFacts({ headers: token === undefined ? {} : { TOKEN: token } });

/** V8 heap in use after a full collection (gc exposed at run time: the test workers start without --expose-gc). */
function heapAfterGc(): number {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}
const gets = async () => (await commandCounts(redis.client)).get ?? 0;

describe('tokenLookup identity', () => {
  it('defaults: header TOKEN, key TOKEN_{token}, 5 s cache, 1 s negative, 50 ms deadline', () => {
    expect(tokenLookupIdentity.schema.parse({})).toEqual({
      header: 'token',
      keyTemplate: 'TOKEN_{token}',
      cacheTtlMs: 5_000,
      negativeTtlMs: 1_000,
      cacheMax: 100_000,
      deadlineMs: 50,
      maxStaleMs: 300_000,
      maxTokenLength: 256,
    });
    const bad = tokenLookupIdentity.schema.safeParse({ keyTemplate: 'TOKEN_', deadlineMs: 0 });
    expect(bad.error?.issues.map((issue) => issue.path.join('.'))).toEqual(expect.arrayContaining(['keyTemplate', 'deadlineMs']));
  });

  it("the seed's scheme: TOKEN header → TOKEN_<token> → user id; the second request answers from the cache with no store call", async () => {
    await redis.client.set('TOKEN_HGdsakGDKSFGkgcshalGF', '1234');
    const resolve = tokenLookupIdentity.create(tokenLookupIdentity.schema.parse({ deadlineMs: 2_000 }), context);
    expect(await resolve(request('HGdsakGDKSFGkgcshalGF'))).toBe('1234');
    const before = await gets();
    for (let i = 0; i < 100; i++) expect(resolve(request('HGdsakGDKSFGkgcshalGF'))).toBe('1234'); // synchronous: no Promise
    expect(await gets()).toBe(before);
    expect(resolve(request())).toBeUndefined();
  });

  it('an unknown token is undefined and cached as unknown for negativeTtlMs', async () => {
    const { resolve, key } = resolverFor({ negativeTtlMs: 300 });
    expect(await resolve(request('nobody'))).toBeUndefined();
    const before = await gets();
    expect(resolve(request('nobody'))).toBeUndefined(); // synchronous, from the negative cache
    expect(await gets()).toBe(before);
    await redis.client.set(key('nobody'), '77');
    expect(resolve(request('nobody'))).toBeUndefined(); // still negatively cached
    await eventually(async () => expect(await resolve(request('nobody'))).toBe('77'), { withinMs: 3_000 });
  });

  it('a found id is cached for cacheTtlMs, then looked up again', async () => {
    const { resolve, key } = resolverFor({ cacheTtlMs: 300 });
    await redis.client.set(key('alice'), '1');
    expect(await resolve(request('alice'))).toBe('1');
    await redis.client.set(key('alice'), '2');
    expect(resolve(request('alice'))).toBe('1');
    await eventually(async () => expect(await resolve(request('alice'))).toBe('2'), { withinMs: 3_000 });
  });

  it('single flight: 200 concurrent misses of one token make one GET', async () => {
    const { resolve, key } = resolverFor();
    await redis.client.set(key('crowd'), '4242');
    const before = await gets();
    const statsBefore = tokenLookupStats(context);
    const answers = await Promise.all(Array.from({ length: 200 }, () => resolve(request('crowd'))));
    expect(new Set(answers)).toEqual(new Set(['4242']));
    expect((await gets()) - before).toBe(1);
    expect(tokenLookupStats(context).lookups - statsBefore.lookups).toBe(1);
    resolve(request('crowd'));
    expect(tokenLookupStats(context).hits - statsBefore.hits).toBe(1);
  });

  it('a paused store: the request gets undefined (stable) at the deadline, not once the store answers', async () => {
    const { resolve, key } = resolverFor({ deadlineMs: 40 });
    await redis.client.set(key('slow'), '5');
    const timeoutsBefore = tokenLookupStats(context).timeouts;
    // The pause outlasts the deadline by far (even a loaded box's timer lag): an answer of "5"
    // would mean the lookup waited for the store instead of giving up at its deadline.
    await rawCommand(redis.port, 'CLIENT PAUSE 5000 ALL');
    expect(await resolve(request('slow'))).toBeUndefined();
    expect(tokenLookupStats(context).timeouts - timeoutsBefore).toBe(1);
    // A timeout is not cached as unknown: once the server answers, the id is found (a resolver
    // with a longer deadline shares the same cache, so a cached "unknown" would show here).
    const patient = tokenLookupIdentity.create(tokenLookupIdentity.schema.parse({ keyTemplate: `${key('')}{token}`, deadlineMs: 2_000 }), context);
    await eventually(async () => expect(await patient(request('slow'))).toBe('5'), { withinMs: 5_000 });
    expect(logLines.some((line) => line.includes('token lookup failed or timed out'))).toBe(true);
  });

  it('garbage under a token key is undefined and logged at a bounded rate, never thrown; the token is not logged', async () => {
    const { resolve, key } = resolverFor();
    const garbage = ['007', 'a b', 'x'.repeat(257), '12\u0001', '', 'tab\there', 'ünïcode'];
    const linesBefore = logLines.length;
    const garbageBefore = tokenLookupStats(context).garbage;
    for (const [i, value] of garbage.entries()) {
      await redis.client.set(key(`secret-token-${i}`), value);
      expect(await resolve(request(`secret-token-${i}`))).toBeUndefined();
    }
    for (let i = 0; i < 20; i++) {
      await redis.client.set(key(`more-garbage-${i}`), ' 1');
      expect(await resolve(request(`more-garbage-${i}`))).toBeUndefined();
    }
    expect(tokenLookupStats(context).garbage - garbageBefore).toBe(garbage.length + 20);
    const lines = logLines.slice(linesBefore).filter((line) => line.includes('not a user id'));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(5);
    expect(lines.join('\n')).not.toContain('secret-token');
  });

  it('oversized and malformed tokens are refused before any store call', async () => {
    const { resolve } = resolverFor({ maxTokenLength: 64 });
    const before = await gets();
    const refusedBefore = tokenLookupStats(context).refused;
    for (const token of ['a'.repeat(65), 'has space', 'brace{tag}', 'semi;colon', 'naïve', '', 'new\nline', 'x'.repeat(100_000)]) {
      expect(resolve(request(token))).toBeUndefined(); // synchronous
    }
    expect(await gets()).toBe(before);
    expect(tokenLookupStats(context).refused - refusedBefore).toBe(8);
  });

  it('the cache outlives config snapshots: a new resolver on the same context answers from it', async () => {
    const prefix = `T${++prefixes}_`;
    const config = tokenLookupIdentity.schema.parse({ keyTemplate: `${prefix}{token}`, deadlineMs: 2_000 });
    await redis.client.set(`${prefix}carol`, '9');
    const first = tokenLookupIdentity.create(config, context);
    expect(await first(request('carol'))).toBe('9');
    const before = await gets();
    const second = tokenLookupIdentity.create({ ...config, header: 'token', deadlineMs: 80 }, context);
    expect(second(request('carol'))).toBe('9');
    expect(await gets()).toBe(before);
  });

  it('the cache keeps its own copy of each token, never the longer string a header value was sliced from', async () => {
    const { resolve, key } = resolverFor({ cacheTtlMs: 60_000, negativeTtlMs: 60_000 });
    const count = 200;
    const token = (i: number) => `sliced-token-${i}-of-a-longer-header`;
    // Half known (cached with their id), half unknown (cached as unknown): both kinds of entry.
    await redis.client.mset(...Array.from({ length: count / 2 }, (_, i) => [key(token(i)), String(1_000 + i)]).flat());
    const before = heapAfterGc();
    const answers = [];
    for (let i = 0; i < count; i++) {
      // The header value is a slice of a fresh 64 KiB string, as an adapter that slices values out
      // of a raw header block (or a cookie, or `Bearer …`) would hand it over. Kept, each parent
      // would be 64 KiB: 12.5 MiB for 200 entries.
      const block = `${'h'.repeat(65_536)}${token(i)};`;
      answers.push(await resolve(request(block.slice(65_536, 65_536 + token(i).length))));
    }
    const grown = heapAfterGc() - before;
    expect(answers).toEqual(Array.from({ length: count }, (_, i) => (i < count / 2 ? String(1_000 + i) : undefined)));
    expect(grown).toBeLessThan(2 * 2 ** 20);
    // Still the same tokens: a sliced value, a flat one, hits answered synchronously from the copies.
    expect(resolve(request(token(7)))).toBe('1007');
    expect(resolve(request(`x${token(7)}`.slice(1)))).toBe('1007');
    const negativeBefore = tokenLookupStats(context).negativeHits;
    expect(resolve(request(token(count - 1)))).toBeUndefined();
    expect(tokenLookupStats(context).negativeHits - negativeBefore).toBe(1);
  });

  it('with Redis unreachable a miss is undefined at once', async () => {
    const down = await startRedis();
    const downStore = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: down.url }), { validate: validateRouting });
    try {
      await eventually(async () => expect(await downStore.keyReader.readKey('x', 200)).toBeUndefined());
      await down.kill();
      // A deadline far beyond how long a refused connection takes: the miss must end with the
      // store's refusal (a failure), not with the deadline (a timeout).
      const downContext: IdentityContext = { readKey: (k, d) => downStore.keyReader.readKey(k, d) };
      const resolve = tokenLookupIdentity.create(tokenLookupIdentity.schema.parse({ deadlineMs: 30_000 }), downContext);
      expect(await resolve(request('anyone'))).toBeUndefined();
      expect(tokenLookupStats(downContext)).toMatchObject({ failures: 1, timeouts: 0 });
    } finally {
      await downStore.close();
      await down.stop();
    }
  });

  it('needs a store that can look keys up', () => {
    expect(() => tokenLookupIdentity.create(tokenLookupIdentity.schema.parse({}), {})).toThrow(ConfigError);
  });

  it('property: any header value is either refused synchronously or well formed; the check matches its definition', () => {
    const { resolve } = resolverFor({ maxTokenLength: 32 });
    const reference = /^[A-Za-z0-9\-._~+/=]{1,32}$/;
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.stringMatching(/^[A-Za-z0-9\-._~+/=]{0,40}$/)), (token) => {
        expect(isWellFormedToken(token, 32)).toBe(reference.test(token));
        if (!reference.test(token)) expect(resolve(request(token))).toBeUndefined();
      }),
      { numRuns: 500 },
    );
  });

  it('property: any canonical user id comes back from the cache unchanged, on the miss and on every hit', async () => {
    const { resolve, key } = resolverFor({ cacheTtlMs: 60_000 });
    let n = 0;
    const digits = (min: number, max: number) => fc.stringMatching(new RegExp(`^[1-9]\\d{${min - 1},${max - 1}}$`));
    const ids = fc.oneof(
      fc.nat().map(String),
      fc.constantFrom('0', '1', '2147483647', '2147483648', '4294967296', '999999999999999', '1000000000000000', '9007199254740993', '-0', '-5', '1e3', '0x10', '1.5', '+7'),
      digits(10, 22),
      fc.stringMatching(/^[\x21-\x7e]{1,40}$/),
      fc.stringMatching(/^[\x21-\x7e]{250,256}$/),
    );
    await fc.assert(
      fc.asyncProperty(ids, async (id) => {
        fc.pre(isCanonicalUserId(id));
        const token = `roundtrip-${++n}`;
        await redis.client.set(key(token), id);
        expect(await resolve(request(token))).toBe(id); // the miss: the value Redis returned
        for (let i = 0; i < 2; i++) expect(resolve(request(token))).toBe(id); // hits: synchronous, from the cache
      }),
      { numRuns: 300 },
    );
    expect(n).toBeGreaterThan(200);
  });

  it('property: a stored value is accepted only as printable ASCII without spaces, and digits only in canonical form', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.stringMatching(/^-?\d{1,20}$/), fc.nat().map(String)), (value) => {
        const printable = /^[\x21-\x7e]{1,256}$/.test(value);
        const leadingZero = /^0\d+$/.test(value);
        expect(isCanonicalUserId(value)).toBe(printable && !leadingZero);
      }),
      { numRuns: 1_000 },
    );
  });
});
