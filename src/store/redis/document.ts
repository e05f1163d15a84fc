import { randomUUID } from 'node:crypto';
import { ReplyError } from 'ioredis';
import { deepFreeze } from '../../config/freeze.js';
import type { RoutingDocument } from '../../config/schema.js';
import { ConfigError, GraygateError } from '../../errors.js';
import type { ChangeMeta, ReadOptions, StoredVersion, WriteRequest } from '../store.js';
import type { Client, RedisConnections } from './connections.js';
import { leaseKey, leaseValue, type RedisStoreKeys } from './names.js';
import { confirmSentinelMaster } from './sentinel.js';

/** Validates a raw routing document; throws ConfigError naming each failing field. */
export type RoutingValidator = (raw: unknown, source: string) => RoutingDocument;

/**
 * Compare-and-set in one script, so the check, the write, the history entry, the trim and the
 * notification are atomic (all keys share one hash tag, so this also runs in Cluster).
 * KEYS: version, doc, history, epoch, a lease. ARGV: expected version, new version, entry JSON,
 * history limit, channel, a fresh epoch id, a fence: the server time (ms) after which the write
 * must not happen any more, 0 for none; and the value the lease key must hold ('' for no lease:
 * a driver's write is refused once another holds the lease, see lease.ts). The fresh epoch is taken when the store is seeded (nothing
 * stored: a new store, or one that lost its data) or holds none yet (written before epochs).
 * Returns {1, new version, epoch}, {0, current version} (a conflict), {2, current version}
 * (past the fence: nothing written) or {3, current version} (the lease is no longer held).
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
if ARGV[8] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[8] then return {3, current} end
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
 * How long before a write's deadline its fence closes: a write the server runs just before the
 * fence still has this long for its reply to arrive before the writer gives up on it.
 */
const FENCE_MARGIN_MS = 250;

/**
 * The routing document, its history and its epoch in Redis: reads, and compare-and-set writes
 * with a fence (see CAS_SCRIPT), on the control connection.
 */
export class RedisDocuments {
  /** The server's clock minus ours, in ms, measured at each connect (for write fences); undefined until then. */
  private clockOffsetMs: number | undefined;

  constructor(
    private readonly connections: RedisConnections,
    private readonly control: Client,
    private readonly keys: RedisStoreKeys,
    private readonly validate: RoutingValidator,
  ) {}

  /** The server's clock against ours (TIME, halfway through the round trip), for write fences. */
  async measureClock(): Promise<void> {
    try {
      const before = Date.now();
      const [seconds, micros] = (await this.control.call('TIME')) as [string, string];
      const after = Date.now();
      this.clockOffsetMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - (before + after) / 2;
    } catch {
      // Unknown: writes go without a fence until the next connect measures it.
    }
  }

  /** Parses one stored entry (`{version, meta, document}` JSON) and validates its document. */
  parseEntry(text: string, where: string, epoch?: string): StoredVersion {
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
    const [text, epoch] = await this.connections.read(this.control, 'reading the routing document', (client) => client.mget(this.keys.doc, this.keys.epoch), options.deadline);
    if (text === null || text === '' || text === undefined) {
      throw new GraygateError(
        'GG_STORE_EMPTY',
        `redis store (${this.connections.target.display}) holds no routing document under ${this.keys.doc}; ` +
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
    const deadline = request.deadline ?? Date.now() + this.connections.settings.commandTimeoutMs;
    if (this.connections.target.topology === 'sentinel') await confirmSentinelMaster(this.connections, this.control);
    // The fence, in the server's clock: unknown offset (never connected yet) means no fence, but
    // then the connection is not ready either and nothing is sent.
    // A short deadline gets a proportionally short margin, or the fence would close before the
    // script could possibly reach the server.
    const margin = Math.min(FENCE_MARGIN_MS, Math.floor(this.connections.settings.commandTimeoutMs / 5));
    const fence = this.clockOffsetMs === undefined ? 0 : Math.floor(deadline - margin + this.clockOffsetMs);
    let sent = false;
    const reply = await this.connections.run(
      this.control,
      'writing the routing document',
      (client) => {
        sent = true;
        const lease = request.lease;
        return client.eval(
          CAS_SCRIPT, 5, keys.version, keys.doc, keys.history, keys.epoch, leaseKey(keys, lease?.name ?? 'none'),
          String(request.expectedVersion), String(version), entry, String(this.connections.settings.historyLimit), keys.channel, randomUUID(), String(fence),
          lease ? leaseValue(lease.holder, lease.token) : '',
        );
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
        `redis store (${this.connections.target.display}): the store reached the write of version ${version} only after its deadline (it did not answer in time); nothing was written. Retry`,
      );
    }
    if (ok === 3) {
      throw new GraygateError('GG_LEASE_LOST', `the write of version ${version} was refused: ${request.actor} no longer holds the ${request.lease?.name} lease (token ${request.lease?.token}); nothing was written`);
    }
    if (ok !== 1) {
      throw new GraygateError(
        'GG_VERSION_CONFLICT',
        `the write named version ${request.expectedVersion}, but the current version is ${current}; read it again and retry`,
      );
    }
    return deepFreeze({ ...stored, ...(epoch ? { epoch } : {}) });
  }

  /** Versions kept in history, newest first; each validated (ConfigError / GG_STORE_CORRUPT on bad entries). */
  async history(options: { limit?: number } = {}): Promise<StoredVersion[]> {
    const limit = options.limit ?? this.connections.settings.historyLimit;
    if (limit <= 0) return [];
    const members = await this.connections.read(this.control, 'reading history', (client) => client.zrevrange(this.keys.history, 0, limit - 1));
    return members.map((member) => this.parseEntry(member, `redis ${this.keys.history}`));
  }

  /** One version from history; GG_VERSION_UNKNOWN when it is not kept. */
  async version(version: number): Promise<StoredVersion> {
    const members = Number.isSafeInteger(version)
      ? await this.connections.read(this.control, 'reading history', (client) => client.zrangebyscore(this.keys.history, version, version))
      : [];
    const member = members[0];
    if (member === undefined) {
      throw new GraygateError('GG_VERSION_UNKNOWN', `version ${version} is not in the history kept in redis (${this.keys.history})`);
    }
    return this.parseEntry(member, `redis ${this.keys.history} version ${version}`);
  }

}
