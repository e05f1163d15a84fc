import { z } from 'zod';
import { formatIssues } from '../config/issues.js';
import { GraygateError } from '../errors.js';
import { DescribedFacts } from './described-facts.js';
import { bucketOf } from './hash.js';
import type { RoutingSnapshot, VersionName } from './snapshot.js';

const StringMap = z.record(z.string(), z.string());

/** A request to explain, in plain values: what the API and CLI will accept. */
export const RequestDescription = z.strictObject({
  method: z.string().min(1).optional(),
  host: z.string().optional(),
  path: z.string().regex(/^\//, { message: 'expected a path starting with "/"' }),
  headers: StringMap.optional(),
  cookies: StringMap.optional(),
  query: StringMap.optional(),
  clientIp: z.string().optional(),
  /** True to describe a request that came through a configured trusted proxy. */
  fromTrustedProxy: z.boolean().optional(),
});
export type RequestDescription = z.input<typeof RequestDescription>;

/** What one rule said about the request, in evaluation order. */
export interface ExplainedRule {
  readonly name: string;
  readonly to: string;
  readonly matched: boolean;
}

/** Why a request goes where it goes. */
export interface Explanation {
  readonly service: string;
  readonly version: VersionName;
  readonly upstream: string;
  /** What decided: a rule's name, `split`, `idle`, `full` or `no rule matched`. */
  readonly reason: string;
  /** The caller as identity resolution saw it; `source` is the kind (`header`, `anonymous`…). */
  readonly identity: { readonly source: string | undefined; readonly userId: string | undefined };
  /** Rules evaluated, in order, up to and including the one that decided (first match wins). */
  readonly rules: readonly ExplainedRule[];
  /** When the A/B/n split was consulted with an id: the caller's bucket (0..9999). */
  readonly splitBucket?: number;
  /** Cache headers the response would get: `Vary`, or `Cache-Control: private`. */
  readonly cache: { readonly vary: string | undefined; readonly private: boolean };
  /** The routing version explained. */
  readonly routingVersion: number;
}

/**
 * Explains where `snapshot` sends the described request and why, without side effects: the
 * identity is resolved as the data plane would (a token lookup may read the store and fill its
 * cache), but no anonymous id is minted; a returning anonymous cookie is recognized. Throws
 * `GG_EXPLAIN_INVALID` for a malformed description (naming the field) and `GG_NO_SERVICE` when
 * no service takes it.
 */
export async function explainRequest(snapshot: RoutingSnapshot, description: RequestDescription): Promise<Explanation> {
  const parsed = RequestDescription.safeParse(description, { reportInput: true });
  if (!parsed.success) throw new GraygateError('GG_EXPLAIN_INVALID', formatIssues(parsed.error).join('; '));
  const given = parsed.data;
  const facts = new DescribedFacts({
    ...(given.method !== undefined ? { method: given.method.toUpperCase() } : {}),
    ...(given.host !== undefined ? { host: given.host } : {}),
    path: given.path,
    ...(given.headers ? { headers: given.headers } : {}),
    ...(given.cookies ? { cookies: given.cookies } : {}),
    ...(given.query ? { query: given.query } : {}),
    // No address given is an unknown address: CIDR rules and the clientIp source see nothing.
    clientIp: given.clientIp ?? '',
    isFromTrustedProxy: given.fromTrustedProxy ?? false,
  });
  const service = snapshot.matchService(facts.host, facts.path);
  if (service === undefined) {
    throw new GraygateError('GG_NO_SERVICE', `no service matches host "${facts.host}" and path "${facts.path}"`);
  }
  const info = service.explain;
  if (service.needsIdentity) await info.resolveIdentityWithoutMinting(facts);
  const decision = service.decide(facts);

  const rules: ExplainedRule[] = [];
  for (const rule of info.rules) {
    const matched = rule.matches(facts);
    rules.push({ name: rule.decision.reason, to: rule.decision.version === 'stable' ? 'stable' : rule.decision.upstream, matched });
    if (matched) break;
  }
  const split = info.split;
  const userId = facts.userId;
  const splitBucket = split !== undefined && decision.reason === 'split' && !rules.some((rule) => rule.matched) && userId !== undefined ? bucketOf(userId, split.seed) : undefined;
  return {
    service: service.name,
    version: decision.version,
    upstream: decision.upstream,
    reason: decision.reason,
    identity: { source: facts.identitySource, userId },
    rules,
    ...(splitBucket !== undefined ? { splitBucket } : {}),
    cache: { vary: decision.vary, private: decision.cachePrivate },
    routingVersion: snapshot.version,
  };
}
