import { Cluster, Redis, ReplyError, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisStoreSettings } from '../../config/schema.js';
import { GraygateError } from '../../errors.js';
import type { Logger } from '../../observe/log.js';
import { parseRedisUrl, type RedisTarget } from './url.js';

/** One connection to Redis: standalone or Sentinel (a Redis), or a Cluster. */
export type Client = Redis | Cluster;

/**
 * The connections of one Redis store, by role (control, lookup, subscriber, keyspace, load), and
 * what every role shares: how a connection is made for the topology (standalone, Sentinel,
 * Cluster), that it never queues commands while disconnected, that it reconnects until closed,
 * and the deadlines on waiting for it and on replies. Failures become GG_STORE_UNAVAILABLE (or
 * GG_STORE_READONLY).
 */
export class RedisConnections {
  readonly target: RedisTarget;
  /** Connections that should reconnect when they end; a released or closed one does not. */
  private readonly open = new Set<Client>();
  private isClosed = false;

  constructor(
    readonly settings: RedisStoreSettings,
    readonly logger: Logger,
  ) {
    this.target = parseRedisUrl(settings.url);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** A client for one role. Error listeners are attached at creation (an unhandled 'error' ends the process). */
  connect(role: string, overrides: Partial<RedisOptions>, subscriber = false): Client {
    const base: RedisOptions = {
      connectionName: `graygate-${role}`,
      // Fail fast instead of queueing while disconnected: a queued command would wait for a server
      // that may never come back, and run long after its caller gave up.
      enableOfflineQueue: subscriber,
      maxRetriesPerRequest: 1,
      autoResendUnfulfilledCommands: false,
      autoResubscribe: false, // resubscribed by hand on 'ready', then a change is reported
      connectTimeout: Math.max(this.settings.commandTimeoutMs, 1_000),
      disconnectTimeout: this.settings.pingMs,
      retryStrategy: (times) => Math.min(times * 50, 1_000),
      // After a failover the old master answers READONLY: reconnect to find the new one.
      reconnectOnError: (error) => (error.message.includes('READONLY') ? 1 : false),
      ...overrides,
    };
    const target = this.target;
    let client: Client;
    if (target.topology === 'standalone') {
      client = new Redis(target.url, base);
    } else if (target.topology === 'sentinel') {
      client = new Redis({
        ...base,
        sentinels: target.sentinels.map((s) => ({ host: s.host, port: s.port })),
        name: target.masterName,
        username: target.username,
        password: target.password,
        sentinelPassword: target.sentinelPassword,
        db: target.db,
        sentinelRetryStrategy: (times) => Math.min(times * 50, 1_000),
        // Sentinel failovers: ask the sentinels again when the node we reach is not the master.
        failoverDetector: true,
      });
    } else {
      const clusterOptions: ClusterOptions = {
        enableOfflineQueue: subscriber,
        clusterRetryStrategy: (times) => Math.min(100 + times * 50, 1_000),
        slotsRefreshTimeout: Math.max(this.settings.commandTimeoutMs, 1_000),
        redisOptions: { ...base, username: target.username, password: target.password },
      };
      client = new Cluster(
        target.nodes.map((n) => ({ host: n.host, port: n.port })),
        clusterOptions,
      );
    }
    // During an outage every pending read waits on 'ready' (bounded by its deadline); more than
    // Node's default of 10 at once is expected, not a leak.
    client.setMaxListeners(1_000);
    client.on('error', (error: Error) => {
      this.logger.debug({ role, err: error.message, store: target.display }, 'redis connection error');
    });
    // ioredis gives up for good in a few races (a disconnect while a Sentinel reconnect is under
    // way ends the client); a store that is not closed must never stop reconnecting.
    client.on('end', () => {
      if (this.isClosed || !this.open.has(client)) return;
      this.logger.warn({ role, store: target.display }, 'redis connection ended; reconnecting');
      const timer = setTimeout(() => {
        if (!this.isClosed && client.status === 'end') client.connect().catch(() => {});
      }, 200);
      timer.unref();
    });
    this.open.add(client);
    return client;
  }

  /** Disconnects `client` for good (a subscriber no longer needed). */
  release(client: Client): void {
    this.open.delete(client);
    client.disconnect();
  }

  /** Resolves once `client` is ready; GG_STORE_UNAVAILABLE when it is not by `deadline` (default: commandTimeoutMs from now). */
  whenReady(client: Client, what: string, deadline = Date.now() + this.settings.commandTimeoutMs): Promise<void> {
    if (client.status === 'ready') return Promise.resolve();
    if (this.isClosed) return Promise.reject(unavailable(what, this.target.display, new Error('the store is closed')));
    const waitMs = deadline - Date.now();
    if (waitMs <= 0) return Promise.reject(unavailable(what, this.target.display, new Error(`not connected (status ${client.status}) and out of time`)));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        client.off('ready', onReady);
        reject(unavailable(what, this.target.display, new Error(`not connected within ${this.settings.commandTimeoutMs} ms (status ${client.status})`)));
      }, waitMs);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      client.once('ready', onReady);
    });
  }

  /**
   * Runs one control-path operation by `deadline`: waits for the connection, sends, and gives up
   * on the reply at the deadline (the connection's own command timeout may be later when part of
   * the time went to an earlier step). Failures map to GG_STORE_UNAVAILABLE.
   */
  async run<T>(client: Client, what: string, operation: (client: Client) => Promise<T>, deadline = Date.now() + this.settings.commandTimeoutMs): Promise<T> {
    await this.whenReady(client, what, deadline);
    try {
      return await beforeDeadline(operation(client), deadline, this.settings.commandTimeoutMs);
    } catch (error) {
      throw unavailable(what, this.target.display, error);
    }
  }

  /**
   * `run` for reads, which are safe to send twice: a read whose connection went away under it
   * (a READONLY reply, a failover, makes the connection reconnect to find the master) is sent
   * once more on the new connection instead of failing. A reply error (the server answered) is
   * not retried. Writes never come through here.
   */
  async read<T>(client: Client, what: string, operation: (client: Client) => Promise<T>, deadline = Date.now() + this.settings.commandTimeoutMs): Promise<T> {
    for (;;) {
      await this.whenReady(client, what, deadline);
      try {
        return await beforeDeadline(operation(client), deadline, this.settings.commandTimeoutMs);
      } catch (error) {
        // One deadline for the whole read: retries only in the time left, never a second full timeout.
        if (this.isClosed || error instanceof ReplyError || error instanceof DeadlineError || Date.now() >= deadline) throw unavailable(what, this.target.display, error);
        // Right after a READONLY reply the connection may still say "ready" while ioredis tears it
        // down: a read sent again at once fails the same way, so give the reconnect a moment.
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(READ_RETRY_PAUSE_MS, deadline - Date.now()))));
      }
    }
  }

  /** Closes every connection at once (never waits on an unreachable server). */
  close(): void {
    this.isClosed = true;
    for (const client of this.open) client.disconnect();
    this.open.clear();
  }
}

/** How long a read whose connection went away waits before it is sent again. */
const READ_RETRY_PAUSE_MS = 50;

export function unavailable(what: string, target: string, error: unknown): GraygateError {
  if (error instanceof GraygateError) return error;
  const message = (error as Error)?.message ?? String(error);
  if (message.startsWith('READONLY')) {
    // The node is a replica (a failover demoted it, or store.url names a replica): the write was
    // refused whole. ioredis reconnects (reconnectOnError), which finds a new master only where
    // the topology can (Sentinel, Cluster).
    return new GraygateError(
      'GG_STORE_READONLY',
      `redis store (${target}): ${what} was refused: the node is a read-only replica (${message}); nothing was written. Point store.url at the master (or use Sentinel) and retry`,
      { cause: error },
    );
  }
  return new GraygateError('GG_STORE_UNAVAILABLE', `redis store (${target}): ${what} failed: ${message}`, { cause: error });
}

/** A reply that did not come by the deadline (the connection is still there; the server may be paused). */
export class DeadlineError extends Error {}

/** `promise`, or a DeadlineError at `deadline` (epoch ms) when it has not settled by then. */
export function beforeDeadline<T>(promise: Promise<T>, deadline: number, timeoutMs: number): Promise<T> {
  const waitMs = deadline - Date.now();
  if (waitMs >= timeoutMs) return promise; // the connection's command timeout comes first
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new DeadlineError(`no reply within the ${timeoutMs} ms deadline`)), Math.max(0, waitMs));
    }),
  ]).finally(() => clearTimeout(timer));
}

