import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { HeaderName, Milliseconds } from '../config/primitives.js';
import { ConfigError } from '../errors.js';
import { rateLimited, silentLogger, type Logger } from '../observe/log.js';
import { describeSecretKey } from '../observe/redact.js';
import { defineIdentitySource, MAX_USER_ID_LENGTH, type IdentityContext } from './source.js';

/**
 * The seed's identity scheme: a login token in a request header (default `TOKEN`), looked up in
 * the store under a key built from a template (default `TOKEN_{token}`), whose value is the user
 * id (e.g. `1234`). Answers from an LRU cache with TTL in the steady state (synchronously, no
 * I/O); a miss costs one store lookup, shared by concurrent requests for the same token and
 * bounded by a deadline. Unknown tokens are cached briefly too. Anything unknown — a malformed
 * or oversized token, a timeout, a store outage, a garbage value — is "no identity": the
 * request goes to stable.
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
    cacheTtlMs: Milliseconds.min(1).default(5_000).meta({ description: 'How long a found user id is cached (a changed or deleted token takes effect after this).' }),
    negativeTtlMs: Milliseconds.default(1_000).meta({ description: 'How long an unknown token (or a garbage value) is cached as unknown; 0 disables.' }),
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

/** Counts of what token lookups did, for metrics: every "no identity" outcome is counted. */
export interface TokenLookupStats {
  /** Answered from the cache with a user id. */
  hits: number;
  /** Answered from the cache as unknown (negative caching). */
  negativeHits: number;
  /** Store lookups started (cache misses not joined to one in flight). */
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
  readonly entries: LRUCache<string, string | number>;
  readonly inFlight: Map<string, Promise<string | undefined>>;
  readonly log: ReturnType<typeof rateLimited>;
  readonly stats: TokenLookupStats;
}

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
  const key = `${config.keyTemplate}\u0000${config.cacheTtlMs}\u0000${config.negativeTtlMs}\u0000${config.cacheMax}`;
  let cache = caches.get(key);
  if (!cache) {
    cache = {
      entries: new LRUCache<string, string | number>({ max: config.cacheMax, ttl: config.cacheTtlMs, updateAgeOnGet: false }),
      inFlight: new Map(),
      log: rateLimited(logger),
      stats: { hits: 0, negativeHits: 0, lookups: 0, answered: 0, unknown: 0, failures: 0, timeouts: 0, garbage: 0, refused: 0, shed: 0 },
    };
    caches.set(key, cache);
    if (caches.size > CACHES_PER_CONTEXT) caches.delete(caches.keys().next().value!);
  }
  return cache;
}

/** Token lookup counts of every cache kept for `context` (summed), e.g. for a metrics endpoint. */
export function tokenLookupStats(context: IdentityContext): TokenLookupStats {
  const total: TokenLookupStats = { hits: 0, negativeHits: 0, lookups: 0, answered: 0, unknown: 0, failures: 0, timeouts: 0, garbage: 0, refused: 0, shed: 0 };
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
    const { entries, inFlight, log, stats } = cache;
    const header = config.header;
    const maxTokenLength = config.maxTokenLength;
    const deadlineMs = config.deadlineMs;
    const negativeTtlMs = config.negativeTtlMs;
    // The template split once here, so building a key per miss is two concatenations.
    const at = config.keyTemplate.indexOf(TOKEN_PLACEHOLDER);
    const keyPrefix = config.keyTemplate.slice(0, at);
    const keySuffix = config.keyTemplate.slice(at + TOKEN_PLACEHOLDER.length);

    const remember = (token: string, value: string | undefined): string | undefined => {
      inFlight.delete(token);
      stats.answered++;
      if (value !== undefined && isCanonicalUserId(value)) {
        entries.set(token, toCached(value));
        return value;
      }
      if (value === undefined) stats.unknown++;
      else {
        stats.garbage++;
        log('tokenLookup.garbage', 'warn', { key: describeSecretKey(keyPrefix, token, keySuffix), length: value.length }, 'token lookup: the stored value is not a user id; the request goes to stable');
      }
      if (negativeTtlMs > 0) entries.set(token, UNKNOWN, { ttl: negativeTtlMs });
      return undefined;
    };
    const fail = (token: string, error: unknown, startedAt: number): undefined => {
      inFlight.delete(token);
      stats.failures++;
      // Stores word their deadline errors differently (Redis, the --workers primary): the clock
      // says it for all of them.
      if (Date.now() - startedAt >= deadlineMs) stats.timeouts++;
      log('tokenLookup.failed', 'warn', { key: describeSecretKey(keyPrefix, token, keySuffix), err: (error as Error)?.message ?? String(error) }, 'token lookup failed or timed out; the request goes to stable');
      return undefined;
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
        if (cached === UNKNOWN) {
          stats.negativeHits++;
          return undefined;
        }
        stats.hits++;
        return typeof cached === 'number' ? String(cached) : cached;
      }
      // Cache miss: one lookup per token, whoever else is waiting for it shares it.
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
