/**
 * What the rules may know about one request. The data plane adapter (node or bun) implements
 * it over its own request type; rules and identity read it and never see the runtime.
 *
 * Contract for implementations: every accessor is cheap and side-effect free, header names are
 * asked for in lower case, and a missing value is `undefined` (never an empty string stand-in).
 */
export interface RequestFacts {
  readonly method: string;
  /** Host without port, lower case ('' when the request had none). */
  readonly host: string;
  /** Path without the query string, as sent (not decoded). */
  readonly path: string;
  /** The caller's address as graygate trusts it (X-Forwarded-For only via trusted proxies). */
  readonly clientIp: string;
  /** True when the peer that connected to graygate is a configured trusted proxy. */
  readonly isFromTrustedProxy: boolean;
  /** First value of a request header; `name` must be lower case. */
  header(name: string): string | undefined;
  /** Value of a request cookie (parsed once per request, on first use). */
  cookie(name: string): string | undefined;
  /** First value of a query parameter (parsed once per request, on first use). */
  query(name: string): string | undefined;

  /** Set by identity resolution before rules run: the caller's id, in canonical form. */
  userId: string | undefined;
  /** `userId` as a number when it is a canonical decimal integer (`7`, not `007` or `7.0`). */
  numericUserId: number | undefined;
  /** Which identity source produced `userId` (its kind), for logs and explain. */
  identitySource: string | undefined;
  /** True when the client's connection to graygate is TLS; absent means plain HTTP. */
  readonly isTls?: boolean;
  /**
   * Set by identity resolution when it minted an anonymous id for this caller: the `Set-Cookie`
   * value the response must carry. Undefined otherwise (a returning caller's cookie is not re-sent).
   */
  mintedAnonymousCookie?: string | undefined;
}

/**
 * Longest user id a request can carry (from any identity source, or in a uid list). A longer one
 * is garbage or an attack, not a user: identity treats it as no id (counted), so the caller
 * goes to stable; ids of real systems (UUIDs, emails, numeric ids) are far shorter.
 */
export const MAX_USER_ID_LENGTH = 256;

/**
 * Parses a user id as a number only in its canonical decimal form, so `007`, `7.0`, ` 7`
 * and `7e0` never alias `7`: ids are hashed and compared in one canonical form, so the same
 * caller lands in the same bucket whichever way a client spells the id.
 */
export function canonicalNumericId(id: string): number | undefined {
  const length = id.length;
  if (length === 0 || length > 16) return undefined;
  let start = 0;
  if (id.charCodeAt(0) === 45 /* - */) {
    if (length === 1) return undefined;
    start = 1;
  }
  const first = id.charCodeAt(start);
  if (first === 48 /* 0 */ && length > start + 1) return undefined;
  for (let i = start; i < length; i++) {
    const c = id.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  const value = Number(id);
  return Number.isSafeInteger(value) && !(value === 0 && start === 1) ? value : undefined;
}
