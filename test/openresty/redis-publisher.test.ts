import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { silentLogger } from '../../src/observe/log.js';
import { openRestyKeys } from '../../src/openresty/conf.js';
import { buildEnvelope } from '../../src/openresty/envelope.js';
import { normalizeRouting } from '../../src/openresty/normalize.js';
import { PUBLISH_WHOLE_MAX_BYTES, RedisPublisher } from '../../src/openresty/redis-publisher.js';
import { eventually } from '../helpers/eventually.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { routingDocument, writeNext, writerStore } from '../helpers/redis-routing.js';
import type { RedisStore } from '../../src/store/redis/redis-store.js';

// The write of the fleet's OpenResty routing key against a real Redis: only the store's current
// version, once per content (however many gateways write it), and announced with the envelope
// itself when it is small, by its version when it is not.

describe('RedisPublisher', () => {
  let redis: RedisServer;
  let writer: RedisStore;
  let publisher: RedisPublisher;
  let client: Redis;
  let subscriber: Redis;
  const messages: string[] = [];
  const namespace = `pub-${Math.random().toString(36).slice(2, 8)}`;
  const keys = openRestyKeys(namespace);

  /** A document whose uid list makes its form `ids` long (a large release when big). */
  const document = (ids: number) =>
    routingDocument({
      upstreams: { v1: { servers: ['http://127.0.0.1:9'] }, v2: { servers: ['http://127.0.0.1:10'] } },
      identity: { sources: [{ header: { name: 'x-user-id' } }] },
      services: [{ name: 'app', stable: 'v1', release: { candidate: 'v2', rules: [{ name: 'list', uidList: { ids: Array.from({ length: ids }, (_, i) => String(100_000 + i)) } }] } }],
    });

  const envelopeFor = async (ids: number, version: number, stamp: number) => {
    const epoch = await publisher.epoch();
    return buildEnvelope(normalizeRouting(document(ids), version), stamp, epoch);
  };

  beforeAll(async () => {
    redis = await startRedis();
    writer = writerStore(redis.url, namespace);
    publisher = new RedisPublisher(RedisStoreSettings.parse({ kind: 'redis', url: redis.url, namespace }), silentLogger());
    client = new Redis(redis.url);
    subscriber = new Redis(redis.url);
    subscriber.on('message', (_channel: string, message: string) => messages.push(message));
    await subscriber.subscribe(keys.channel);
    await writer.write(document(1), { expectedVersion: 0, actor: 'test', reason: 'seed' });
  });
  afterAll(async () => {
    subscriber?.disconnect();
    client?.disconnect();
    await publisher?.close();
    await writer?.close();
    await redis?.stop();
  });

  it('writes the current version once per content and publishes a small envelope whole', async () => {
    const version = await writeNext(writer, document(3), 'small');
    const first = await envelopeFor(3, version, 1_000);
    expect(Buffer.byteLength(first.body)).toBeLessThanOrEqual(PUBLISH_WHOLE_MAX_BYTES);
    expect(await publisher.publish(first.envelope, first.body)).toBe('written');
    await eventually(() => expect(messages).toEqual([first.body]));
    expect(JSON.parse(first.body)).toEqual(JSON.parse(JSON.stringify(first.envelope)));
    expect(await client.get(keys.envelope)).toBe(first.body);
    // Another gateway with the same content, compiled later: nothing to write, nothing announced.
    const again = await envelopeFor(3, version, 2_000);
    expect(again.envelope.digest).toBe(first.envelope.digest);
    expect(await publisher.publish(again.envelope, again.body)).toBe('unchanged');
    // A version the store no longer holds is never written, even if newer content.
    const next = await writeNext(writer, document(4), 'next');
    const stale = await envelopeFor(5, version, 3_000);
    expect(await publisher.publish(stale.envelope, stale.body)).toBe('unchanged');
    const current = await envelopeFor(4, next, 3_000);
    expect(await publisher.publish(current.envelope, current.body)).toBe('written');
    // An epoch the store no longer has (it was seeded again since) is refused as such.
    const otherEpoch = await buildEnvelope(normalizeRouting(document(4), next), 4_000, 'an-old-epoch');
    expect(await publisher.publish(otherEpoch.envelope, otherEpoch.body)).toBe('other-epoch');
    await eventually(() => expect(messages).toEqual([first.body, current.body]));
    expect(await client.get(keys.envelope)).toBe(current.body);
  });

  it('announces a large envelope by its version, and sends its body only when the key lacks it', async () => {
    messages.length = 0;
    const ids = 20_000;
    const version = await writeNext(writer, document(ids), 'large');
    const large = await envelopeFor(ids, version, 5_000);
    expect(Buffer.byteLength(large.body)).toBeGreaterThan(PUBLISH_WHOLE_MAX_BYTES);
    expect(await publisher.publish(large.envelope, large.body)).toBe('written');
    await eventually(() => expect(messages).toEqual([String(version)]));
    expect(await client.get(keys.envelope)).toBe(large.body);
    const bytesIn = async () => Number(/total_net_input_bytes:(\d+)/.exec(await client.info('stats'))![1]);
    const before = await bytesIn();
    const again = await envelopeFor(ids, version, 6_000);
    expect(await publisher.publish(again.envelope, again.body)).toBe('unchanged');
    // The second writer asked, and did not ship the megabytes again.
    expect((await bytesIn()) - before).toBeLessThan(PUBLISH_WHOLE_MAX_BYTES);
    expect(messages).toEqual([String(version)]);
  });
});
