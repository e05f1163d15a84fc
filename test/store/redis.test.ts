import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings, RoutingDocument } from '../../src/config/schema.js';
import { ConfigError, GraygateError } from '../../src/errors.js';
import { createRedisStore, redisStoreKeys, type RedisStore } from '../../src/store/redis/redis-store.js';
import { eventually } from '../helpers/eventually.js';
import { commandCounts, rawCommand, startRedis, type RedisServer } from '../helpers/redis.js';
import { expectCode } from './contract.js';
import { validateRouting } from './validate.js';

/** A valid routing document, distinct per `n`. */
function doc(n: number): RoutingDocument {
  return RoutingDocument.parse({
    upstreams: { stable: { servers: [`http://127.0.0.1:${10_000 + n}`] }, candidate: { servers: ['http://127.0.0.1:9999'] } },
    services: [{ name: 'shop', stable: 'stable', release: { candidate: 'candidate', rules: [{ name: `range-${n}`, uidRange: { ranges: [{ from: 1, to: 1000 + n }] } }] } }],
  });
}

let redis: RedisServer;
let namespaces = 0;
const open: RedisStore[] = [];

beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await Promise.all(open.map((store) => store.close()));
  await redis?.stop();
});

function makeStore(overrides: Partial<Record<string, unknown>> = {}, server: RedisServer = redis): RedisStore {
  const settings = RedisStoreSettings.parse({ kind: 'redis', url: server.url, namespace: `t${namespaces}`, ...overrides });
  const store = createRedisStore(settings, { validate: validateRouting });
  open.push(store);
  return store;
}

/** A namespace of its own, and `count` stores (gateways) sharing it. */
function fleet(count: number, overrides: Partial<Record<string, unknown>> = {}, server?: RedisServer): RedisStore[] {
  const namespace = `t${++namespaces}`;
  return Array.from({ length: count }, () => makeStore({ namespace, ...overrides }, server));
}

describe('redis store: documents', () => {
  it('an empty store is GG_STORE_EMPTY (an outage to report, not empty rules); writing version 1 seeds it', async () => {
    const [store] = fleet(1);
    const error = await expectCode(store!.current(), 'GG_STORE_EMPTY');
    expect(error.message).toContain('{t');
    expect(error.message).toMatch(/seed/);
    const written = await store!.write(doc(1), { expectedVersion: 0, actor: 'alice', reason: 'seed' });
    expect(written.version).toBe(1);
    expect((await store!.current()).document).toEqual(doc(1));
  });

  it('two gateways writing the same version concurrently: exactly one wins, the other gets GG_VERSION_CONFLICT', async () => {
    const [a, b] = fleet(2);
    await a!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    for (let round = 1; round <= 20; round++) {
      const results = await Promise.allSettled([
        a!.write(doc(round), { expectedVersion: round, actor: 'a', reason: 'race' }),
        b!.write(doc(100 + round), { expectedVersion: round, actor: 'b', reason: 'race' }),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won).toHaveLength(1);
      const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect((lost.reason as GraygateError).code).toBe('GG_VERSION_CONFLICT');
      const current = await b!.current();
      expect(current.version).toBe(round + 1);
      expect(current.document).toEqual((won[0] as PromiseFulfilledResult<{ document: unknown }>).value.document);
    }
    // History holds each accepted write once, newest first, with who and why.
    const history = await a!.history();
    expect(history.map((h) => h.version)).toEqual(Array.from({ length: 21 }, (_, i) => 21 - i));
  });

  it('history is trimmed to historyLimit', async () => {
    const [store] = fleet(1, { historyLimit: 3 });
    for (let v = 0; v < 6; v++) await store!.write(doc(v), { expectedVersion: v, actor: 'a', reason: `v${v + 1}` });
    expect((await store!.history()).map((h) => h.version)).toEqual([6, 5, 4]);
    await expectCode(store!.version(2), 'GG_VERSION_UNKNOWN');
    expect((await store!.version(4)).meta.reason).toBe('v4');
  });

  it('an invalid stored document is refused with ConfigError naming the field; malformed JSON and entries too', async () => {
    const [store] = fleet(1);
    const keys = redisStoreKeys(`t${namespaces}`);
    await store!.write(doc(1), { expectedVersion: 0, actor: 'a', reason: 'good' });

    await redis.client.set(keys.doc, '{"version": 2, "meta": ');
    const notJson = await store!.current().then(() => undefined, (e: unknown) => e);
    expect(notJson).toBeInstanceOf(ConfigError);
    expect((notJson as ConfigError).message).toMatch(/not JSON/);

    const bad = { version: 2, meta: { actor: 'hand', time: new Date().toISOString(), reason: 'oops' }, document: { ...doc(1), services: [{ name: 'shop', stable: 'nowhere', match: { pathPrefix: 'no-slash' } }] } };
    await redis.client.set(keys.doc, JSON.stringify(bad));
    const invalid = await store!.current().then(() => undefined, (e: unknown) => e);
    expect(invalid).toBeInstanceOf(ConfigError);
    expect((invalid as ConfigError).code).toBe('GG_CONFIG_INVALID');
    expect((invalid as ConfigError).message).toContain('services.0.match.pathPrefix');

    await redis.client.set(keys.doc, JSON.stringify({ version: 'two', document: doc(1) }));
    await expectCode(store!.current(), 'GG_STORE_CORRUPT');

    await redis.client.set(keys.version, 'garbage');
    await expectCode(store!.write(doc(3), { expectedVersion: 1, actor: 'a', reason: 'x' }), 'GG_STORE_CORRUPT');
  });

  it('refuses a bad expectedVersion and a document that does not validate, before touching Redis', async () => {
    const [store] = fleet(1);
    await expect(store!.write(doc(1), { expectedVersion: -1, actor: 'a', reason: 'x' })).rejects.toBeInstanceOf(ConfigError);
    const broken = { ...doc(1), services: 'none' } as unknown as RoutingDocument;
    await expect(store!.write(broken, { expectedVersion: 0, actor: 'a', reason: 'x' })).rejects.toBeInstanceOf(ConfigError);
    await expectCode(store!.current(), 'GG_STORE_EMPTY');
  });
});

describe('redis store: change notification', () => {
  it('pub/sub: another gateway hears a write within milliseconds (poll far too slow to explain it)', async () => {
    const [writer, watcher] = fleet(2, { pollMs: 60_000 });
    await writer!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    const heard: number[] = [];
    const stop = watcher!.watch(() => heard.push(performance.now()));
    try {
      await eventually(() => expect(heard.length).toBeGreaterThan(0)); // the subscribe report
      const latencies: number[] = [];
      for (let v = 1; v <= 20; v++) {
        const before = heard.length;
        const start = performance.now();
        await writer!.write(doc(v), { expectedVersion: v, actor: 'w', reason: 'notify' });
        await eventually(() => expect(heard.length).toBeGreaterThan(before), { withinMs: 2_000, everyMs: 1 });
        latencies.push(heard[before]! - start);
        expect((await watcher!.current()).version).toBe(v + 1);
      }
      latencies.sort((x, y) => x - y);
      console.log(`pub/sub notification latency over 20 writes: p50 ${latencies[10]!.toFixed(2)} ms, max ${latencies[19]!.toFixed(2)} ms`);
    } finally {
      stop();
    }
  });

  it('CLIENT KILL TYPE pubsub: the subscriber resubscribes and the next change still arrives (poll disabled in effect)', async () => {
    const [writer, watcher] = fleet(2, { pollMs: 60_000 });
    await writer!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    let heard = 0;
    const stop = watcher!.watch(() => heard++);
    try {
      await eventually(() => expect(heard).toBeGreaterThan(0));
      const killed = Number(await redis.client.client('KILL', 'TYPE', 'pubsub'));
      expect(killed).toBeGreaterThan(0);
      // Resubscribing reports a change by itself (the listener rereads: a change may have been missed).
      const afterKill = heard;
      await eventually(() => expect(heard).toBeGreaterThan(afterKill), { withinMs: 2_000 });
      await eventually(async () => expect(await redis.client.pubsub('NUMSUB', `{t${namespaces}}:changes`)).toEqual([`{t${namespaces}}:changes`, 1]));
      const before = heard;
      await writer!.write(doc(1), { expectedVersion: 1, actor: 'w', reason: 'after kill' });
      await eventually(() => expect(heard).toBeGreaterThan(before), { withinMs: 1_000 });
    } finally {
      stop();
    }
  });

  it('100 writes with the subscriber killed every 20: the watcher ends on the last version; its reads never go backwards', async () => {
    const [writer, watcher] = fleet(2, { pollMs: 200 });
    await writer!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    const reads: number[] = [];
    let reading = Promise.resolve();
    // What a gateway does: on every notice reread, and apply only a newer version.
    const stop = watcher!.watch(() => {
      reading = reading.then(async () => {
        const current = await watcher!.current().catch(() => undefined);
        if (current) reads.push(current.version);
      });
    });
    try {
      for (let v = 1; v <= 100; v++) {
        if (v % 20 === 0) await redis.client.client('KILL', 'TYPE', 'pubsub');
        await writer!.write(doc(v), { expectedVersion: v, actor: 'w', reason: `change ${v}` });
      }
      await eventually(() => expect(reads.at(-1)).toBe(101), { withinMs: 2_000 });
      // Serialized rereads of one store: each sees the same version or a newer one.
      expect([...reads].sort((a, b) => a - b)).toEqual(reads);
    } finally {
      stop();
    }
  });

  it('the version poll catches a change that was never published, within the poll interval', async () => {
    const [writer, watcher] = fleet(2, { pollMs: 200 });
    await writer!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    let heard = 0;
    const stop = watcher!.watch(() => heard++);
    try {
      await eventually(() => expect(heard).toBeGreaterThan(0));
      // The first poll learns the baseline; wait for it (one GET more on the server).
      const gets = (await commandCounts(redis.client)).get ?? 0;
      await eventually(async () => expect((await commandCounts(redis.client)).get ?? 0).toBeGreaterThan(gets), { withinMs: 2_000 });
      const before = heard;
      // Bump the version behind graygate's back: no PUBLISH, so only the poll can notice.
      await redis.client.set(`{t${namespaces}}:version`, '2');
      await eventually(() => expect(heard).toBeGreaterThan(before), { withinMs: 1_000 });
    } finally {
      stop();
    }
  });

  it('the poll compares against the version last read, not the last polled: a store that goes back to it is noticed', async () => {
    // A poll far apart from the steps below, so the version in between is seen only by a read,
    // as when a notification brought it; a poll comparing against its own last value then finds
    // "no change" forever, and nobody rereads the store that lost that version.
    const [writer, watcher] = fleet(2, { pollMs: 4_000 });
    const prefix = `{t${namespaces}}`;
    await writer!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    let heard = 0;
    const stop = watcher!.watch(() => heard++);
    try {
      // The subscriber's (re)connect report and the first poll (it learns version 1).
      const gets = (await commandCounts(redis.client)).get ?? 0;
      await eventually(async () => expect((await commandCounts(redis.client)).get ?? 0).toBeGreaterThan(gets));
      const v1 = await redis.client.mget(`${prefix}:version`, `${prefix}:doc`);
      // Version 2: the watcher hears its notification and reads it (as a gateway does).
      const afterPoll = heard;
      await writer!.write(doc(1), { expectedVersion: 1, actor: 'test', reason: 'the write to be lost' });
      await eventually(() => expect(heard).toBeGreaterThan(afterPoll));
      expect((await watcher!.current()).version).toBe(2);
      // The write is lost (a replica promoted without it), again without a notification.
      await redis.client.multi().set(`${prefix}:version`, v1[0]!).set(`${prefix}:doc`, v1[1]!).exec();
      const before = heard;
      await eventually(() => expect(heard).toBeGreaterThan(before));
      expect((await watcher!.current()).version).toBe(1);
    } finally {
      stop();
    }
  });

  it('a paused server (half-open subscriber): the PING deadline drops the socket and a new subscriber takes over', async () => {
    const [writer, watcher] = fleet(2, { pollMs: 60_000, pingMs: 100 });
    await writer!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    let heard = 0;
    const stop = watcher!.watch(() => heard++);
    try {
      await eventually(() => expect(heard).toBeGreaterThan(0));
      const subscriberIds = async () =>
        ((await redis.client.call('CLIENT', 'LIST', 'TYPE', 'pubsub')) as string)
          .split('\n')
          .filter((line) => line.includes('name=graygate-subscriber'))
          .map((line) => /id=(\d+)/.exec(line)?.[1]);
      // The first report may come before the subscriber connection is up: wait for it.
      const before = await eventually(async () => {
        const [id] = await subscriberIds();
        expect(id).toBeDefined();
        return id;
      });
      // Pause every client for longer than the ping deadline; the subscriber's PING gets no reply.
      await rawCommand(redis.port, 'CLIENT PAUSE 600 ALL');
      const heardBefore = heard;
      await eventually(async () => {
        const ids = await subscriberIds();
        expect(ids.length).toBeGreaterThan(0);
        expect(ids).not.toContain(before);
      }, { withinMs: 5_000, everyMs: 50 });
      await eventually(() => expect(heard).toBeGreaterThan(heardBefore), { withinMs: 2_000 });
      const beforeWrite = heard;
      await writer!.write(doc(1), { expectedVersion: 1, actor: 'w', reason: 'after pause' });
      await eventually(() => expect(heard).toBeGreaterThan(beforeWrite), { withinMs: 1_000 });
    } finally {
      stop();
    }
  });
});

describe('redis store: Redis killed and restarted', () => {
  let own: RedisServer;
  beforeAll(async () => {
    own = await startRedis({ persist: true });
  });
  afterAll(() => own?.stop());

  it('reports unavailable quickly while down, then recovers, resyncs and notices later changes', async () => {
    const [writer, watcher] = fleet(2, { pollMs: 200, commandTimeoutMs: 300 }, own);
    // Connected first: a write's deadline covers the wait for the connection too, and 300 ms is
    // short for a first connect on a loaded machine.
    await eventually(() => expectCode(writer!.current(), 'GG_STORE_EMPTY'));
    await writer!.write(doc(0), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
    let heard = 0;
    const stop = watcher!.watch(() => heard++);
    try {
      await eventually(() => expect(heard).toBeGreaterThan(0));
      await own.kill('SIGKILL');
      // Refused rather than left waiting for the server to return (which the test does not do).
      await expectCode(watcher!.current(), 'GG_STORE_UNAVAILABLE');
      await expectCode(watcher!.keyReader.readKey('TOKEN_x', 50), 'GG_STORE_UNAVAILABLE');
      await eventually(() => expect(watcher!.reachable).toBe(false), { withinMs: 2_000 });

      await own.restart();
      const heardBefore = heard;
      // Back: it resyncs on its own (a change is reported), and reads work again.
      await eventually(() => expect(heard).toBeGreaterThan(heardBefore), { withinMs: 5_000 });
      await eventually(async () => expect((await watcher!.current()).version).toBe(1), { withinMs: 5_000 });
      await eventually(() => expect(watcher!.reachable).toBe(true), { withinMs: 2_000 });
      const beforeWrite = heard;
      await eventually(() => writer!.write(doc(1), { expectedVersion: 1, actor: 'w', reason: 'after restart' }), { withinMs: 5_000 });
      await eventually(() => expect(heard).toBeGreaterThan(beforeWrite), { withinMs: 2_000 });
      expect((await watcher!.current()).version).toBe(2);
    } finally {
      stop();
    }
  });
});

describe('redis store: deadlines through a paused server', () => {
  it('a write sent to a paused server fails by its deadline, says what to check, and is not applied when the server resumes', async () => {
    const own = await startRedis();
    try {
      const [store, reader] = fleet(2, { commandTimeoutMs: 600 }, own);
      await store!.write(doc(1), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
      // Connected (the clock measured at connect): the write goes out on a live socket and waits there.
      await eventually(async () => expect((await store!.current()).version).toBe(1));
      own.pause();
      let elapsed: number;
      let error: GraygateError;
      try {
        const startedAt = Date.now();
        error = await expectCode(store!.write(doc(2), { expectedVersion: 1, actor: 'alice', reason: 'paused', deadline: Date.now() + 600 }), 'GG_STORE_UNAVAILABLE');
        elapsed = Date.now() - startedAt;
        // Long enough for the command, sent before the deadline, to sit in the server's socket.
        await new Promise((resolve) => setTimeout(resolve, 300));
      } finally {
        own.resume();
      }
      expect(error.message).toMatch(/cannot be applied after .*check whether version 2 is "paused" by alice/);
      expect(elapsed).toBeLessThan(600 + 1_000);
      // The server runs the queued script on resume: past its fence, it writes nothing.
      await eventually(async () => expect((await reader!.current()).version).toBe(1), { withinMs: 5_000 });
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect((await reader!.current()).version).toBe(1);
      // And a write after it goes through as usual.
      await eventually(() => store!.write(doc(3), { expectedVersion: 1, actor: 'alice', reason: 'after' }), { withinMs: 5_000 });
    } finally {
      await own.stop();
    }
  });

  it('a read and a write share one deadline: no retry past it, no second timeout', async () => {
    const own = await startRedis();
    try {
      const [store] = fleet(1, { commandTimeoutMs: 500 }, own);
      await store!.write(doc(1), { expectedVersion: 0, actor: 'seed', reason: 'seed' });
      own.pause();
      try {
        const deadline = Date.now() + 500;
        const startedAt = Date.now();
        await expectCode(store!.current({ deadline }), 'GG_STORE_UNAVAILABLE');
        await expectCode(store!.write(doc(2), { expectedVersion: 1, actor: 'a', reason: 'r', deadline }), 'GG_STORE_UNAVAILABLE');
        // Both within the one deadline (plus a loaded machine's timer slack), not 500 ms each or more.
        expect(Date.now() - startedAt).toBeLessThan(500 + 400);
      } finally {
        own.resume();
      }
    } finally {
      await own.stop();
    }
  });

  it('health: up once connected; down (but reached before) while the server is gone', async () => {
    const own = await startRedis();
    const [store] = fleet(1, { pollMs: 100, commandTimeoutMs: 300 }, own);
    const stop = store!.watch(() => undefined);
    try {
      await eventually(() => expect(store!.health()).toEqual({ up: true, everUp: true }));
      await own.kill('SIGKILL');
      await eventually(() => expect(store!.health()).toEqual({ up: false, everUp: true }), { withinMs: 5_000 });
    } finally {
      stop();
      await own.stop();
    }
    const never = makeStore({ url: 'redis://127.0.0.1:1', commandTimeoutMs: 200 });
    expect(never.health()).toEqual({ up: false, everUp: false });
  });
});

describe('redis store: readKey', () => {
  it('returns the value, undefined for a missing key, and rejects at the deadline when the server is paused', async () => {
    const [store] = fleet(1);
    await redis.client.set('TOKEN_readkey', '1234');
    await eventually(async () => expect(await store!.keyReader.readKey('TOKEN_readkey', 200)).toBe('1234'));
    expect(await store!.keyReader.readKey('TOKEN_missing', 200)).toBeUndefined();
    // The pause outlasts the 50 ms deadline by far (even a loaded box's timer lag): rejecting at
    // all, rather than answering 1234, means the read gave up at its deadline.
    await rawCommand(redis.port, 'CLIENT PAUSE 5000 ALL');
    const start = performance.now();
    expect((await expectCode(store!.keyReader.readKey('TOKEN_readkey', 50), 'GG_STORE_UNAVAILABLE')).message).toMatch(/no answer within 50 ms \(Command timed out\)/);
    // Never before the deadline (timer precision allows a few ms early).
    expect(performance.now() - start).toBeGreaterThanOrEqual(45);
    await eventually(async () => expect(await store!.keyReader.readKey('TOKEN_readkey', 200)).toBe('1234'), { withinMs: 10_000 });
  });
});

describe('redis store: plain keys the rules read (Grayscale_Range)', () => {
  /** Resolves once the server has run at least one more GET than now (a watcher took its baseline). */
  async function afterNextGet(server: RedisServer, start: () => void): Promise<void> {
    const gets = (await commandCounts(server.client)).get ?? 0;
    start();
    await eventually(async () => expect((await commandCounts(server.client)).get ?? 0).toBeGreaterThan(gets), { withinMs: 2_000 });
  }

  it('readKeys returns each value, undefined when absent', async () => {
    const [store] = fleet(1);
    await redis.client.set('Grayscale_Range_read', '{"idStart":1,"idEnd":5000}');
    const values = await store!.keyReader.readKeys(['Grayscale_Range_read', 'absent_key']);
    expect([...values]).toEqual([
      ['Grayscale_Range_read', '{"idStart":1,"idEnd":5000}'],
      ['absent_key', undefined],
    ]);
  });

  it('without keyspace notifications, a SET in redis-cli is picked up by the poll', async () => {
    const [store] = fleet(1, { pollMs: 200 });
    await redis.client.set('Grayscale_Range_poll', '{"idStart":1,"idEnd":5000}');
    let heard = 0;
    let stop = () => {};
    await afterNextGet(redis, () => {
      stop = store!.keyReader.watchKeys(['Grayscale_Range_poll'], () => heard++);
    });
    try {
      await redis.client.set('Grayscale_Range_poll', '{"idStart":1,"idEnd":100}');
      await eventually(() => expect(heard).toBe(1), { withinMs: 2_000 });
      await redis.client.del('Grayscale_Range_poll');
      await eventually(() => expect(heard).toBe(2), { withinMs: 2_000 });
    } finally {
      stop();
    }
  });

  it('with keyspace notifications on, a SET is picked up at once (poll once a minute)', async () => {
    const server = await startRedis({ args: ['--notify-keyspace-events', 'K$g'] });
    const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: server.url, pollMs: 60_000 }), { validate: validateRouting });
    let stop = () => {};
    try {
      await server.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
      let heard = 0;
      await afterNextGet(server, () => {
        stop = store.keyReader.watchKeys(['Grayscale_Range'], () => heard++);
      });
      // Wait until the keyspace channel is subscribed, then change the key.
      await eventually(async () => expect(await server.client.pubsub('NUMSUB', '__keyspace@0__:Grayscale_Range')).toEqual(['__keyspace@0__:Grayscale_Range', 1]));
      const start = performance.now();
      await server.client.set('Grayscale_Range', '{"idStart":1,"idEnd":100}');
      await eventually(() => expect(heard).toBe(1), { withinMs: 2_000, everyMs: 1 });
      console.log(`keyspace notification → onChange: ${(performance.now() - start).toFixed(2)} ms`);
      expect((await store.keyReader.readKeys(['Grayscale_Range'])).get('Grayscale_Range')).toBe('{"idStart":1,"idEnd":100}');
    } finally {
      stop();
      await store.close();
      await server.stop();
    }
  });
});
