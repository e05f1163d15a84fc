import { Command } from 'ioredis';
import type { RedisStoreSettings } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import { silentLogger, type Logger } from '../../observe/log.js';
import type { KeyReader } from '../store.js';
import { RedisConnections, type Client } from './connections.js';

/**
 * Plain keys in Redis outside the routing document: `readKey` for identity lookups (its own
 * `lookup` connection, a deadline per call, no queueing), `readKeys`/`watchKeys` for values the
 * rules read (keyspace notifications when the server sends them, a poll otherwise).
 */
export class RedisKeyReader implements KeyReader {
  /** Subscribers of watchKeys, closed with the reader. */
  private readonly keySubscribers = new Set<Client>();
  private keyspaceDescribed = false;

  constructor(
    private readonly connections: RedisConnections,
    private readonly control: Client,
    private readonly lookup: Client,
  ) {}

  /**
   * Reads one plain key (token → user id) with a hard deadline: no offline queue, so while
   * Redis is unreachable this rejects at once; otherwise it rejects after `deadlineMs`.
   */
  readKey(key: string, deadlineMs: number): Promise<string | undefined> {
    const lookup = this.lookup;
    if (lookup.status !== 'ready') {
      return Promise.reject(new GraygateError('GG_STORE_UNAVAILABLE', `redis store (${this.connections.target.display}) is not connected (status ${lookup.status})`));
    }
    // A Command with its own timer: the deadline is per call, not per connection.
    const command = new Command('get', [key], { replyEncoding: 'utf8' });
    command.setTimeout(deadlineMs);
    lookup.sendCommand(command);
    return (command.promise as Promise<string | null>).then(nullToUndefined, (error: Error) => {
      throw new GraygateError('GG_STORE_UNAVAILABLE', `redis store (${this.connections.target.display}): lookup got no answer within ${deadlineMs} ms (${error.message})`, { cause: error });
    });
  }

  /** Values of plain keys (e.g. `Grayscale_Range`) for compiling a snapshot; GG_STORE_UNAVAILABLE when unreachable. */
  async readKeys(keys: readonly string[]): Promise<ReadonlyMap<string, string | undefined>> {
    // One GET per key rather than MGET: in a Cluster the keys may live in different slots.
    const values = await this.connections.read(this.control, 'reading keys', (client) => Promise.all(keys.map((key) => client.get(key))));
    return new Map(keys.map((key, i) => [key, nullToUndefined(values[i] ?? null)]));
  }

  /**
   * Calls `onChange` when one of `keys` may have changed: at once by keyspace notification when
   * the server sends them (`notify-keyspace-events` with K and $gx or A; not in Cluster, where they
   * stay on the node that holds the key), and by a poll of the values every pollMs otherwise.
   * Also after a reconnect or an outage, since a change may have been missed.
   */
  watchKeys(keys: readonly string[], onChange: () => void): () => void {
    if (this.connections.closed) throw new GraygateError('GG_STORE_UNAVAILABLE', 'the redis store is closed');
    const watched = [...keys];
    let last: (string | null)[] | undefined;
    let stopped = false;
    let checking = false;
    let again = false;
    /** The first read only learns the values; later differences (or a read after a failure) report. */
    let hasBaseline = false;
    const report = () => {
      try {
        onChange();
      } catch (error) {
        this.connections.logger.error({ err: error }, 'a store key listener threw');
      }
    };
    // Reads every key; reports when any value differs from the last read (or after a failed one).
    const check = async (): Promise<void> => {
      if (checking) {
        again = true;
        return;
      }
      checking = true;
      try {
        do {
          again = false;
          let values: (string | null)[];
          try {
            await this.connections.whenReady(this.control, 'reading watched keys');
            values = await Promise.all(watched.map((key) => this.control.get(key)));
          } catch {
            // Unknown now: the next successful read reports, even when it is the first one (a
            // gateway that booted during an outage has never read the keys; silence would keep
            // it on "absent" until the value happened to change).
            last = undefined;
            hasBaseline = true;
            return;
          }
          if (stopped) return;
          const changed = last === undefined || values.some((value, i) => value !== last![i]);
          const isBaseline = !hasBaseline;
          hasBaseline = true;
          last = values;
          if (changed && !isBaseline) report();
        } while (again && !stopped);
      } finally {
        checking = false;
      }
    };
    void check();
    const timer = setInterval(() => void check(), this.connections.settings.pollMs);
    timer.unref();

    let subscriber: Client | undefined;
    const db = this.connections.target.topology === 'sentinel' ? this.connections.target.db : this.connections.target.topology === 'standalone' ? Number(new URL(this.connections.target.url).pathname.slice(1) || 0) : 0;
    if (this.connections.target.topology !== 'cluster' && watched.length > 0) {
      const channels = watched.map((key) => `__keyspace@${db}__:${key}`);
      const sub = this.connections.connect('keyspace', { commandTimeout: this.connections.settings.pingMs }, true);
      subscriber = sub;
      sub.on('ready', () => {
        sub.subscribe(...channels).then(
          () => void check(),
          () => {},
        );
      });
      sub.on('message', () => void check());
      this.keySubscribers.add(sub);
      void this.describeKeyspaceEvents();
    }
    return () => {
      stopped = true;
      clearInterval(timer);
      if (subscriber) {
        this.keySubscribers.delete(subscriber);
        this.connections.release(subscriber);
      }
    };
  }

  /** Says once whether key changes arrive at once (keyspace events) or by polling. */
  private async describeKeyspaceEvents(): Promise<void> {
    if (this.keyspaceDescribed) return;
    this.keyspaceDescribed = true;
    try {
      await this.connections.whenReady(this.control, 'CONFIG GET');
      const [, flags = ''] = (await this.control.call('CONFIG', 'GET', 'notify-keyspace-events')) as [string, string];
      // SET is a `$` event, DEL a `g` event and expiry an `x` event; `A` stands for all of them.
      const all = flags.includes('A');
      const sets = flags.includes('K') && (all || flags.includes('$'));
      const everything = sets && (all || (flags.includes('g') && flags.includes('x')));
      if (everything) this.connections.logger.info({ flags }, 'redis keyspace notifications are on: watched keys are picked up at once');
      else if (sets) {
        this.connections.logger.info(
          { flags, pollMs: this.connections.settings.pollMs },
          `redis keyspace notifications cover SET only (notify-keyspace-events "${flags}"): a DEL or an expiry is picked up by the poll every ${this.connections.settings.pollMs} ms (set notify-keyspace-events K$gx to pick up everything at once)`,
        );
      } else {
        this.connections.logger.info(
          { flags, pollMs: this.connections.settings.pollMs },
          `redis keyspace notifications are off (notify-keyspace-events "${flags}"); watched keys are polled every ${this.connections.settings.pollMs} ms (set notify-keyspace-events K$gx to pick them up at once)`,
        );
      }
    } catch {
      this.connections.logger.info({ pollMs: this.connections.settings.pollMs }, 'could not read notify-keyspace-events (Redis unreachable, or CONFIG disabled); watched keys are polled, and picked up at once by keyspace events if the server sends them');
    }
  }

  /** Stops every key watch (the connections are closed by their owner). */
  close(): void {
    for (const subscriber of this.keySubscribers) this.connections.release(subscriber);
    this.keySubscribers.clear();
  }
}

/** The lookup connection: identity lookups pass their own deadline per call; this one bounds what is left. */
export function lookupConnection(connections: RedisConnections): Client {
  return connections.connect('lookup', { commandTimeout: Math.max(connections.settings.commandTimeoutMs, 1_000) });
}

/**
 * A key reader on connections of its own, for a process that needs keys but not the routing
 * document (e.g. a worker process doing its own identity lookups). `close()` ends its connections.
 */
export function createRedisKeyReader(settings: RedisStoreSettings, options: { logger?: Logger } = {}): RedisKeyReader & { close(): void } {
  const connections = new RedisConnections(settings, options.logger ?? silentLogger());
  const reader = new RedisKeyReader(connections, connections.connect('control', { commandTimeout: settings.commandTimeoutMs }), lookupConnection(connections));
  const closeKeys = reader.close.bind(reader);
  return Object.assign(reader, {
    close() {
      closeKeys();
      connections.close();
    },
  });
}

function nullToUndefined(value: string | null): string | undefined {
  return value === null ? undefined : value;
}
