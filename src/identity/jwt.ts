import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { JSONWebKeySet, JWTVerifyGetKey } from 'jose';
import { LRUCache } from 'lru-cache';
import { z } from 'zod';
import { CookieName, HeaderName } from '../config/primitives.js';
import { ConfigError } from '../errors.js';
import { defineIdentitySource, MAX_USER_ID_LENGTH, type IdentityContext, type IdentityResolver } from './source.js';

/**
 * The caller's id from a claim of a signed JWT (RFC 7519), read from a header (`Authorization:
 * Bearer …` by default) or a cookie. The signature is checked with jose against one configured
 * key: an HS256 secret, an RS256/ES256 public key (PEM), or a JWKS file. A token that is
 * unsigned (`alg: none`), signed with another algorithm, badly signed, expired or not yet valid
 * gives no identity, so the caller goes where anonymous callers go.
 *
 * Verified answers are cached per token in a bounded LRU (TTL never past the token's `exp`), so
 * a returning caller costs one map lookup; only a cache miss returns a Promise.
 */

const Algorithm = z.enum(['HS256', 'RS256', 'ES256']);
type Algorithm = z.infer<typeof Algorithm>;

/** RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits). */
const MIN_SECRET_BYTES = 32;
/** Tokens longer than this are refused before any parsing: no real token is this large. */
const MAX_TOKEN_LENGTH = 8192;
/** How long a token without `exp`, or a rejected token, is remembered. */
const MAX_CACHE_TTL_MS = 10 * 60_000;
const REJECTED_TTL_MS = 30_000;

function publicKeyIssue(pem: string): string | undefined {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (error) {
    return `expected a PEM public key (-----BEGIN PUBLIC KEY-----): ${(error as Error).message}`;
  }
  return algorithmOf(key) === undefined ? `expected an RSA or P-256 EC public key, got ${key.asymmetricKeyType}` : undefined;
}

function algorithmOf(key: KeyObject): Algorithm | undefined {
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  return undefined;
}

const JwtIdentityConfig = z
  .strictObject({
    header: HeaderName.optional().meta({
      description: 'Header carrying the token; `Bearer ` before it is removed. Default: authorization (when no cookie is given).',
    }),
    cookie: CookieName.optional().meta({ description: 'Cookie carrying the token (instead of a header).' }),
    claim: z.string().min(1).max(128).default('sub').meta({ description: 'Claim holding the user id (a string or an integer). Default: sub.' }),
    secret: z
      .string()
      .refine((secret) => Buffer.byteLength(secret) >= MIN_SECRET_BYTES, { message: `an HS256 secret has at least ${MIN_SECRET_BYTES} bytes (RFC 7518 §3.2)` })
      .optional()
      .meta({ description: 'HS256 shared secret (at least 32 bytes). Prefer secretEnv, which keeps it out of the stored document.' }),
    secretEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: 'expected an environment variable name' })
      .optional()
      .meta({ description: 'Environment variable holding the HS256 secret, read when the config is applied.' }),
    publicKey: z
      .string()
      .superRefine((pem, ctx) => {
        const issue = publicKeyIssue(pem);
        if (issue) ctx.addIssue({ code: 'custom', message: issue });
      })
      .optional()
      .meta({ description: 'PEM public key (SPKI): RSA for RS256, P-256 EC for ES256.' }),
    jwksFile: z.string().min(1).optional().meta({ description: 'Path of a JWKS (JSON Web Key Set) file, read when the config is applied.' }),
    algorithms: z
      .array(Algorithm)
      .min(1)
      .optional()
      .meta({ description: 'Accepted algorithms. Default: HS256 for a secret, the key type for a public key, RS256 and ES256 for a JWKS.' }),
    issuer: z.string().min(1).optional().meta({ description: 'Required `iss` claim.' }),
    audience: z.string().min(1).optional().meta({ description: 'Required `aud` claim (one of).' }),
    clockToleranceSeconds: z.number().int().min(0).max(300).default(0).meta({ description: 'Leeway for exp and nbf, in seconds.' }),
    cacheSize: z.number().int().min(1).max(1_000_000).default(10_000).meta({ description: 'Verified tokens remembered (LRU).' }),
  })
  .superRefine((config, ctx) => {
    if (config.header !== undefined && config.cookie !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['cookie'], message: 'give header or cookie, not both' });
    }
    const keys = (['secret', 'secretEnv', 'publicKey', 'jwksFile'] as const).filter((key) => config[key] !== undefined);
    if (keys.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message: keys.length === 0 ? 'give one key: secret, secretEnv, publicKey or jwksFile' : `give only one key, got ${keys.join(' and ')}`,
      });
    }
    const symmetric = config.secret !== undefined || config.secretEnv !== undefined;
    config.algorithms?.forEach((alg, i) => {
      if (symmetric !== (alg === 'HS256')) {
        ctx.addIssue({ code: 'custom', path: ['algorithms', i], message: `${alg} does not fit a ${symmetric ? 'shared secret' : 'public key'}` });
      }
    });
  })
  .meta({ description: 'User id from a claim of a signed JWT (HS256, RS256 or ES256), verified with a configured key or JWKS file.' });

export type JwtIdentityConfig = z.output<typeof JwtIdentityConfig>;

type Jose = typeof import('jose');
let jose: Jose | undefined;
let joseLoading: Promise<Jose> | undefined;

/**
 * jose is loaded only once a jwt source is configured: on the default path it would cost about
 * 10 MB of resident memory for nothing. Until it has loaded (a few ms after the first config
 * with a jwt source), tokens simply take the asynchronous path.
 */
export function loadJose(): Promise<Jose> {
  joseLoading ??= import('jose').then((module) => (jose = module));
  return joseLoading;
}

/** The key jose verifies with, and the algorithms allowed for it; throws ConfigError when it cannot be loaded. */
function loadKey(config: JwtIdentityConfig): { key: KeyObject | ((jose: Jose) => JWTVerifyGetKey); algorithms: Algorithm[] } {
  if (config.secret !== undefined || config.secretEnv !== undefined) {
    let secret = config.secret;
    if (config.secretEnv !== undefined) {
      secret = process.env[config.secretEnv];
      if (secret === undefined || secret.length === 0) throw new ConfigError([`secretEnv: environment variable ${config.secretEnv} is not set`]);
      if (Buffer.byteLength(secret) < MIN_SECRET_BYTES) {
        throw new ConfigError([`secretEnv: ${config.secretEnv} holds fewer than ${MIN_SECRET_BYTES} bytes (RFC 7518 §3.2)`]);
      }
    }
    return { key: createSecretKey(Buffer.from(secret!, 'utf8')), algorithms: ['HS256'] };
  }
  if (config.publicKey !== undefined) {
    const key = createPublicKey(config.publicKey);
    return { key, algorithms: config.algorithms ?? [algorithmOf(key)!] };
  }
  let jwks: JSONWebKeySet;
  try {
    jwks = JSON.parse(readFileSync(config.jwksFile!, 'utf8')) as JSONWebKeySet;
    if (!Array.isArray(jwks?.keys)) throw new Error('expected an object with a "keys" array');
  } catch (error) {
    throw new ConfigError([`jwksFile: cannot read a JWKS from ${JSON.stringify(config.jwksFile)}: ${(error as Error).message}`], { cause: error });
  }
  return { key: (module) => module.createLocalJWKSet(jwks), algorithms: config.algorithms ?? ['RS256', 'ES256'] };
}

/** `Bearer <token>` → the token (scheme case-insensitive, RFC 9110 §11.1); anything else → undefined. */
function bearerToken(value: string): string | undefined {
  if (value.length < 8 || value.charCodeAt(6) !== 32 /* space */ || value.slice(0, 6).toLowerCase() !== 'bearer') return undefined;
  const token = value.slice(7).trim();
  return token.length === 0 ? undefined : token;
}

/** The claim as a user id: a non-empty string, or a safe integer in decimal; else undefined. */
function idFromClaim(value: unknown): string | undefined {
  if (typeof value === 'string') return value.length === 0 || value.length > MAX_USER_ID_LENGTH ? undefined : value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  return undefined;
}

// Cached "no identity": lru-cache stores no undefined, and an id is never empty.
const REJECTED = '';

/** Counts of what JWT identity did, for metrics (plain integers bumped on the hot path). */
export interface JwtStats {
  /** Answered from the cache (an accepted or a rejected token). */
  hits: number;
  /** Signatures checked that gave an id. */
  verified: number;
  /** Signatures checked that gave none: bad signature, expired, wrong issuer, no such claim. */
  rejected: number;
  /** Refused before any check: not a JWS, or an algorithm not allowed (`none` included). */
  refused: number;
}

/** Per IdentityContext (kept for the gateway's life), so counts survive config changes. */
const statsByContext = new WeakMap<IdentityContext, JwtStats>();

/** The JWT counts of `context`, all zero when no JWT source was ever created for it. */
export function jwtStats(context: IdentityContext): JwtStats {
  return { ...(statsByContext.get(context) ?? { hits: 0, verified: 0, rejected: 0, refused: 0 }) };
}

function statsFor(context: IdentityContext): JwtStats {
  let stats = statsByContext.get(context);
  if (stats === undefined) statsByContext.set(context, (stats = { hits: 0, verified: 0, rejected: 0, refused: 0 }));
  return stats;
}

export const jwtIdentity = defineIdentitySource({
  kind: 'jwt',
  schema: JwtIdentityConfig,
  inputs: (config) => (config.cookie !== undefined ? [{ kind: 'cookie', name: config.cookie }] : [{ kind: 'header', name: config.header ?? 'authorization' }]),
  create(config, context) {
    const stats = statsFor(context);
    const { key: keySource, algorithms } = loadKey(config);
    void loadJose();
    let key: KeyObject | JWTVerifyGetKey | undefined = typeof keySource === 'function' ? undefined : keySource;
    const allowed = new Set<string>(algorithms);
    const claim = config.claim;
    const options = {
      algorithms,
      clockTolerance: config.clockToleranceSeconds,
      ...(config.issuer !== undefined ? { issuer: config.issuer } : {}),
      ...(config.audience !== undefined ? { audience: config.audience } : {}),
    };
    // Keyed by the raw header or cookie value, so a cache hit needs no slicing of "Bearer ".
    const cache = new LRUCache<string, string>({ max: config.cacheSize, ttl: MAX_CACHE_TTL_MS, ttlAutopurge: false });
    // One verification per token at a time, however many requests carry it (single flight).
    const pending = new Map<string, Promise<string | undefined>>();
    const fromCookie = config.cookie;
    const headerName = config.header ?? 'authorization';
    const bearerRequired = config.header === undefined;

    const verify = async (raw: string, token: string): Promise<string | undefined> => {
      try {
        const module = jose ?? (await loadJose());
        key ??= (keySource as (jose: Jose) => JWTVerifyGetKey)(module);
        const { payload } = await module.jwtVerify(token, key as KeyObject, options);
        const id = idFromClaim(payload[claim]);
        if (id === undefined) stats.rejected++;
        else stats.verified++;
        const now = Date.now();
        const untilExpiry = payload.exp === undefined ? MAX_CACHE_TTL_MS : payload.exp * 1000 - now;
        const ttl = Math.min(MAX_CACHE_TTL_MS, untilExpiry);
        if (ttl > 0) cache.set(raw, id ?? REJECTED, { ttl: id === undefined ? Math.min(ttl, REJECTED_TTL_MS) : ttl });
        return id;
      } catch {
        // Bad signature, expired, wrong issuer…: no identity. Not-yet-valid tokens may become
        // valid, so rejections are remembered only briefly.
        stats.rejected++;
        cache.set(raw, REJECTED, { ttl: REJECTED_TTL_MS });
        return undefined;
      } finally {
        pending.delete(raw);
      }
    };

    const resolve: IdentityResolver = (facts) => {
      const raw = fromCookie !== undefined ? facts.cookie(fromCookie) : facts.header(headerName);
      if (raw === undefined || raw.length === 0 || raw.length > MAX_TOKEN_LENGTH) return undefined;
      const cached = cache.get(raw);
      if (cached !== undefined) {
        stats.hits++;
        return cached === REJECTED ? undefined : cached;
      }
      const inFlight = pending.get(raw);
      if (inFlight) return inFlight;
      let token: string | undefined = raw;
      if (fromCookie === undefined) {
        const stripped = bearerToken(raw);
        token = stripped ?? (bearerRequired ? undefined : raw);
      }
      if (token === undefined) return undefined;
      // Refuse what jose would refuse anyway, synchronously: not a JWS, `alg: none`, another
      // algorithm. Such tokens cost no Promise and no cache slot.
      if (jose !== undefined) {
        let alg: unknown;
        try {
          alg = jose.decodeProtectedHeader(token).alg;
        } catch {
          stats.refused++;
          return undefined;
        }
        if (typeof alg !== 'string' || !allowed.has(alg)) {
          stats.refused++;
          return undefined;
        }
      }
      const promise = verify(raw, token);
      pending.set(raw, promise);
      return promise;
    };
    return resolve;
  },
});
