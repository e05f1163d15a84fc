import { createHash, timingSafeEqual } from 'node:crypto';
import type { AdminSettings } from '../../config/schema.js';
import { ConfigError, GraygateError } from '../../errors.js';

/**
 * Admin API authentication: named bearer tokens (`admin.tokens`, values from the environment),
 * compared in constant time; the token's name is the actor every write is recorded with. Without
 * tokens the API answers anyone, so it may then listen on loopback only.
 */

/** A configured token: its name and the SHA-256 of its value (the value itself is not kept). */
export interface AdminToken {
  readonly name: string;
  readonly digest: Buffer;
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\./.test(host);
const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

/** Named tokens with their values resolved (tokenEnv read now); ConfigError naming the field when one is missing. */
export function resolveTokens(settings: AdminSettings, env: NodeJS.ProcessEnv): AdminToken[] {
  const issues: string[] = [];
  const tokens = settings.tokens.map((token, i) => {
    const value = token.token ?? env[token.tokenEnv!];
    if (value === undefined || value.length < 16) {
      issues.push(
        `admin.tokens[${i}].tokenEnv: environment variable ${token.tokenEnv} is ${value === undefined ? 'not set' : 'shorter than 16 characters'}; set it to the token (16 characters or more) before starting`,
      );
    }
    return { name: token.name, digest: digest(value ?? '') };
  });
  if (tokens.length === 0 && !isLoopback(settings.listen.host)) {
    issues.push(`admin.tokens: the admin API would listen on ${settings.listen.host} without a token; add tokens, or listen on 127.0.0.1`);
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return tokens;
}

/** The token's name, comparing in constant time against every configured token. */
function actorOf(header: string | undefined, tokens: readonly AdminToken[]): string | undefined {
  const match = header === undefined ? undefined : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  // Digests make the lengths equal, so timingSafeEqual never throws and never shortcuts on length.
  const given = digest(match?.[1] ?? '');
  let found: string | undefined;
  for (const token of tokens) if (timingSafeEqual(given, token.digest) && match) found ??= token.name;
  return found;
}

/**
 * The actor a request's `Authorization` header names, or GG_UNAUTHORIZED (after `challenge`, which
 * adds the WWW-Authenticate header) when it names none of `tokens`.
 */
export function authenticate(header: string | undefined, tokens: readonly AdminToken[], challenge: () => void): string {
  const found = actorOf(header, tokens);
  if (found !== undefined) return found;
  challenge();
  throw new GraygateError('GG_UNAUTHORIZED', header ? 'the bearer token is not one of admin.tokens' : 'missing Authorization: Bearer <token>');
}
