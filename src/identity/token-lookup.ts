import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { HeaderName, Milliseconds } from '../config/primitives.js';
import { ConfigError } from '../errors.js';
import { rateLimited, silentLogger, type Logger } from '../observe/log.js';
import { describeSecretKey, secretHint } from '../observe/redact.js';
import { defineIdentitySource, MAX_USER_ID_LENGTH, type IdentityContext } from './source.js';

/**
 * The seed's identity scheme: a login token in a request header (default `TOKEN`), looked up in
 * the store under a key built from a template (default `TOKEN_{token}`), whose value is the user
 * id (e.g. `1234`). Answers from an LRU cache with TTL in the steady state (synchronously, no
 * I/O); a miss costs one store lookup, shared by concurrent requests for the same token and
 * bounded by a deadline. Unknown tokens are cached briefly too. Anything unknown — a malformed
 * or oversized token, a timeout, a store outage, a garbage value — is "no identity": the
 * request goes to stable.
 *
 * Stale-while-revalidate: an entry past its TTL is still answered from the cache, and one
 * background lookup refreshes it. Waiting for that lookup in the request's path is what flips a
 * known user: on a busy box or while the store blinks it misses its deadline, and the user is
 * served stable for that request. So only a token never seen (or forgotten) waits. A refresh that
 * fails or is slow keeps the last answer, for at most `maxStaleMs` past the TTL; one the store
 * answers replaces it (a deleted key becomes "unknown", a new value the new id), so a change made
 * while the store is up is in force within the TTL plus one lookup.
 */

const TOKEN_PLACEHOLDER = '{token}';

const TokenLookupConfig = z
  .strictObject({
    header: HeaderName.default('token').meta({ description: 'Request header carrying the login token (matched case-insensitively).' }),
    keyTemplate: z
      .string()
      .min(1)
      .max(200)
      .refine((template) => template.split(TOKEN_PLACEHOLDER).length === 2, { message: 'expected a template with exactly one {token}, e.g. TOKEN_{token}' })
      .default(`TOKEN_${TOKEN_PLACEHOLDER}`)
      .meta({ description: 'Store key holding the user id for a token; `{token}` is replaced by the token.' }),
    cacheTtlMs: Milliseconds.min(1).default(5_000).meta({
      description:
        'How long a found user id is answered from the cache before it is looked up again. The lookup runs in the background while the cached id is still served, ' +
        'so a changed or deleted token takes effect within this plus one lookup.',
    }),
    negativeTtlMs: Milliseconds.default(1_000).meta({
      description:
        'How long an unknown token (or a garbage value) is cached as unknown; 0 disables. Refreshed like a found id: a token whose key appears is found within this plus one lookup.',
    }),
    maxStaleMs: Milliseconds.default(300_000)
      .meta({
        description:
          'How long past its TTL a cached answer (an id, or unknown) is still served while the store cannot confirm it (down, hung, slow): the known user keeps its version ' +
          'through a store outage or restart instead of falling to stable. Past it the token is forgotten and waits for a lookup like a new one. 0: an expired entry waits.',
      }),
    cacheMax: z.number().int().min(1).max(10_000_000).default(100_000).meta({ description: 'Most tokens kept in the cache (least recently used are dropped).' }),
    deadlineMs: Milliseconds.min(1).default(50).meta({ description: 'Longest wait for the store on a cache miss; past it the request goes to stable.' }),
    maxTokenLength: z.number().int().min(1).max(4_096).default(256).meta({
      description: 'Longer tokens are refused without a store lookup. Tokens may hold letters, digits and - . _ ~ + / = (RFC 6750 b64token).',
    }),
  })
  .meta({ description: 'User id looked up in the store from a login token header (the seed\'s TOKEN → TOKEN_<token>).' });
type TokenLookupConfig = z.output<typeof TokenLookupConfig>;

/** Characters a token may hold: RFC 6750 b64token (`A-Za-z0-9-._~+/`) plus `=` padding. */
const TOKEN_CHAR = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=') TOKEN_CHAR[c.charCodeAt(0)] = 1;

/** True when `token` is 1..maxLength characters, all allowed. A loop, not a regex: no allocation. */
export function isWellFormedToken(token: string, maxLength: number): boolean {
  const length = token.length;
  if (length === 0 || length > maxLength) return false;
  for (let i = 0; i < length; i++) {
    const c = token.charCodeAt(i);
    if (c >= 128 || TOKEN_CHAR[c] === 0) return false;
  }
  return true;
}

/**
 * True when a stored value can be a user id: 1..256 printable ASCII characters (no spaces or
 * control characters), and a decimal number only in canonical form (`007` would alias `7`).
 */
export function isCanonicalUserId(value: string): boolean {
  const length = value.length;
  if (length === 0 || length > MAX_USER_ID_LENGTH) return false;
  let isDigits = true;
  for (let i = 0; i < length; i++) {
    const c = value.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return false;
    if (c < 48 || c > 57) isDigits = false;
  }
  return !(isDigits && length > 1 && value.charCodeAt(0) === 48);
}

/**
 * A copy of `token` that shares no memory with the string it came from. A header value can be a
 * slice or a concatenation of a longer string (a cookie header, `Bearer …`, a raw header block):
 * V8 keeps the whole parent alive as long as a slice of 13 characters or more lives (a
 * SlicedString is a pointer to its parent and an offset), a concatenation keeps both halves
 * (ConsString), and JSC's substrings share their base the same way. A cache key lives for
 * cacheTtlMs and there are up to cacheMax of them, so each must weigh its own characters and no
 * more. Encoding to bytes and decoding them makes the runtime build a new sequential string from
 * the bytes, which cannot point at anything; latin1 is lossless here because a well-formed token
 * is ASCII. About 150 ns, once per store lookup (a cache miss), never on a hit.
 */
function ownCopy(token: string): string {
  return Buffer.from(token, 'latin1').toString('latin1');
}

/**
 * How a user id is kept in the cache: a canonical decimal id of up to 15 digits as a number (up
 * to 2^31 - 1 V8 stores it in place, in the cache's value slot; above, as a 16-byte heap number;
 * its string would take 24–32 bytes), anything else as the string itself. A hit turns the number back with String(),
 * which gives the same characters: the id has no leading zero (isCanonicalUserId) and fewer
 * than 16 digits, so it is an exact integer that prints in plain decimal.
 */
function toCached(userId: string): string | number {
  const length = userId.length;
  if (length > 15) return userId;
  for (let i = 0; i < length; i++) {
    const c = userId.charCodeAt(i);
    if (c < 48 || c > 57) return userId;
  }
  return Number(userId);
}

/** Marks "known unknown" in the cache; never a valid user id. */
const UNKNOWN = '';

/** Lookups in flight at once, per cache; beyond it a miss goes straight to stable (store in trouble). */
const MAX_IN_FLIGHT = 10_000;

/**
 * Deadline of a background refresh. Nobody waits for it, so it need not fit the request's
 * deadline: on a loaded box a 50 ms lookup often misses where a one-second one succeeds, and a
 * refresh that keeps failing would age the entry towards maxStaleMs for nothing.
 */
const REFRESH_DEADLINE_MS = 1_000;

/**
 * After a refresh fails, no other refresh starts in this cache for this long. A failure is almost
 * always the store (down, hung), not the key: without the pause, every request of every known
 * user would start a lookup that fails, a stream of errors and log lines for nothing.
 */
const REFRESH_PAUSE_AFTER_FAILURE_MS = 1_000;

/** Counts of what token lookups did, for metrics: every "no identity" outcome is counted. */
export interface TokenLookupStats {
  /** Answered from the cache with a user id (fresh or stale). */
  hits: number;
  /** Of `hits` and `negativeHits`, those answered past their TTL (a refresh was due). */
  staleHits: number;
  /** Background refreshes started (their outcome is counted like a lookup's). */
  refreshes: number;
  /** Answered from the cache as unknown (negative caching). */
  negativeHits: number;
  /** Store lookups started for a request that waits (cache misses not joined to one in flight). */
  lookups: number;
  /** Lookups that found no key. */
  unknown: number;
  /** Lookups that the store answered (found, unknown or garbage). */
  answered: number;
  /** Lookups that failed or passed their deadline. */
  failures: number;
  /** Of `failures`, those that passed their deadline. */
  timeouts: number;
  /** Values under a token key that are not a user id. */
  garbage: number;
  /** Tokens refused before any lookup (oversized, bad characters). */
  refused: number;
  /** Misses sent to stable because too many lookups were in flight. */
  shed: number;
}

/** What outlives config snapshots: the cache, lookups in flight, the log limiter, the counts. */
interface TokenCache {
  /** Each entry lives for its TTL plus maxStaleMs: past the TTL it is stale (served, refreshed). */
  readonly entries: LRUCache<string, string | number>;
  /** Lookups a request waits for (a miss), by token. */
  readonly inFlight: Map<string, Promise<string | undefined>>;
  /** Tokens whose background refresh is in flight (nobody waits for it). */
  readonly refreshing: Set<string>;
  /** No background refresh starts before this time (Date.now()), after one failed. */
  refreshPausedUntil: number;
  readonly log: ReturnType<typeof rateLimited>;
  readonly stats: TokenLookupStats;
}

const zeroStats = (): TokenLookupStats => ({
  hits: 0,
  staleHits: 0,
  negativeHits: 0,
  lookups: 0,
  refreshes: 0,
  answered: 0,
  unknown: 0,
  failures: 0,
  timeouts: 0,
  garbage: 0,
  refused: 0,
  shed: 0,
});

/**
 * Caches live in a registry keyed by the IdentityContext (which the gateway keeps for its whole
 * life), so a config change that rebuilds the resolver keeps a warm cache. Within one context,
 * caches are keyed by what their entries depend on; a few are kept (oldest dropped).
 */
const registry = new WeakMap<IdentityContext, Map<string, TokenCache>>();
const CACHES_PER_CONTEXT = 4;

function cacheFor(context: IdentityContext, config: TokenLookupConfig, logger: Logger): TokenCache {
  let caches = registry.get(context);
  if (!caches) {
    caches = new Map();
    registry.set(context, caches);
  }
  const key = `${config.keyTemplate}\u0000${config.cacheTtlMs}\u0000${config.negativeTtlMs}\u0000${config.maxStaleMs}\u0000${config.cacheMax}`;
  let cache = caches.get(key);
  if (!cache) {
    cache = {
      entries: new LRUCache<string, string | number>({ max: config.cacheMax, ttl: config.cacheTtlMs + config.maxStaleMs, updateAgeOnGet: false }),
      inFlight: new Map(),
      refreshing: new Set(),
      refreshPausedUntil: 0,
      log: rateLimited(logger),
      stats: zeroStats(),
    };
    caches.set(key, cache);
    if (caches.size > CACHES_PER_CONTEXT) caches.delete(caches.keys().next().value!);
  }
  return cache;
}

/** Token lookup counts of every cache kept for `context` (summed), e.g. for a metrics endpoint. */
export function tokenLookupStats(context: IdentityContext): TokenLookupStats {
  const total = zeroStats();
  for (const cache of registry.get(context)?.values() ?? []) {
    for (const key of Object.keys(total) as (keyof TokenLookupStats)[]) total[key] += cache.stats[key];
  }
  return total;
}

export const tokenLookupIdentity = defineIdentitySource({
  kind: 'tokenLookup',
  schema: TokenLookupConfig,
  inputs: (config) => [{ kind: 'header', name: config.header }],
  create(config, context) {
    const readKey = context.readKey?.bind(context);
    if (!readKey) {
      throw new ConfigError([
        'identity.sources: tokenLookup needs a store that can look keys up (the redis store); with this store no token can be resolved',
      ]);
    }
    const logger = context.logger ?? silentLogger();
    const cache = cacheFor(context, config, logger);
    const { entries, inFlight, refreshing, log, stats } = cache;
    const header = config.header;
    const maxTokenLength = config.maxTokenLength;
    const deadlineMs = config.deadlineMs;
    const negativeTtlMs = config.negativeTtlMs;
    const maxStaleMs = config.maxStaleMs;
    // Entries are stored with their TTL plus maxStaleMs: one whose remaining time is at most
    // maxStaleMs is past its TTL.
    const positiveTtl = config.cacheTtlMs + maxStaleMs;
    const negativeTtl = negativeTtlMs + maxStaleMs;
    const refreshDeadlineMs = Math.max(deadlineMs, REFRESH_DEADLINE_MS);
    // The template split once here, so building a key per miss is two concatenations.
    const at = config.keyTemplate.indexOf(TOKEN_PLACEHOLDER);
    const keyPrefix = config.keyTemplate.slice(0, at);
    const keySuffix = config.keyTemplate.slice(at + TOKEN_PLACEHOLDER.length);

    /** Caches what the store answered for `token`; the id, or undefined for no identity. */
    const store = (token: string, value: string | undefined): string | undefined => {
      stats.answered++;
      if (value !== undefined && isCanonicalUserId(value)) {
        entries.set(token, toCached(value), { ttl: positiveTtl });
        return value;
      }
      if (value === undefined) stats.unknown++;
      else {
        stats.garbage++;
        log('tokenLookup.garbage', 'warn', { key: describeSecretKey(keyPrefix, token, keySuffix), length: value.length }, 'token lookup: the stored value is not a user id; the request goes to stable');
      }
      // A refreshed entry that is now unknown must not keep its old id: with negative caching
      // off, it is dropped.
      if (negativeTtlMs > 0) entries.set(token, UNKNOWN, { ttl: negativeTtl });
      else entries.delete(token);
      return undefined;
    };
    const failed = (token: string, error: unknown, startedAt: number, deadline: number, what: string): void => {
      stats.failures++;
      // Stores word their deadline errors differently (Redis, the --workers primary): the clock
      // says it for all of them.
      if (Date.now() - startedAt >= deadline) stats.timeouts++;
      // A store's message may quote the key, which holds the token (a credential): only its fingerprint is logged.
      const message = ((error as Error)?.message ?? String(error)).split(token).join(secretHint(token));
      log('tokenLookup.failed', 'warn', { key: describeSecretKey(keyPrefix, token, keySuffix), err: message }, what);
    };
    const remember = (token: string, value: string | undefined): string | undefined => {
      inFlight.delete(token);
      return store(token, value);
    };
    const fail = (token: string, error: unknown, startedAt: number): undefined => {
      inFlight.delete(token);
      failed(token, error, startedAt, deadlineMs, 'token lookup failed or timed out; the request goes to stable');
      return undefined;
    };

    /**
     * Starts one background lookup for a token answered past its TTL, unless one is in flight or
     * a refresh failed a moment ago. Its answer replaces the entry; its failure keeps it (until
     * maxStaleMs runs out). Off the request's path: the request already has its answer.
     */
    const refresh = (token: string): void => {
      if (refreshing.has(token) || inFlight.has(token)) return;
      const now = Date.now();
      if (now < cache.refreshPausedUntil) return;
      if (refreshing.size >= MAX_IN_FLIGHT) {
        stats.shed++;
        return;
      }
      stats.refreshes++;
      const key = ownCopy(token);
      refreshing.add(key);
      readKey(keyPrefix + key + keySuffix, refreshDeadlineMs).then(
        (value) => {
          refreshing.delete(key);
          store(key, value);
        },
        (error: unknown) => {
          refreshing.delete(key);
          cache.refreshPausedUntil = Date.now() + REFRESH_PAUSE_AFTER_FAILURE_MS;
          failed(key, error, now, refreshDeadlineMs, 'token refresh failed or timed out; the last known answer is served meanwhile');
        },
      );
    };

    return (facts) => {
      const token = facts.header(header);
      if (token === undefined) return undefined;
      if (!isWellFormedToken(token, maxTokenLength)) {
        stats.refused++;
        return undefined;
      }
      const cached = entries.get(token);
      if (cached !== undefined) {
        // Past its TTL (within maxStaleMs of being dropped): answer it still, and refresh it.
        if (maxStaleMs > 0 && entries.getRemainingTTL(token) <= maxStaleMs) {
          stats.staleHits++;
          refresh(token);
        }
        if (cached === UNKNOWN) {
          stats.negativeHits++;
          return undefined;
        }
        stats.hits++;
        return typeof cached === 'number' ? String(cached) : cached;
      }
      // Never seen, or forgotten: one lookup per token, whoever else is waiting for it shares it.
      let pending = inFlight.get(token);
      if (pending === undefined) {
        if (inFlight.size >= MAX_IN_FLIGHT) {
          stats.shed++;
          return undefined;
        }
        stats.lookups++;
        const startedAt = Date.now();
        // The cache and the in-flight map keep their own copy of the token, never the header's.
        const key = ownCopy(token);
        pending = readKey(keyPrefix + key + keySuffix, deadlineMs).then(
          (value) => remember(key, value),
          (error: unknown) => fail(key, error, startedAt),
        );
        inFlight.set(key, pending);
      }
      return pending;
    };
  },
});
