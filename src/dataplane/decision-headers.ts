import { servedVersion } from '../observe/request-observer.js';
import type { RequestFacts } from '../rules/facts.js';
import type { Decision } from '../rules/snapshot.js';
import { mergeVary } from './headers.js';

/**
 * Response headers a decision calls for, added by every data plane the same way, so that a shared
 * cache never serves one version's response to a caller routed to the other: the decision's
 * precomputed `Vary`, or `Cache-Control: private`;
 * and the anonymous id cookie when one was minted for this request. Nothing is computed per
 * request that the decision did not fix at compile, except rewriting an upstream Cache-Control.
 * With `versionHeader` (`proxy.versionHeader`, off by default) the response also names the version
 * that served it (`stable` after a fail-safe from the candidate to `upstreamName`).
 */
export function applyDecisionHeaders(
  out: Record<string, string | string[]>,
  decision: Decision,
  facts: RequestFacts,
  versionHeader?: string,
  upstreamName?: string,
): void {
  if (versionHeader !== undefined) out[versionHeader] = servedVersion(decision, upstreamName);
  const vary = decision.vary;
  if (vary !== undefined) out.vary = mergeVary(out.vary, vary);
  const minted = facts.mintedAnonymousCookie;
  // A response that hands out an id cookie must never be served from a shared cache to others.
  if (decision.cachePrivate || minted !== undefined) out['cache-control'] = privateCacheControl(out['cache-control']);
  if (minted !== undefined) {
    const existing = out['set-cookie'];
    out['set-cookie'] = existing === undefined ? minted : typeof existing === 'string' ? [existing, minted] : [...existing, minted];
  }
}

/**
 * `private` plus the upstream's directives, minus those that address shared caches: `public`,
 * `s-maxage` and `proxy-revalidate` (RFC 9111 §5.2.2), and any earlier `private` (a qualified
 * `private="field"` would still let a shared cache store the rest).
 */
export function privateCacheControl(existing: string | string[] | undefined): string {
  if (existing === undefined) return 'private';
  const text = typeof existing === 'string' ? existing : existing.join(', ');
  let out = 'private';
  let start = 0;
  const length = text.length;
  while (start <= length) {
    let end = text.indexOf(',', start);
    if (end < 0) end = length;
    // A quoted value may hold a comma (`private="a, b"`): extend to the closing quote.
    const quote = text.indexOf('"', start);
    if (quote >= 0 && quote < end) {
      const close = text.indexOf('"', quote + 1);
      if (close > end) {
        end = text.indexOf(',', close);
        if (end < 0) end = length;
      }
    }
    const directive = text.slice(start, end).trim();
    start = end + 1;
    if (directive.length === 0) continue;
    const eq = directive.indexOf('=');
    const name = (eq < 0 ? directive : directive.slice(0, eq)).trim().toLowerCase();
    if (name === 'public' || name === 's-maxage' || name === 'proxy-revalidate' || name === 'private') continue;
    out += `, ${directive}`;
  }
  return out;
}
