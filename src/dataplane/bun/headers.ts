import type { RequestFacts } from '../../rules/facts.js';
import type { Decision } from '../../rules/snapshot.js';
import { applyDecisionHeaders } from '../decision-headers.js';
import { HOP_BY_HOP, connectionTokens } from '../headers.js';
import type { BunHeaderRecord } from './bun-api.js';

/**
 * Header handling on Bun's fetch-style objects. The rules are the shared ones (headers.ts,
 * decision-headers.ts: the same HOP_BY_HOP set, Connection tokens and decision headers); only
 * the way they are applied differs, because every call into a native Headers costs a crossing
 * into Bun (measured: reading the request's headers with forEach cost ~2.5 µs of a request,
 * Bun's one-call toJSON() a fifth of that).
 */

/** A header record as Bun's `toJSON()` gives it, as the flat name/value list the shared functions take. */
export function headerList(record: BunHeaderRecord): string[] {
  const list: string[] = [];
  for (const name in record) {
    const value = record[name]!;
    if (typeof value === 'string') list.push(name, value);
    else for (const item of value) list.push(name, item);
  }
  return list;
}

/**
 * Removes from a response's headers, in place, what buildClientResponseHeaders leaves out: the
 * hop-by-hop headers and every name the `Connection` header lists. Edits only what is present
 * (native `has` is cheap; the common response has none of them).
 */
export function stripHopByHop(headers: Headers): void {
  const connection = headers.get('connection');
  const named = connection === null ? undefined : connectionTokens(connection);
  for (const name of HOP_BY_HOP) if (headers.has(name)) headers.delete(name);
  if (named === undefined) return;
  // Rare (a Connection naming headers): walk the names present, since a token need not be a valid
  // header name, and Headers.has/delete throw on one that is not.
  const listed: string[] = [];
  headers.forEach((_value, name) => {
    if (named.has(name)) listed.push(name);
  });
  for (const name of listed) headers.delete(name);
}

/**
 * applyDecisionHeaders on a Headers, in place: the shared function gets a record holding only
 * the upstream values it may rewrite (Vary, Cache-Control, and Set-Cookie when it adds a cookie),
 * and whatever it set is written back.
 */
export function applyDecisionHeadersTo(headers: Headers, decision: Decision, facts: RequestFacts, versionHeader: string | undefined, upstreamName: string): void {
  const out: Record<string, string | string[]> = {};
  const vary = headers.get('vary');
  if (vary !== null) out.vary = vary;
  const cacheControl = headers.get('cache-control');
  if (cacheControl !== null) out['cache-control'] = cacheControl;
  if (facts.mintedAnonymousCookie !== undefined) {
    const cookies = headers.getSetCookie();
    if (cookies.length > 0) out['set-cookie'] = cookies;
  }
  applyDecisionHeaders(out, decision, facts, versionHeader, upstreamName);
  for (const name in out) {
    const value = out[name]!;
    if (typeof value === 'string') {
      // A value handed back untouched needs no native write.
      const unchanged = (name === 'vary' && value === vary) || (name === 'cache-control' && value === cacheControl);
      if (!unchanged) headers.set(name, value);
    } else {
      headers.delete(name);
      for (const item of value) headers.append(name, item);
    }
  }
}
