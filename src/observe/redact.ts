/**
 * What of a credential may reach a log line or an error message. Login tokens, the store keys
 * built from them (`TOKEN_<token>`), JWTs, Authorization and Cookie values and query strings are
 * credentials or may carry one: a log is read by more people than may act as a user, and is kept
 * longer. Every place that would name one goes through these functions.
 */

/** A credential as logs may show it: its first four characters and an ellipsis (`HGds…`). */
export function secretHint(secret: string): string {
  return secret.length <= 4 ? '…' : `${secret.slice(0, 4)}…`;
}

/**
 * A store key built from a credential, for logs: the key template's fixed parts around the
 * credential's hint (`TOKEN_HGds…`), so an operator sees which template and roughly which token
 * without the token. Code that only has the whole key does not log it.
 */
export function describeSecretKey(prefix: string, secret: string, suffix: string): string {
  return `${prefix}${secretHint(secret)}${suffix}`;
}

/** A request target for logs: its path, without the query string (a query may carry an identity). */
export function pathForLog(target: string | undefined): string {
  if (target === undefined) return '';
  const query = target.indexOf('?');
  return query < 0 ? target : target.slice(0, query);
}
