import type { AnonymousCookie } from '../config/schema.js';
import type { RequestFacts } from '../rules/facts.js';
import type { RequestInput } from '../rules/strategy.js';

/** The identity kind a returning or newly minted anonymous caller gets (`facts.identitySource`). */
export const ANONYMOUS_KIND = 'anonymous';

const SECONDS_PER_DAY = 86_400;

/**
 * Only ids of the shape graygate mints (a lower-case UUID, 8-4-4-4-12 hex) are taken back from
 * the cookie; anything else is minted anew. So a client cannot claim a real user's id (`1234`,
 * `alice`) through the anonymous cookie and match uidList or uidRange rules with it.
 */
export function isAnonymousId(value: string): boolean {
  if (value.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = value.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 45 /* - */) return false;
    } else if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/** True when the caller reached graygate over TLS, directly or (as a trusted proxy says) in front of it. */
function isSecureRequest(facts: RequestFacts): boolean {
  if (facts.isTls === true) return true;
  if (!facts.isFromTrustedProxy) return false;
  const proto = facts.header('x-forwarded-proto');
  if (proto === undefined) return false;
  // Proxies append: the first entry is what the client used.
  const comma = proto.indexOf(',');
  return (comma < 0 ? proto : proto.slice(0, comma)).trim().toLowerCase() === 'https';
}

/** The anonymous sticky id, compiled from `identity.anonymousCookie`. */
export interface AnonymousIdentity {
  /** The cookie it reads (for `Vary`). */
  readonly inputs: readonly RequestInput[];
  /**
   * For a caller without an id: takes a well-formed id from the cookie, or (with `mint`) draws a
   * new random one and sets `facts.mintedAnonymousCookie`. Leaves a caller with an id alone.
   */
  assign(facts: RequestFacts, mint: boolean): void;
}

/**
 * Compiles `identity.anonymousCookie`; `undefined` when absent or disabled. The id is random
 * (crypto.randomUUID: no two callers share one, and nobody can predict another's); the
 * percentage and split hashes then decide its version like any other id, so 10 % stays 10 %
 * (an anonymous caller is not sent to the candidate by default, and keeps its version on the
 * next visit). Cookie attributes are fixed here; minting concatenates once.
 */
export function buildAnonymousIdentity(config: AnonymousCookie | undefined): AnonymousIdentity | undefined {
  if (config === undefined || !config.enabled) return undefined;
  const name = config.name;
  const prefix = `${name}=`;
  const attributes = `; Path=/; Max-Age=${config.maxAgeDays * SECONDS_PER_DAY}; SameSite=${config.sameSite}; HttpOnly`;
  // Browsers drop SameSite=None without Secure, so None always carries it.
  const alwaysSecure = config.sameSite === 'None';
  const plainSuffix = alwaysSecure ? `${attributes}; Secure` : attributes;
  const secureSuffix = `${attributes}; Secure`;
  const inputs: readonly RequestInput[] = Object.freeze([{ kind: 'cookie', name }]);
  return Object.freeze({
    inputs,
    assign(facts: RequestFacts, mint: boolean): void {
      if (facts.userId !== undefined) return;
      const returning = facts.cookie(name);
      let id: string;
      if (returning !== undefined && isAnonymousId(returning)) {
        id = returning;
      } else {
        if (!mint) return;
        id = globalThis.crypto.randomUUID();
        facts.mintedAnonymousCookie = prefix + id + (isSecureRequest(facts) ? secureSuffix : plainSuffix);
      }
      facts.userId = id;
      // A UUID is never a canonical number: anonymous callers never match numeric id rules.
      facts.numericUserId = undefined;
      facts.identitySource = ANONYMOUS_KIND;
    },
  });
}
