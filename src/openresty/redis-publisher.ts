import type { RedisStoreSettings } from '../config/schema.js';
import type { Logger } from '../observe/log.js';
import { RedisConnections, type Client } from '../store/redis/connections.js';
import { redisStoreKeys } from '../store/redis/names.js';
import { openRestyKeys } from './conf.js';
import type { Envelope } from './envelope.js';

/**
 * Writes the delivery envelope where every nginx of the fleet reads it, and announces it, in one
 * script: only the version the store holds now, of its epoch, and only when newer than what the
 * key holds (a later stamp for the same version: a store key such as Grayscale_Range changed). A
 * gateway that lags behind the store, or a duplicate, changes nothing; every graygate with the
 * OpenResty data plane writes it, so it does not matter which one hears of a change first.
 *
 * KEYS: envelope, meta (hash), store version, store epoch. ARGV: version, epoch, stamp, envelope, channel.
 */
const PUBLISH_SCRIPT = `
local current = redis.call('GET', KEYS[3])
if current == false or tonumber(current) ~= tonumber(ARGV[1]) then return 0 end
local epoch = redis.call('GET', KEYS[4]) or ''
if epoch ~= ARGV[2] then return 0 end
local meta = redis.call('HMGET', KEYS[2], 'version', 'epoch', 'stamp')
if meta[1] == ARGV[1] and meta[2] == ARGV[2] and tonumber(meta[3]) >= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 'version', ARGV[1], 'epoch', ARGV[2], 'stamp', ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
`;

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

  /** Writes and announces `envelope` if it is the store's current version and newer; true when written. Never rejects. */
  async publish(envelope: Envelope, body: string): Promise<boolean> {
    try {
      const written = await this.connections.run(this.client, 'the OpenResty routing key', (client) => client.eval(PUBLISH_SCRIPT, 4, this.keys.envelope, this.keys.meta, this.store.version, this.store.epoch, envelope.version, envelope.epoch, envelope.stamp, body, this.keys.channel));
      return written === 1;
    } catch (error) {
      this.logger.warn({ event: 'openresty-publish-failed', version: envelope.version, err: error }, `could not write routing version ${envelope.version} for the fleet's nginx to Redis: ${(error as Error).message}`);
      return false;
    }
  }

  async close(): Promise<void> {
    this.connections.close();
  }
}
