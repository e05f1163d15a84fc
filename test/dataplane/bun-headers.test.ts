import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyDecisionHeadersTo, headerList, stripHopByHop } from '../../src/dataplane/bun/headers.js';
import { applyDecisionHeaders } from '../../src/dataplane/decision-headers.js';
import { buildClientResponseHeaders } from '../../src/dataplane/headers.js';
import type { Decision } from '../../src/rules/snapshot.js';
import { decision } from '../helpers/decision.js';
import { makeFacts } from '../helpers/facts.js';

// The Bun adapter applies the shared header rules to Headers in place instead of rebuilding them;
// these tests hold it to the shared functions on the same input, so the rules stay in one place.


/** A Headers as the record buildClientResponseHeaders takes (Set-Cookie as an array, as undici parses it). */
function record(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  headers.forEach((value, name) => {
    if (name !== 'set-cookie') out[name] = value;
  });
  const cookies = headers.getSetCookie();
  if (cookies.length > 0) out['set-cookie'] = cookies;
  return out;
}

/** Headers from a record, the way the Bun adapter used to build the client's headers. */
function fromRecord(out: Record<string, string | string[]>): Headers {
  const headers = new Headers();
  for (const name in out) {
    const value = out[name]!;
    if (typeof value === 'string') headers.set(name, value);
    else for (const item of value) headers.append(name, item);
  }
  return headers;
}

const entries = (headers: Headers) => [...headers].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

const name = fc.constantFrom('connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'x-secret', 'x-kept', 'vary', 'cache-control', 'set-cookie', 'content-type', 'content-length');
const value = fc.constantFrom('1', 'x-secret', 'close, x-secret', 'keep-alive', 'Accept-Encoding', 'public, max-age=60', 'a=1', 'x-kept, Vary');
const upstreamHeaders = fc.array(fc.tuple(name, value), { maxLength: 8 }).map((pairs) => {
  const headers = new Headers();
  for (const [n, v] of pairs) headers.append(n, v);
  return headers;
});

describe('the Bun adapter header helpers', () => {
  it('headerList lists a toJSON-style record as name/value pairs, one per Set-Cookie', () => {
    expect(headerList({ host: 'a', 'x-a': '1, 2', 'set-cookie': ['a=1', 'b=2'] })).toEqual(['host', 'a', 'x-a', '1, 2', 'set-cookie', 'a=1', 'set-cookie', 'b=2']);
  });

  it('stripHopByHop leaves what buildClientResponseHeaders keeps (property)', () => {
    fc.assert(
      fc.property(upstreamHeaders, (headers) => {
        const expected = fromRecord(buildClientResponseHeaders(record(headers)));
        stripHopByHop(headers);
        expect(entries(headers)).toEqual(entries(expected));
      }),
    );
  });

  it('applyDecisionHeadersTo writes what applyDecisionHeaders writes (property)', () => {
    const decisions = fc.record({
      vary: fc.constantFrom(undefined, 'x-user-id', 'cookie'),
      cachePrivate: fc.boolean(),
      minted: fc.constantFrom(undefined, 'gg_anon=abc; Path=/'),
      versionHeader: fc.constantFrom(undefined, 'x-served-by'),
    });
    fc.assert(
      fc.property(upstreamHeaders, decisions, (headers, d) => {
        stripHopByHop(headers);
        const facts = makeFacts({});
        facts.mintedAnonymousCookie = d.minted;
        const chosen = decision({ vary: d.vary, cachePrivate: d.cachePrivate });
        const out = record(headers);
        applyDecisionHeaders(out, chosen, facts, d.versionHeader, 'v2');
        applyDecisionHeadersTo(headers, chosen, facts, d.versionHeader, 'v2');
        expect(entries(headers)).toEqual(entries(fromRecord(out)));
      }),
    );
  });
});
