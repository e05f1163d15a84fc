import { Redis } from 'ioredis';
import { GraygateError } from '../../errors.js';
import type { Client, RedisConnections } from './connections.js';
import type { RedisStoreKeys } from './names.js';

/**
 * Change watching for the routing document: a subscriber on the changes channel (resubscribed
 * and reported after every reconnect, PINGed so a half-open socket is replaced), plus a poll of
 * the version key every pollMs as the backstop, which also tells whether the store answers.
 */
export class ChangeWatch {
  private readonly listeners = new Set<() => void>();
  private subscriber: Client | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private pingInFlight = false;
  private pingGeneration = 0;
  /** The Cluster subscription connection last seen, to notice when ioredis replaces it. */
  private clusterConnection: Redis | undefined;
  /**
   * The version this gateway last saw in the store, by a poll or by reading the document (see
   * `seen`); `undefined` after a failed poll, so the next success reports a change. A poll
   * compares against it: comparing against the last poll alone misses a store that goes back
   * to the version the last poll saw when the version in between arrived by notification (a
   * write lost in a failover right after it was made), and then nothing would ever reread it.
   */
  private lastSeenVersion: number | undefined;
  private isReachable = true;
  private isPolling = false;

  constructor(
    private readonly connections: RedisConnections,
    private readonly control: Client,
    private readonly keys: RedisStoreKeys,
  ) {}

  /** Calls `onChange` on a notification, when the poll sees a new version, and after every (re)connect. */
  watch(onChange: () => void): () => void {
    if (this.connections.closed) throw new GraygateError('GG_STORE_UNAVAILABLE', 'the redis store is closed');
    this.listeners.add(onChange);
    if (this.listeners.size === 1) this.startWatching();
    return () => {
      this.listeners.delete(onChange);
      if (this.listeners.size === 0) this.stopWatching();
    };
  }

  /** True while the last poll (or command) reached Redis. */
  get reachable(): boolean {
    return this.isReachable;
  }

  /** The document was read (or written) at `version`: a poll that finds another one reports it. */
  seen(version: number): void {
    this.lastSeenVersion = version;
  }

  notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (error) {
        this.connections.logger.error({ err: error }, 'a store change listener threw');
      }
    }
  }

  private startWatching(): void {
    const subscriber = this.connections.connect('subscriber', { commandTimeout: this.connections.settings.pingMs }, true);
    this.subscriber = subscriber;
    subscriber.on('ready', () => {
      // Subscribe first, then report: a change written between the two is then either in the
      // reread the listener does, or in a message that arrives after it.
      subscriber.subscribe(this.keys.channel).then(
        () => {
          this.connections.logger.debug({ store: this.connections.target.display }, 'redis subscriber (re)subscribed');
          this.notify();
        },
        (error: Error) => {
          this.connections.logger.warn({ err: error.message, store: this.connections.target.display }, 'redis subscribe failed; reconnecting the subscriber');
          if (this.subscriber === subscriber) subscriber.disconnect(true);
        },
      );
    });
    subscriber.on('message', (channel: string) => {
      if (channel === this.keys.channel) this.notify();
    });
    this.pingTimer = setInterval(() => this.pingSubscriber(subscriber), this.connections.settings.pingMs);
    this.pingTimer.unref();
    this.pollTimer = setInterval(() => void this.poll(), this.connections.settings.pollMs);
    this.pollTimer.unref();
  }

  /**
   * The connection that actually carries the subscription. In Cluster it is one ioredis picks
   * and replaces by itself (ClusterSubscriber, not public API: when it is not there, the poll is
   * the backstop alone); a PING through the Cluster object would test another socket.
   */
  private subscriptionConnection(subscriber: Client): Redis | undefined {
    if (subscriber instanceof Redis) return subscriber;
    const internal = (subscriber as unknown as { subscriber?: { getInstance?(): unknown } }).subscriber;
    const instance = internal?.getInstance?.();
    return instance instanceof Redis ? instance : undefined;
  }

  /**
   * Half-open sockets (a paused or partitioned server keeps the TCP connection but answers
   * nothing) never end by themselves: no PONG within pingMs → destroy the socket; it is reopened.
   */
  private pingSubscriber(subscriber: Client): void {
    const connection = this.subscriptionConnection(subscriber);
    if (!connection || connection.status !== 'ready') return;
    if (!(subscriber instanceof Redis) && connection !== this.clusterConnection) {
      // ioredis replaced the Cluster subscription connection (and resubscribed there by itself):
      // subscribe once more to know when it is in place, then report, as after any reconnect.
      const first = this.clusterConnection === undefined;
      this.clusterConnection = connection;
      if (!first) {
        connection.subscribe(this.keys.channel).then(
          () => this.notify(),
          () => {},
        );
      }
    }
    if (this.pingInFlight) return;
    this.pingInFlight = true;
    const generation = ++this.pingGeneration;
    const done = () => {
      if (generation !== this.pingGeneration) return false;
      this.pingInFlight = false;
      clearTimeout(timer);
      return true;
    };
    const fail = (why: string) => {
      if (!done() || this.subscriber !== subscriber) return;
      this.connections.logger.warn({ why, store: this.connections.target.display }, 'redis subscriber did not answer PING in time; reconnecting it');
      // Destroy rather than end: a half-open peer would never finish a graceful close.
      (connection as unknown as { stream?: { destroy(): void } }).stream?.destroy();
    };
    const timer = setTimeout(() => fail(`no reply within ${this.connections.settings.pingMs} ms`), this.connections.settings.pingMs);
    connection.ping().then(done, (error: Error) => fail(error.message));
  }

  private async poll(): Promise<void> {
    // A GET slower than the interval must not stack polls up.
    if (this.isPolling) return;
    this.isPolling = true;
    try {
      await this.pollOnce();
    } finally {
      this.isPolling = false;
    }
  }

  private async pollOnce(): Promise<void> {
    if (this.control.status !== 'ready') {
      this.markReachable(false, new Error(`connection status ${this.control.status}`));
      return;
    }
    let text: string | null;
    try {
      text = await this.control.get(this.keys.version);
    } catch (error) {
      this.markReachable(false, error);
      return;
    }
    this.markReachable(true);
    // A garbage version key counts as one value (-1), so it is reported once, not on every poll.
    const parsed = text === null ? 0 : Number(text);
    const version = Number.isSafeInteger(parsed) ? parsed : -1;
    if (version !== this.lastSeenVersion) {
      if (this.lastSeenVersion !== undefined && version < this.lastSeenVersion) {
        this.connections.logger.warn({ from: this.lastSeenVersion, to: version, store: this.connections.target.display }, 'the stored version went backwards (did Redis lose its data?)');
      }
      this.lastSeenVersion = version;
      // The first poll reports too: the subscriber's 'ready' already did, but a change that
      // publishes nothing (the store emptied by FLUSHALL) between that read and this poll would
      // otherwise become the baseline and never be read. A duplicate read changes nothing.
      this.notify();
    }
  }

  private markReachable(reachable: boolean, error?: unknown): void {
    if (reachable === this.isReachable) return;
    this.isReachable = reachable;
    if (reachable) {
      this.connections.logger.info({ store: this.connections.target.display }, 'redis store reachable again; resyncing');
      this.lastSeenVersion = undefined;
      this.notify();
    } else {
      this.connections.logger.warn({ store: this.connections.target.display, err: (error as Error)?.message }, 'redis store unreachable; routing stays on the last good version');
    }
  }

  /** Stops the subscriber, its pings and the poll. */
  stopWatching(): void {
    clearInterval(this.pollTimer);
    clearInterval(this.pingTimer);
    this.pollTimer = undefined;
    this.pingTimer = undefined;
    this.pingInFlight = false;
    this.pingGeneration++;
    this.clusterConnection = undefined;
    this.lastSeenVersion = undefined;
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    if (subscriber) this.connections.release(subscriber);
  }

  /** Stops watching for good (the store closes). */
  close(): void {
    this.listeners.clear();
    this.stopWatching();
  }
}
