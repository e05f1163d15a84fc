/**
 * The normalized form: what graygate hands the OpenResty data plane instead of the routing
 * document. graygate validates and compiles the document first, then writes out everything the
 * Lua evaluator needs already decided: resolved store values (`Grayscale_Range`), sorted ranges,
 * bucket cuts and hash seeds, CIDR masks, regular expressions translated to PCRE, and every
 * Decision with its `Vary` / `private` fixed. Lua checks nothing in it: a form graygate did not
 * emit is never handed to Lua.
 *
 * JSON rules of the form (it is decoded by lua-cjson): an absent value is left out, never `null`
 * (cjson turns null into a truthy sentinel); integers are exact (safe integers only); 32-bit words
 * (hash seeds, CIDR words and masks) are signed int32, as LuaJIT's `bit` library returns them.
 * Strings are UTF-8 of the JavaScript string (config strings that no request value can ever
 * equal, such as ones with a lone surrogate, are dropped or turned into `never` by normalize).
 *
 * This file is the contract shared by the TypeScript side and openresty/graygate/*.lua; the
 * field-by-field reference is docs/openresty.md.
 */

/** The `format` of a normalized routing form; bumped on any change Lua must know about. */
export const FORM_FORMAT = 'graygate-openresty/1';
/** The `format` of the normalized gateway settings. */
export const SETTINGS_FORMAT = 'graygate-openresty-settings/1';

/** A Decision as the data plane returns it; fixed at normalize time, shared by every request. */
export interface FormDecision {
  readonly version: 'stable' | 'candidate';
  /** Upstream name to forward to. */
  readonly upstream: string;
  /** What decided: a rule's name (`rule 2` when unnamed), `split`, `idle`, `full` or `no rule matched`. */
  readonly reason: string;
  /** True when the version depended on the caller. */
  readonly dependsOnCaller: boolean;
  /** `Vary` the response must carry (release `cache: vary`); absent when none. */
  readonly vary?: string;
  /** True when the response must be `Cache-Control: private` (release `cache: private`). */
  readonly private: boolean;
}

/** A value test of the header, cookie and query strategies: exactly one of its fields is set. */
export interface FormValueTest {
  /** The header (lower case), cookie or query parameter name. */
  readonly name: string;
  readonly present?: true;
  readonly equals?: string;
  /** Non-empty; a set in Lua. */
  readonly oneOf?: readonly string[];
  readonly prefix?: string;
  /** A PCRE pattern for `ngx.re.find(value, regex, "jou")`, translated from the JavaScript one so both match the same values. */
  readonly regex?: string;
}

/** A condition, discriminated by `kind`. */
export type FormCondition =
  | { readonly kind: 'all' | 'any'; readonly of: readonly FormCondition[] }
  | { readonly kind: 'not'; readonly of: FormCondition }
  /** Matches no request (e.g. a range read from a store key that is absent). */
  | { readonly kind: 'never' }
  /** Numeric user id in one of the inclusive ranges; `from` sorted ascending, ranges disjoint. */
  | { readonly kind: 'uidRange'; readonly from: readonly number[]; readonly to: readonly number[] }
  /** User id (canonical string) in the set. */
  | { readonly kind: 'uidList'; readonly ids: readonly string[] }
  /** `abs(numeric user id) % modulo` in `remainders`. */
  | { readonly kind: 'uidModulo'; readonly modulo: number; readonly remainders: readonly number[] }
  /**
   * Sticky percentage: `cut` 0 matches nobody, 10000 every caller with a non-empty id, else
   * `murmur3(utf8(userId), seed) % 10000 < cut` for a non-empty id.
   */
  | { readonly kind: 'percentage'; readonly cut: number; readonly seed: number }
  | ({ readonly kind: 'header' | 'cookie' | 'query' } & FormValueTest)
  /** Client IP in a network: `v4` holds pairs [net, mask] of the IPv4 word, `v6` groups of 8 (4 net words, 4 mask words) of the mapped 128-bit form. */
  | { readonly kind: 'cidr'; readonly v4: readonly number[]; readonly v6: readonly number[] }
  /** The gateway's clock (ms since the epoch) in [fromMs, toMs); an absent bound is open. */
  | { readonly kind: 'timeWindow'; readonly fromMs?: number; readonly toMs?: number };

export interface FormRule {
  readonly when: FormCondition;
  readonly decision: FormDecision;
}

/** The A/B/n split: a caller no rule decided with a non-empty id takes bucket `murmur3(utf8(userId), seed) % 10000`. */
export interface FormSplit {
  readonly seed: number;
  /** Candidate i takes buckets [from[i], to[i]); only candidates with a weight above 0 are listed. */
  readonly from: readonly number[];
  readonly to: readonly number[];
  readonly decisions: readonly FormDecision[];
  /** A bucket no candidate takes. */
  readonly stable: FormDecision;
}

export interface FormService {
  readonly name: string;
  /** Exact host (lower case) or `*.suffix`; absent: any host. */
  readonly host?: string;
  /** Normalized path prefix (`/` or without a trailing slash), matched on whole segments. */
  readonly pathPrefix: string;
  /** Upstream name of the stable version. */
  readonly stable: string;
  /** Candidate upstream names in config order (empty without a release). */
  readonly candidates: readonly string[];
  /** The decision when the candidate cannot take a request (fail safe), and of an idle release. */
  readonly stableDecision: FormDecision;
  /** Set for a service without a release, or an idle or full one: every request gets it, nothing is evaluated. */
  readonly fixed?: FormDecision;
  /** True when deciding reads the caller's identity, so identity runs first (and mints the anonymous id when configured). */
  readonly needsIdentity: boolean;
  /** Rules in order (canary only); the first that matches decides. */
  readonly rules: readonly FormRule[];
  /** No rule matched and no split (or no id for the split). */
  readonly noMatch: FormDecision;
  readonly split?: FormSplit;
}

/** One identity source, tried in order; `label` is what `identity_source` is set to (never a value). */
export type FormIdentitySource =
  | { readonly kind: 'header'; readonly label: string; readonly name: string; readonly trustedProxiesOnly: boolean }
  | { readonly kind: 'cookie' | 'query'; readonly label: string; readonly name: string }
  | { readonly kind: 'clientIp'; readonly label: string }
  | {
      readonly kind: 'tokenLookup';
      readonly label: string;
      /** Request header carrying the token (lower case). */
      readonly header: string;
      /** Store key = keyPrefix .. token .. keySuffix (the config's keyTemplate around `{token}`). */
      readonly keyPrefix: string;
      readonly keySuffix: string;
      readonly cacheTtlMs: number;
      readonly negativeTtlMs: number;
      readonly maxStaleMs: number;
      readonly cacheMax: number;
      readonly deadlineMs: number;
      readonly maxTokenLength: number;
    };

export interface FormAnonymousCookie {
  readonly name: string;
  /** `Set-Cookie` = name=<id> .. plainSuffix, or .. secureSuffix on TLS (or https per a trusted proxy's X-Forwarded-Proto). */
  readonly plainSuffix: string;
  readonly secureSuffix: string;
}

export interface FormIdentity {
  readonly sources: readonly FormIdentitySource[];
  readonly anonymousCookie?: FormAnonymousCookie;
}

export interface FormServer {
  /** `http://host:port` as configured (origin). */
  readonly origin: string;
  readonly scheme: 'http' | 'https';
  /** Host name or address (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
}

export interface FormUpstream {
  readonly servers: readonly FormServer[];
  readonly timeouts: { readonly connectMs: number; readonly responseHeadersMs: number; readonly idleMs: number };
  readonly pool: { readonly connections: number; readonly idleTimeoutMs: number };
  readonly health: { readonly ejectAfterFailures: number; readonly ejectForMs: number };
}

/** The normalized routing form of one document version. */
export interface NormalizedForm {
  readonly format: typeof FORM_FORMAT;
  /** The routing document's store version. */
  readonly version: number;
  /** The store epoch of that version, when the store has one. */
  readonly epoch?: string;
  readonly upstreams: Readonly<Record<string, FormUpstream>>;
  /** Services in document order (Lua builds the host/prefix tables from them). */
  readonly services: readonly FormService[];
  readonly identity: FormIdentity;
}

/** Per-gateway settings the evaluator reads (from graygate's settings, not the routing document). */
export interface NormalizedSettings {
  readonly format: typeof SETTINGS_FORMAT;
  /** Trusted proxies as CIDR words, the same layout as a `cidr` condition. */
  readonly trustedProxies: { readonly v4: readonly number[]; readonly v6: readonly number[] };
  /** `proxy.versionHeader` (lower case), when set. */
  readonly versionHeader?: string;
}
