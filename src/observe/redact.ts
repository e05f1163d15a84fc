import { createHash } from 'node:crypto';

/**
 * What of a credential may reach a log line or an error message. Login tokens, the store keys
 * built from them (`TOKEN_<token>`), JWTs, Authorization and Cookie values and query strings are
 * credentials or may carry one: a log is read by more people than may act as a user, and is kept
 * longer. Every place that would name one goes through these functions.
 */

/**
 * A credential as logs may show it: a fingerprint, the first 8 hex digits of its SHA-256
 * (`sha256:1f0c9a7e`). Lines about one token can be told apart and matched, and an operator who
 * holds a token can check it (`printf %s TOKEN | sha256sum`), but no character of it is shown:
 * even a prefix narrows a credential down. Only failure paths call this, never the request path.
 */
export function secretHint(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex').slice(0, 8)}`;
}

/**
 * A store key built from a credential, for logs: the key template's fixed parts around the
 * credential's fingerprint (`TOKEN_<sha256:1f0c9a7e>`), so an operator sees which template and
 * which token without the token. Code that only has the whole key does not log it.
 */
export function describeSecretKey(prefix: string, secret: string, suffix: string): string {
  return `${prefix}<${secretHint(secret)}>${suffix}`;
}

/** A request target for logs: its path, without the query string (a query may carry an identity). */
export function pathForLog(target: string | undefined): string {
  if (target === undefined) return '';
  const query = target.indexOf('?');
  return query < 0 ? target : target.slice(0, query);
}
