import { randomUUID } from 'node:crypto';
import { Cluster, Command, Redis, ReplyError, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisStoreSettings, RoutingDocument } from '../../config/schema.js';
import { ConfigError, GraygateError } from '../../errors.js';
import { silentLogger, type Logger } from '../../observe/log.js';
import type { ChangeMeta, FleetLoadEntry, FleetReports, KeyReader, LoadFigures, LoadReport, ReadOptions, Store, StoredVersion, StoreHealth, WriteRequest } from '../store.js';
import { parseRedisUrl, type RedisTarget } from './url.js';

/** Validates a raw routing document; throws ConfigError naming each failing field. */
export type RoutingValidator = (raw: unknown, source: string) => RoutingDocument;

export interface RedisStoreOptions {
  /** Schema and semantic checks (config/load.ts `parseRoutingDocument`). */
  readonly validate: RoutingValidator;
  readonly logger?: Logger;
}

type Client = Redis | Cluster;

/** The keys of one routing document. The `{namespace}` hash tag puts them all in one Cluster slot. */
export interface RedisStoreKeys {
  /** JSON `{version, meta, document}` of the current version. */
  readonly doc: string;
  /** The current version number alone: what the poll reads. */
  readonly version: string;
  /** Sorted set: score = version, member = the same JSON as `doc` for that version. */
  readonly history: string;
  /** Pub/sub channel: each write publishes its new version number. */
  readonly channel: string;
  /** The epoch (see StoredVersion.epoch): a random id set when the store is seeded. */
  readonly epoch: string;
  /** Hash: field = gateway instance id, value = its load report as JSON `{at, servedVersion, …}`. */
  readonly load: string;
}

/** The keys and channel used for `namespace`. */
export function redisStoreKeys(namespace: string): RedisStoreKeys {
  const tag = `{${namespace}}`;
  return { doc: `${tag}:doc`, version: `${tag}:version`, history: `${tag}:history`, channel: `${tag}:changes`, epoch: `${tag}:epoch`, load: `${tag}:load` };
}

/**
 * Compare-and-set in one script, so the check, the write, the history entry, the trim and the
 * notification are atomic (all keys share one hash tag, so this also runs in Cluster).
 * KEYS: version, doc, history, epoch. ARGV: expected version, new version, entry JSON, history
 * limit, channel, a fresh epoch id, and a fence: the server time (ms) after which the write must
 * not happen any more, 0 for none. The fresh epoch is taken when the store is seeded (nothing
 * stored: a new store, or one that lost its data) or holds none yet (written before epochs).
 * Returns {1, new version, epoch}, {0, current version} (a conflict) or {2, current version}
 * (past the fence: nothing written).
 *
 * The fence exists because a command cannot be taken back once sent: to a paused server (SIGSTOP,
 * a long fork, a network stall) it waits in a socket buffer and runs whenever the server resumes,
 * long after the writer was told it failed. Past the fence it refuses, so a write reported as
 * failed is never applied later.
 */
const CAS_SCRIPT = `
local fence = tonumber(ARGV[7])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current == nil then return redis.error_reply('GG_STORE_CORRUPT version key holds a non-number') end
if fence > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > fence then return {2, current} end
end
if current ~= tonumber(ARGV[1]) then return {0, current} end
local epoch = redis.call('GET', KEYS[4])
if current == 0 or not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[4], epoch)
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PUBLISH', ARGV[5], ARGV[2])
return {1, tonumber(ARGV[2]), epoch}
`;

/**
 * One gateway's load report, stamped with the server's clock (gateways' clocks may disagree; the
 * staleness bound must not). KEYS: load hash. ARGV: instance id, report JSON (an object, without
 * `at`), key lifetime in ms (the hash goes away when the whole fleet is gone). Returns the time.
 */
const REPORT_LOAD_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], '{"at":' .. string.format('%d', now) .. ',' .. string.sub(ARGV[2], 2))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return now
`;

/** The server's time in ms and every load report. KEYS: load hash. Reads only. */
const READ_LOAD_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('HGETALL', KEYS[1])}
`;

/**
 * How long before a write's deadline its fence closes: a write the server runs just before the
 * fence still has this long for its reply to arrive before the writer gives up on it.
 */
const FENCE_MARGIN_MS = 250;

/** How often a store never reached since start is warned about again. */
const NEVER_REACHED_EVERY_MS = 10_000;

/** How long the load hash outlives the last report written to it. */
const LOAD_KEY_TTL_MS = 60_000;

/** A report as stored, checked field by field (a malformed one is treated as stale). */
function parseLoadEntry(instanceId: string, text: string): FleetLoadEntry | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  const value = raw as { at?: unknown; servedVersion?: unknown; servedEpoch?: unknown; servedForMs?: unknown; inFlightRequests?: unknown; openConnections?: unknown; upstreams?: unknown } | null;
  const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  if (value === null || typeof value !== 'object' || !isCount(value.at) || !isCount(value.inFlightRequests) || !isCount(value.openConnections)) return undefined;
  if (value.servedVersion !== null && !isCount(value.servedVersion)) return undefined;
  if (typeof value.upstreams !== 'object' || value.upstreams === null) return undefined;
  const upstreams: Record<string, LoadFigures> = {};
  for (const [name, figures] of Object.entries(value.upstreams as Record<string, { inFlightRequests?: unknown; openConnections?: unknown } | null>)) {
    if (figures === null || !isCount(figures.inFlightRequests) || !isCount(figures.openConnections)) return undefined;
    upstreams[name] = { inFlightRequests: figures.inFlightRequests, openConnections: figures.openConnections };
  }
  return {
    instanceId,
    at: value.at,
    report: {
      servedVersion: value.servedVersion,
      // Absent in reports of gateways from before epochs were reported: unknown.
      servedEpoch: typeof value.servedEpoch === 'string' ? value.servedEpoch : null,
      servedForMs: isCount(value.servedForMs) ? value.servedForMs : 0,
      inFlightRequests: value.inFlightRequests,
      openConnections: value.openConnections,
      upstreams,
    },
  };
}

/** Creates a Redis store (connections open at once, in the background); throws ConfigError on a bad URL. */
export function createRedisStore(settings: RedisStoreSettings, options: RedisStoreOptions): RedisStore {
  return new RedisStore(settings, options);
}

function unavailable(what: string, target: string, error: unknown): GraygateError {
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

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

/**
 * The routing document in Redis (standalone, Sentinel or Cluster), for fleets. Three connections:
 * `control` for document reads and writes (no offline queue: a command either goes out now or
 * fails at once; each has a deadline), `lookup` for identity lookups (the same, with a per-call
 * deadline), and a subscriber for change notifications (pinged; resubscribes and reports a
 * change after every reconnect), plus a poll of the version key as the backstop.
 */
export class RedisStore implements Store, KeyReader, FleetReports {
  readonly kind = 'redis';
  readonly keyReader: KeyReader = this;
  readonly fleet: FleetReports = this;
  readonly keys: RedisStoreKeys;
  readonly target: RedisTarget;
  private readonly control: Client;
  private readonly lookup: Client;
  private readonly validate: RoutingValidator;
  private readonly logger: Logger;
  private readonly listeners = new Set<() => void>();
  private subscriber: Client | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private pingInFlight = false;
  private pingGeneration = 0;
  /** The Cluster subscription connection last seen, to notice when ioredis replaces it. */
  private clusterConnection: Redis | undefined;
  /** Version the last poll saw; `undefined` after a failed poll, so the next success reports a change. */
  private polledVersion: number | undefined;
  private isReachable = true;
  /** Whether the control connection has ever been ready (a store never reached is not "up"). */
  private everReady = false;
  private readonly startedAt: number;
  private warnedNeverReached = false;
  /** The server's clock minus ours, in ms, measured at each connect (for write fences); undefined until then. */
  private clockOffsetMs: number | undefined;
  private isClosed = false;
  private isPolling = false;
  /** Repeats the warning while the store has never been reached (a mistyped address must not go unnoticed). */
  private neverReachedTimer: NodeJS.Timeout | undefined;
  /** Subscribers of watchKeys, closed with the store. */
  private readonly keySubscribers = new Set<Client>();
  private keyspaceDescribed = false;
  private loadConnection: Client | undefined;

  constructor(
    private readonly settings: RedisStoreSettings,
    options: RedisStoreOptions,
  ) {
    this.target = parseRedisUrl(settings.url);
    this.keys = redisStoreKeys(settings.namespace);
    this.validate = options.validate;
    this.logger = options.logger ?? silentLogger();
    this.control = this.connect('control', { commandTimeout: settings.commandTimeoutMs });
    // Identity lookups pass their own deadline per call (readKey); this one bounds what is left.
    this.lookup = this.connect('lookup', { commandTimeout: Math.max(settings.commandTimeoutMs, 1_000) });
    // A reconnect of the control connection may follow an outage in which changes were missed.
    this.startedAt = Date.now();
    this.scheduleNeverReachedWarning(Math.max(settings.commandTimeoutMs, 1_000));
    this.control.on('ready', () => {
      if (!this.everReady && this.warnedNeverReached) {
        this.logger.warn({ event: 'store-reached', store: this.target.display }, `redis store ${this.target.display} reached`);
      }
      this.everReady = true;
      clearTimeout(this.neverReachedTimer);
      void this.measureClock();
      this.notify();
    });
  }

  /**
   * Warns (as an error, with the address) after `delayMs` and then every NEVER_REACHED_EVERY_MS
   * for as long as the store has never answered since start: the gateway routes meanwhile on
   * what it had (its last good copy, the config file, or stable only), and /readyz says not ready.
   */
  private scheduleNeverReachedWarning(delayMs: number): void {
    this.neverReachedTimer = setTimeout(() => {
      if (this.everReady || this.isClosed) return;
      const seconds = Math.round((Date.now() - this.startedAt) / 1000);
      this.logger.error(
        { event: 'store-never-reached', store: this.target.display, status: this.control.status, seconds },
        `redis store ${this.target.display} has not been reached in the ${seconds} s since start (is the address right? is it up?); ` +
          'routing stays on what this gateway had at start (its last good copy, the config file, or stable only) and /readyz says not ready until it answers',
      );
      this.warnedNeverReached = true;
      this.scheduleNeverReachedWarning(NEVER_REACHED_EVERY_MS);
    }, delayMs);
    this.neverReachedTimer.unref();
  }

  /** How long one admin operation (a read and a write) may take against this store: `commandTimeoutMs`. */
  get deadlineMs(): number {
    return this.settings.commandTimeoutMs;
  }

  /** Up: connected, and the last poll got an answer. `everUp`: connected at least once since start. */
  health(): StoreHealth {
    return { up: this.everReady && this.isReachable && this.control.status === 'ready', everUp: this.everReady };
  }

  /** The server's clock against ours (TIME, halfway through the round trip), for write fences. */
  private async measureClock(): Promise<void> {
    try {
      const before = Date.now();
      const [seconds, micros] = (await this.control.call('TIME')) as [string, string];
      const after = Date.now();
      this.clockOffsetMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - (before + after) / 2;
    } catch {
      // Unknown: writes go without a fence until the next connect measures it.
    }
  }

  /** A client for one role. Error listeners are attached at creation (an unhandled 'error' ends the process). */
  private connect(role: string, overrides: Partial<RedisOptions>, subscriber = false): Client {
    const base: RedisOptions = {
      connectionName: `graygate-${role}`,
      // Fail fast instead of queueing while disconnected (LESSONS: commands queued forever).
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
      if (this.isClosed || (subscriber && this.subscriber !== client && !this.keySubscribers.has(client))) return;
      this.logger.warn({ role, store: target.display }, 'redis connection ended; reconnecting');
      const timer = setTimeout(() => {
        if (!this.isClosed && client.status === 'end') client.connect().catch(() => {});
      }, 200);
      timer.unref();
    });
    return client;
  }

  /** Resolves once `client` is ready; GG_STORE_UNAVAILABLE when it is not by `deadline` (default: commandTimeoutMs from now). */
  private whenReady(client: Client, what: string, deadline = Date.now() + this.settings.commandTimeoutMs): Promise<void> {
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
  private async run<T>(what: string, operation: (client: Client) => Promise<T>, deadline = Date.now() + this.settings.commandTimeoutMs): Promise<T> {
    await this.whenReady(this.control, what, deadline);
    try {
      return await beforeDeadline(operation(this.control), deadline, this.settings.commandTimeoutMs);
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
  private async read<T>(what: string, operation: (client: Client) => Promise<T>, deadline = Date.now() + this.settings.commandTimeoutMs): Promise<T> {
    await this.whenReady(this.control, what, deadline);
    try {
      return await beforeDeadline(operation(this.control), deadline, this.settings.commandTimeoutMs);
    } catch (error) {
      // One deadline for the whole read: a retry only in the time left, never a second full timeout.
      if (this.isClosed || error instanceof ReplyError || error instanceof DeadlineError || Date.now() >= deadline) throw unavailable(what, this.target.display, error);
      return this.run(what, operation, deadline);
    }
  }

  /** Parses one stored entry (`{version, meta, document}` JSON) and validates its document. */
  private parseEntry(text: string, where: string, epoch?: string): StoredVersion {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (error) {
      throw new ConfigError([`${where}: not JSON (${(error as Error).message}); the last good version stays in force`], { cause: error });
    }
    const entry = raw as { version?: unknown; meta?: Partial<ChangeMeta>; document?: unknown } | null;
    const meta = entry?.meta;
    if (
      entry === null ||
      typeof entry !== 'object' ||
      !Number.isSafeInteger(entry.version) ||
      (entry.version as number) < 1 ||
      typeof meta !== 'object' ||
      meta === null ||
      typeof meta.actor !== 'string' ||
      typeof meta.time !== 'string' ||
      typeof meta.reason !== 'string'
    ) {
      throw new GraygateError('GG_STORE_CORRUPT', `${where}: expected {"version", "meta": {actor, time, reason}, "document"}; rewrite it through graygate`);
    }
    const document = this.validate(entry.document, where);
    return deepFreeze({
      version: entry.version as number,
      document,
      meta: { actor: meta.actor, time: meta.time, reason: meta.reason },
      ...(epoch ? { epoch } : {}),
    });
  }

  /** The current version. ConfigError when it does not validate; GG_STORE_EMPTY when none is stored; GG_STORE_UNAVAILABLE when unreachable. */
  async current(options: ReadOptions = {}): Promise<StoredVersion> {
    // One MGET (the keys share a slot): the document and the epoch it belongs to, atomically.
    const [text, epoch] = await this.read('reading the routing document', (client) => client.mget(this.keys.doc, this.keys.epoch), options.deadline);
    if (text === null || text === '' || text === undefined) {
      throw new GraygateError(
        'GG_STORE_EMPTY',
        `redis store (${this.target.display}) holds no routing document under ${this.keys.doc}; ` +
          'seed it by writing version 1 (e.g. start graygate once with --config <file> to import that file, or PUT the document through the admin API with expectedVersion 0)',
      );
    }
    return this.parseEntry(text, `redis ${this.keys.doc}`, epoch ?? undefined);
  }

  /** Compare-and-set write as version expectedVersion + 1, with history and a notification; GG_VERSION_CONFLICT when stale. */
  async write(document: RoutingDocument, request: WriteRequest): Promise<StoredVersion> {
    if (!Number.isSafeInteger(request.expectedVersion) || request.expectedVersion < 0) {
      throw new ConfigError([`expectedVersion: expected a non-negative integer, got ${JSON.stringify(request.expectedVersion)}`]);
    }
    // Validated again so what is stored is exactly what every reader will accept.
    const validated = this.validate(document, `write by ${request.actor}`);
    const version = request.expectedVersion + 1;
    const stored: StoredVersion = {
      version,
      meta: { actor: request.actor, time: new Date().toISOString(), reason: request.reason },
      document: validated,
    };
    const entry = JSON.stringify(stored);
    const keys = this.keys;
    const deadline = request.deadline ?? Date.now() + this.settings.commandTimeoutMs;
    if (this.target.topology === 'sentinel') await this.confirmSentinelMaster();
    // The fence, in the server's clock: unknown offset (never connected yet) means no fence, but
    // then the connection is not ready either and nothing is sent.
    const fence = this.clockOffsetMs === undefined ? 0 : Math.floor(deadline - FENCE_MARGIN_MS + this.clockOffsetMs);
    let sent = false;
    const reply = await this.run(
      'writing the routing document',
      (client) => {
        sent = true;
        return client.eval(CAS_SCRIPT, 4, keys.version, keys.doc, keys.history, keys.epoch, String(request.expectedVersion), String(version), entry, String(this.settings.historyLimit), keys.channel, randomUUID(), String(fence));
      },
      deadline,
    ).catch((error: GraygateError) => {
      if ((error.cause as Error | undefined)?.message?.includes('GG_STORE_CORRUPT')) {
        throw new GraygateError('GG_STORE_CORRUPT', `redis ${keys.version} holds something other than a version number; fix or delete it`, { cause: error });
      }
      if (!sent || fence === 0 || error.cause instanceof ReplyError) throw error;
      // Sent, no answer: the server may still hold the command, but it cannot apply past the fence.
      const fenceTime = new Date(fence - (this.clockOffsetMs ?? 0)).toISOString();
      throw new GraygateError(
        'GG_STORE_UNAVAILABLE',
        `${error.message}. The write of version ${version} was not confirmed; it cannot be applied after ${fenceTime} (the store refuses it past its deadline), ` +
          `so it was applied only if the store ran it before then: check whether version ${version} is "${request.reason}" by ${request.actor} (graygate history) before retrying`,
        { cause: error },
      );
    });
    const [ok, current, epoch] = reply as [number, number, string | undefined];
    if (ok === 2) {
      throw new GraygateError(
        'GG_STORE_UNAVAILABLE',
        `redis store (${this.target.display}): the store reached the write of version ${version} only after its deadline (it did not answer in time); nothing was written. Retry`,
      );
    }
    if (ok !== 1) {
      throw new GraygateError(
        'GG_VERSION_CONFLICT',
        `the write named version ${request.expectedVersion}, but the current version is ${current}; read it again and retry`,
      );
    }
    return deepFreeze({ ...stored, ...(epoch ? { epoch } : {}) });
  }

  /**
   * Sentinel failover window: a sentinel names the promoted replica before the old master is
   * demoted and before ioredis hears +switch-master, and a write to the old master in that window
   * is silently lost when it resyncs. So before each write, ask a sentinel who the master is; if
   * it is not the node we are connected to, reconnect (ioredis asks the sentinels again) first.
   */
  private async confirmSentinelMaster(): Promise<void> {
    if (this.target.topology !== 'sentinel') return;
    const master = await this.askSentinelForMaster();
    const connected = (this.control as Redis).stream as { remoteAddress?: string; remotePort?: number } | undefined;
    if (master === undefined) return; // no sentinel answered: ioredis' own view stands
    if (connected?.remoteAddress === master.host && connected.remotePort === master.port) return;
    this.logger.warn({ master: `${master.host}:${master.port}`, connected: `${connected?.remoteAddress}:${connected?.remotePort}` }, 'sentinel names another master; reconnecting before the write');
    // Only a ready connection is dropped: one that is already reconnecting is finding the master.
    if (this.control.status === 'ready') this.control.disconnect(true);
    await this.whenReady(this.control, 'reconnecting to the new master');
    const now = (this.control as Redis).stream as { remoteAddress?: string; remotePort?: number } | undefined;
    if (now?.remoteAddress !== master.host || now?.remotePort !== master.port) {
      throw new GraygateError('GG_STORE_UNAVAILABLE', `redis store (${this.target.display}): a failover is under way (sentinel names ${master.host}:${master.port}); retry the write`);
    }
  }

  /** The master's address as the first sentinel that answers reports it; undefined when none does. */
  private async askSentinelForMaster(): Promise<{ host: string; port: number } | undefined> {
    if (this.target.topology !== 'sentinel') return undefined;
    for (const address of this.target.sentinels) {
      const client = new Redis({
        host: address.host,
        port: address.port,
        password: this.target.sentinelPassword,
        lazyConnect: true,
        enableOfflineQueue: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
        connectTimeout: this.settings.commandTimeoutMs,
        commandTimeout: this.settings.commandTimeoutMs,
      });
      client.on('error', () => {}); // a sentinel that does not answer: try the next
      try {
        const reply = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.target.masterName)) as [string, string] | null;
        if (reply) return { host: reply[0], port: Number(reply[1]) };
      } catch {
        // next sentinel
      } finally {
        client.disconnect();
      }
    }
    return undefined;
  }

  /** Versions kept in history, newest first; each validated (ConfigError / GG_STORE_CORRUPT on bad entries). */
  async history(options: { limit?: number } = {}): Promise<StoredVersion[]> {
    const limit = options.limit ?? this.settings.historyLimit;
    if (limit <= 0) return [];
    const members = await this.read('reading history', (client) => client.zrevrange(this.keys.history, 0, limit - 1));
    return members.map((member) => this.parseEntry(member, `redis ${this.keys.history}`));
  }

  /** One version from history; GG_VERSION_UNKNOWN when it is not kept. */
  async version(version: number): Promise<StoredVersion> {
    const members = Number.isSafeInteger(version)
      ? await this.read('reading history', (client) => client.zrangebyscore(this.keys.history, version, version))
      : [];
    const member = members[0];
    if (member === undefined) {
      throw new GraygateError('GG_VERSION_UNKNOWN', `version ${version} is not in the history kept in redis (${this.keys.history})`);
    }
    return this.parseEntry(member, `redis ${this.keys.history} version ${version}`);
  }

  /**
   * Reads one plain key (token → user id) with a hard deadline: no offline queue, so while
   * Redis is unreachable this rejects at once; otherwise it rejects after `deadlineMs`.
   */
  readKey(key: string, deadlineMs: number): Promise<string | undefined> {
    const lookup = this.lookup;
    if (lookup.status !== 'ready') {
      return Promise.reject(new GraygateError('GG_STORE_UNAVAILABLE', `redis store (${this.target.display}) is not connected (status ${lookup.status})`));
    }
    // A Command with its own timer: the deadline is per call, not per connection.
    const command = new Command('get', [key], { replyEncoding: 'utf8' });
    command.setTimeout(deadlineMs);
    lookup.sendCommand(command);
    return (command.promise as Promise<string | null>).then(nullToUndefined, (error: Error) => {
      throw new GraygateError('GG_STORE_UNAVAILABLE', `redis store (${this.target.display}): lookup got no answer within ${deadlineMs} ms (${error.message})`, { cause: error });
    });
  }

  /** Values of plain keys (e.g. `Grayscale_Range`) for compiling a snapshot; GG_STORE_UNAVAILABLE when unreachable. */
  async readKeys(keys: readonly string[]): Promise<ReadonlyMap<string, string | undefined>> {
    // One GET per key rather than MGET: in a Cluster the keys may live in different slots.
    const values = await this.read('reading keys', (client) => Promise.all(keys.map((key) => client.get(key))));
    return new Map(keys.map((key, i) => [key, nullToUndefined(values[i] ?? null)]));
  }

  /**
   * Calls `onChange` when one of `keys` may have changed: at once by keyspace notification when
   * the server sends them (`notify-keyspace-events` with K and $gx or A; not in Cluster, where they
   * stay on the node that holds the key), and by a poll of the values every pollMs otherwise.
   * Also after a reconnect or an outage, since a change may have been missed.
   */
  watchKeys(keys: readonly string[], onChange: () => void): () => void {
    if (this.isClosed) throw new GraygateError('GG_STORE_UNAVAILABLE', 'the redis store is closed');
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
        this.logger.error({ err: error }, 'a store key listener threw');
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
            await this.whenReady(this.control, 'reading watched keys');
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
    const timer = setInterval(() => void check(), this.settings.pollMs);
    timer.unref();

    let subscriber: Client | undefined;
    const db = this.target.topology === 'sentinel' ? this.target.db : this.target.topology === 'standalone' ? Number(new URL(this.target.url).pathname.slice(1) || 0) : 0;
    if (this.target.topology !== 'cluster' && watched.length > 0) {
      const channels = watched.map((key) => `__keyspace@${db}__:${key}`);
      const sub = this.connect('keyspace', { commandTimeout: this.settings.pingMs }, true);
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
        subscriber.disconnect();
      }
    };
  }

  /** Says once whether key changes arrive at once (keyspace events) or by polling. */
  private async describeKeyspaceEvents(): Promise<void> {
    if (this.keyspaceDescribed) return;
    this.keyspaceDescribed = true;
    try {
      await this.whenReady(this.control, 'CONFIG GET');
      const [, flags = ''] = (await this.control.call('CONFIG', 'GET', 'notify-keyspace-events')) as [string, string];
      // SET is a `$` event, DEL a `g` event and expiry an `x` event; `A` stands for all of them.
      const all = flags.includes('A');
      const sets = flags.includes('K') && (all || flags.includes('$'));
      const everything = sets && (all || (flags.includes('g') && flags.includes('x')));
      if (everything) this.logger.info({ flags }, 'redis keyspace notifications are on: watched keys are picked up at once');
      else if (sets) {
        this.logger.info(
          { flags, pollMs: this.settings.pollMs },
          `redis keyspace notifications cover SET only (notify-keyspace-events "${flags}"): a DEL or an expiry is picked up by the poll every ${this.settings.pollMs} ms (set notify-keyspace-events K$gx to pick up everything at once)`,
        );
      } else {
        this.logger.info(
          { flags, pollMs: this.settings.pollMs },
          `redis keyspace notifications are off (notify-keyspace-events "${flags}"); watched keys are polled every ${this.settings.pollMs} ms (set notify-keyspace-events K$gx to pick them up at once)`,
        );
      }
    } catch {
      this.logger.info({ pollMs: this.settings.pollMs }, 'could not read notify-keyspace-events (Redis unreachable, or CONFIG disabled); watched keys are polled, and picked up at once by keyspace events if the server sends them');
    }
  }

  /** Calls `onChange` on a notification, when the poll sees a new version, and after every (re)connect. */
  watch(onChange: () => void): () => void {
    if (this.isClosed) throw new GraygateError('GG_STORE_UNAVAILABLE', 'the redis store is closed');
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

  private notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (error) {
        this.logger.error({ err: error }, 'a store change listener threw');
      }
    }
  }

  private startWatching(): void {
    const subscriber = this.connect('subscriber', { commandTimeout: this.settings.pingMs }, true);
    this.subscriber = subscriber;
    subscriber.on('ready', () => {
      // Subscribe first, then report: a change written between the two is then either in the
      // reread the listener does, or in a message that arrives after it.
      subscriber.subscribe(this.keys.channel).then(
        () => {
          this.logger.debug({ store: this.target.display }, 'redis subscriber (re)subscribed');
          this.notify();
        },
        (error: Error) => {
          this.logger.warn({ err: error.message, store: this.target.display }, 'redis subscribe failed; reconnecting the subscriber');
          if (this.subscriber === subscriber) subscriber.disconnect(true);
        },
      );
    });
    subscriber.on('message', (channel: string) => {
      if (channel === this.keys.channel) this.notify();
    });
    this.pingTimer = setInterval(() => this.pingSubscriber(subscriber), this.settings.pingMs);
    this.pingTimer.unref();
    this.pollTimer = setInterval(() => void this.poll(), this.settings.pollMs);
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

  /** LESSONS "Half-open subscriber sockets": no PONG within pingMs → destroy the socket; it is reopened. */
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
      this.logger.warn({ why, store: this.target.display }, 'redis subscriber did not answer PING in time; reconnecting it');
      // Destroy rather than end: a half-open peer would never finish a graceful close.
      (connection as unknown as { stream?: { destroy(): void } }).stream?.destroy();
    };
    const timer = setTimeout(() => fail(`no reply within ${this.settings.pingMs} ms`), this.settings.pingMs);
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
    if (version !== this.polledVersion) {
      if (this.polledVersion !== undefined && version < this.polledVersion) {
        this.logger.warn({ from: this.polledVersion, to: version, store: this.target.display }, 'the stored version went backwards (did Redis lose its data?)');
      }
      this.polledVersion = version;
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
      this.logger.info({ store: this.target.display }, 'redis store reachable again; resyncing');
      this.polledVersion = undefined;
      this.notify();
    } else {
      this.logger.warn({ store: this.target.display, err: (error as Error)?.message }, 'redis store unreachable; routing stays on the last good version');
    }
  }

  private stopWatching(): void {
    clearInterval(this.pollTimer);
    clearInterval(this.pingTimer);
    this.pollTimer = undefined;
    this.pingTimer = undefined;
    this.pingInFlight = false;
    this.pingGeneration++;
    this.clusterConnection = undefined;
    this.polledVersion = undefined;
    const subscriber = this.subscriber;
    this.subscriber = undefined;
    subscriber?.disconnect();
  }

  /**
   * The connection load reports are written on, opened on first use. Its own, without
   * reconnect-on-READONLY: on a replica every report is refused, and reconnecting the control
   * connection each time would fail the admin reads and writes in between.
   */
  private loadClient(): Client {
    this.loadConnection ??= this.connect('load', { commandTimeout: this.settings.commandTimeoutMs, reconnectOnError: () => false });
    return this.loadConnection;
  }

  /** Records this gateway's load in the load hash, stamped with the server's clock. */
  async reportLoad(instanceId: string, report: LoadReport): Promise<void> {
    const json = JSON.stringify(report);
    const client = this.loadClient();
    await this.whenReady(client, 'reporting load');
    try {
      await client.eval(REPORT_LOAD_SCRIPT, 1, this.keys.load, instanceId, json, String(LOAD_KEY_TTL_MS));
    } catch (error) {
      throw unavailable('reporting load', this.target.display, error);
    }
  }

  /** The load reports written within `staleAfterMs` by the server's clock; older or malformed ones are deleted. */
  async readFleetLoad(staleAfterMs: number): Promise<FleetLoadEntry[]> {
    const [now, flat] = (await this.run('reading fleet load', (client) => client.eval(READ_LOAD_SCRIPT, 1, this.keys.load))) as [number, string[]];
    const fresh: FleetLoadEntry[] = [];
    const stale: string[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const entry = parseLoadEntry(flat[i]!, flat[i + 1]!);
      if (entry === undefined || now - entry.at > staleAfterMs) stale.push(flat[i]!);
      else fresh.push(entry);
    }
    if (stale.length > 0) {
      // Best effort: a gateway that stopped without deleting its report (killed) is dropped by
      // the staleness bound above whether or not this delete goes through.
      this.control.hdel(this.keys.load, ...stale).catch((error: Error) => this.logger.debug({ err: error.message }, 'could not delete stale load reports'));
    }
    return fresh;
  }

  /** Deletes this gateway's load report. */
  async removeLoad(instanceId: string): Promise<void> {
    const client = this.loadClient();
    await this.whenReady(client, 'removing load report');
    try {
      await client.hdel(this.keys.load, instanceId);
    } catch (error) {
      throw unavailable('removing load report', this.target.display, error);
    }
  }

  /** Stops watching and closes every connection at once (never waits on an unreachable server). */
  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    clearTimeout(this.neverReachedTimer);
    this.listeners.clear();
    this.stopWatching();
    for (const subscriber of this.keySubscribers) subscriber.disconnect();
    this.keySubscribers.clear();
    this.control.disconnect();
    this.lookup.disconnect();
    this.loadConnection?.disconnect();
  }
}

/** A reply that did not come by the deadline (the connection is still there; the server may be paused). */
class DeadlineError extends Error {}

/** `promise`, or a DeadlineError at `deadline` (epoch ms) when it has not settled by then. */
function beforeDeadline<T>(promise: Promise<T>, deadline: number, timeoutMs: number): Promise<T> {
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

function nullToUndefined(value: string | null): string | undefined {
  return value === null ? undefined : value;
}
