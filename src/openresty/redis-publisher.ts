import type { RedisStoreSettings } from '../config/schema.js';
import type { Logger } from '../observe/log.js';
import { RedisConnections, type Client } from '../store/redis/connections.js';
import { redisStoreKeys } from '../store/redis/names.js';
import { openRestyKeys } from './conf.js';
import type { Envelope } from './envelope.js';

/**
 * Writes the delivery envelope where every nginx of the fleet reads it, and announces it, in one
 * script: only the version the store holds now, of its epoch, and only when newer than what the
 * key holds (a later stamp for the same version: a store key such as Grayscale_Range changed;
 * the same digest is the same content, already there). A gateway that lags behind the store, or a
 * duplicate, changes nothing; every graygate of the fleet writes it (whatever its data plane), so
 * it does not matter which one hears of a change first.
 *
 * The announcement carries the envelope itself when it is small (nginx then needs no read of the
 * key: one round trip less on every change), else the version alone.
 *
 * KEYS: envelope, meta (hash), store version, store epoch. ARGV: version, epoch, stamp, envelope, channel, digest, message.
 */
const PUBLISH_SCRIPT = `
local current = redis.call('GET', KEYS[3])
if current == false or tonumber(current) ~= tonumber(ARGV[1]) then return 0 end
local epoch = redis.call('GET', KEYS[4]) or ''
if epoch ~= ARGV[2] then return -1 end
local meta = redis.call('HMGET', KEYS[2], 'version', 'epoch', 'stamp', 'digest')
if meta[1] == ARGV[1] and meta[2] == ARGV[2] and (meta[4] == ARGV[6] or tonumber(meta[3]) >= tonumber(ARGV[3])) then return 0 end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 'version', ARGV[1], 'epoch', ARGV[2], 'stamp', ARGV[3], 'digest', ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[7])
return 1
`;

/**
 * The largest envelope published whole (bytes); a larger one is announced by its version. Small
 * enough to stay far below Redis's pub/sub output buffer limits with every nginx subscribed.
 */
export const PUBLISH_WHOLE_MAX_BYTES = 64 * 1024;

/**
 * What a publish did: `written` (and announced); `unchanged`: the key holds it or something newer,
 * or the store holds another version; `other-epoch`: the store was seeded again since the epoch
 * was read (read it again); `failed`: Redis did not answer (logged).
 */
export type PublishResult = 'written' | 'unchanged' | 'other-epoch' | 'failed';

export class RedisPublisher {
  private readonly connections: RedisConnections;
  private readonly client: Client;
  private readonly keys: ReturnType<typeof openRestyKeys>;
  private readonly store: ReturnType<typeof redisStoreKeys>;

  constructor(
    settings: RedisStoreSettings,
    private readonly logger: Logger,
  ) {
    this.connections = new RedisConnections(settings, logger);
    this.client = this.connections.connect('openresty', {});
    this.keys = openRestyKeys(settings.namespace);
    this.store = redisStoreKeys(settings.namespace);
  }

  /** The store's epoch ('' before it was seeded). */
  async epoch(): Promise<string> {
    return (await this.connections.read(this.client, 'the store epoch', (client) => client.get(this.store.epoch))) ?? '';
  }

  /** Writes and announces `envelope` if it is the store's current version and newer. Never rejects. */
  async publish(envelope: Envelope, body: string): Promise<PublishResult> {
    try {
      const whole = Buffer.byteLength(body) <= PUBLISH_WHOLE_MAX_BYTES;
      if (!whole) {
        // A large body is sent only when the key lacks it: with many gateways in a fleet, each
        // would otherwise ship the same megabytes to Redis on every change.
        const [version, epoch, digest] = await this.connections.run(this.client, 'the OpenResty routing key', (client) => client.hmget(this.keys.meta, 'version', 'epoch', 'digest'));
        if (version === String(envelope.version) && epoch === envelope.epoch && digest === envelope.digest) return 'unchanged';
      }
      const message = whole ? body : String(envelope.version);
      const written = await this.connections.run(this.client, 'the OpenResty routing key', (client) =>
        client.eval(PUBLISH_SCRIPT, 4, this.keys.envelope, this.keys.meta, this.store.version, this.store.epoch, envelope.version, envelope.epoch, envelope.stamp, body, this.keys.channel, envelope.digest, message),
      );
      return written === 1 ? 'written' : written === -1 ? 'other-epoch' : 'unchanged';
    } catch (error) {
      this.logger.warn({ event: 'openresty-publish-failed', version: envelope.version, err: error }, `could not write routing version ${envelope.version} for the fleet's nginx to Redis: ${(error as Error).message}`);
      return 'failed';
    }
  }

  async close(): Promise<void> {
    this.connections.close();
  }
}
