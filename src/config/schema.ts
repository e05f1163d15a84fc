import { z } from 'zod';
import { identitySources } from '../identity/index.js';
import { Cidr as CidrNetwork } from '../rules/cidr.js';
import { strategies } from '../rules/strategies/index.js';
import { AnalysisParams } from '../rollout/analysis/params.js';
import { HeaderName, ListenAddress, Milliseconds, Name } from './primitives.js';

/**
 * The one schema of graygate's configuration: the source of its TypeScript types, of validation
 * (files, store documents, API bodies) and of the reference in docs/config.md.
 *
 * The config has two parts:
 * - settings, read once at start (listen address, store, timeouts against slow clients);
 * - the routing document (upstreams, services with their releases, identity), which lives in the
 *   store, is versioned, and is applied live whenever it changes.
 * A config file holds both; with the embedded file store the routing document is read from the
 * same file by default, so editing the file changes routing live.
 *
 * Over 400 lines on purpose: it is one schema, and the types, validation and reference are
 * derived from it whole; splitting it would scatter one document's shape over files.
 */

// ---------------------------------------------------------------------------------------------
// Conditions and rules

/** Builds an object schema where exactly one of the given keys must be present. */
function exactlyOneOf<Shape extends z.ZodRawShape>(shape: Shape, what: string, keys = Object.keys(shape)) {
  return z.strictObject(shape).superRefine((value, ctx) => {
    const given = keys.filter((key) => (value as Record<string, unknown>)[key] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          given.length === 0
            ? `expected one ${what}: ${keys.join(', ')}`
            : `expected exactly one ${what}, got ${given.join(' and ')}`,
      });
    }
  });
}

type StrategyTable = typeof strategies;
type StrategyShape = { [K in keyof StrategyTable]: z.ZodOptional<StrategyTable[K]['schema']> };
const strategyShape = Object.fromEntries(
  Object.entries(strategies).map(([kind, strategy]) => [kind, strategy.schema.optional()]),
) as StrategyShape;

type StrategyConfigs = { [K in keyof StrategyTable]?: z.output<StrategyTable[K]['schema']> };

/** A condition: one strategy, or `all` / `any` / `not` of conditions. */
export type Condition = StrategyConfigs & {
  all?: Condition[];
  any?: Condition[];
  not?: Condition;
};

/** The keys of a condition: every strategy, plus all/any/not. Getters keep the recursion lazy. */
function conditionShape() {
  return {
    ...strategyShape,
    get all() {
      return z.array(Condition).min(1).optional().meta({ description: 'Matches when every condition matches.' });
    },
    get any() {
      return z.array(Condition).min(1).optional().meta({ description: 'Matches when at least one condition matches.' });
    },
    get not() {
      return Condition.optional().meta({ description: 'Matches when the condition does not.' });
    },
  };
}
const conditionKeys = Object.keys(conditionShape());

export const Condition: z.ZodType<Condition> = exactlyOneOf(conditionShape(), 'condition', conditionKeys).meta({
  id: 'Condition',
  description: 'One strategy, or all/any/not of conditions.',
}) as unknown as z.ZodType<Condition>;

/** Where a rule sends a match: `stable`, `candidate` (the one candidate), or a candidate's upstream name. */
export const RuleTarget = Name;

const ruleShape = {
  name: Name.optional().meta({ description: 'Shown in logs, metrics and explain; defaults to "rule N".' }),
  to: RuleTarget.default('candidate').meta({
    description:
      'Where a matching request goes: `candidate`, `stable`, or (with `candidates`) the upstream name of one candidate. ' +
      '`stable` makes a deny rule: matching callers never reach a candidate. With several candidates, `candidate` is ambiguous: name one.',
  }),
};

/** A rule: a condition (one strategy key, or all/any/not) and where a match goes. */
export const Rule = exactlyOneOf(
  Object.defineProperties({ ...ruleShape }, Object.getOwnPropertyDescriptors(conditionShape())) as typeof ruleShape &
    ReturnType<typeof conditionShape>,
  'condition',
  conditionKeys,
).meta({ description: 'A condition and where a match goes. The first matching rule decides.' });
export type Rule = z.output<typeof Rule>;

// ---------------------------------------------------------------------------------------------
// Routing document: upstreams, services, releases, identity

const ServerUrl = z.string().superRefine((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected a server URL like http://127.0.0.1:8080, got ${JSON.stringify(text)}` });
    return;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.addIssue({ code: 'custom', message: `expected an http:// or https:// URL, got ${JSON.stringify(text)}` });
  } else if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username) {
    ctx.addIssue({ code: 'custom', message: `a server is an origin (scheme, host, port) only, got ${JSON.stringify(text)}` });
  }
});

/** A file the gateway reads (PEM): an absolute path, or relative to the gateway's working directory. */
const PemFile = z.string().min(1, { message: 'expected a file path' });

/** RFC 1123 host name (letters, digits, hyphens, dots): what a certificate names and SNI carries. */
const TlsServerName = z
  .string()
  .regex(/^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/, {
    message: 'expected a DNS host name such as api.internal.example (no port, no IP address)',
  });

export const UpstreamTls = z
  .strictObject({
    ca: PemFile.optional().meta({
      description:
        "PEM file of the CA certificates this upstream's servers are verified against, instead of the system CAs (a private CA). " +
        "Absolute, or relative to the gateway's working directory; read when the routing document is applied.",
    }),
    serverName: TlsServerName.optional().meta({
      description:
        "Name sent as SNI and checked against the server's certificate. Default: the host of the server URL " +
        '(an IP address is checked against the certificate\'s IP entries and sends no SNI).',
    }),
    cert: PemFile.optional().meta({ description: 'PEM file of the client certificate (chain) presented to servers that ask for one (mTLS); needs `key`.' }),
    key: PemFile.optional().meta({ description: 'PEM file of the private key of `cert`.' }),
    verify: z.boolean().default(true).meta({
      description:
        'Verify server certificates (chain and name). `false` accepts any certificate: traffic is encrypted but not authenticated; ' +
        'the gateway logs a warning naming the upstream whenever it applies such a document. For tests only.',
    }),
  })
  .superRefine((tls, ctx) => {
    if ((tls.cert === undefined) !== (tls.key === undefined)) {
      ctx.addIssue({ code: 'custom', path: [tls.cert === undefined ? 'cert' : 'key'], message: 'a client certificate needs both cert and key' });
    }
  })
  .meta({ description: 'How https:// servers of the upstream are verified, and the client certificate offered to them. Default: verified against the system CAs.' });
export type UpstreamTls = z.output<typeof UpstreamTls>;

export const UpstreamProtocol = z.enum(['http1', 'h2', 'h2c']).meta({
  description:
    '`http1`: HTTP/1.1 with keep-alive. `h2`: HTTP/2 over TLS (https:// servers, ALPN h2). `h2c`: HTTP/2 without TLS by prior knowledge (http:// servers). ' +
    'gRPC needs `h2` or `h2c`: its status travels in trailers and its calls stream both ways.',
});
export type UpstreamProtocol = z.output<typeof UpstreamProtocol>;

export const Upstream = z
  .strictObject({
    servers: z.array(ServerUrl).min(1).meta({ description: 'Origins of the servers, e.g. http://10.0.0.5:8080. Requests are spread round robin.' }),
    protocol: UpstreamProtocol.default('http1'),
    tls: UpstreamTls.optional(),
    timeouts: z
      .strictObject({
        connectMs: Milliseconds.default(2_000).meta({ description: 'Time to open a connection to a server.' }),
        responseHeadersMs: Milliseconds.default(30_000).meta({ description: 'Time from sending the request to the response headers.' }),
        idleMs: Milliseconds.default(60_000).meta({ description: 'Longest silence while a response body streams.' }),
      })
      .prefault({})
      .meta({ description: 'Upstream timeouts; a timeout answers 504.' }),
    pool: z
      .strictObject({
        connections: z.number().int().min(1).max(10_000).default(128).meta({ description: 'Most connections kept per server.' }),
        idleTimeoutMs: Milliseconds.default(4_000).meta({
          description: "How long an idle pooled connection is kept; below Node's 5 s server keep-alive so graygate closes first.",
        }),
      })
      .prefault({})
      .meta({ description: 'Keep-alive connection pool per server.' }),
    health: z
      .strictObject({
        ejectAfterFailures: z.number().int().min(1).default(1).meta({ description: 'Consecutive connect failures after which a server is ejected.' }),
        ejectForMs: Milliseconds.default(10_000).meta({ description: 'How long an ejected server gets no requests.' }),
      })
      .prefault({})
      .meta({ description: 'Passive health: servers that refuse connections are ejected for a while.' }),
  })
  .superRefine((upstream, ctx) => {
    const schemes = upstream.servers.map((server) => (server.startsWith('https:') ? 'https' : 'http'));
    if (upstream.protocol === 'h2') {
      schemes.forEach((scheme, i) => {
        if (scheme !== 'https') ctx.addIssue({ code: 'custom', path: ['servers', i], message: 'protocol h2 runs over TLS: expected an https:// server (use protocol h2c for HTTP/2 without TLS)' });
      });
    } else if (upstream.protocol === 'h2c') {
      schemes.forEach((scheme, i) => {
        if (scheme !== 'http') ctx.addIssue({ code: 'custom', path: ['servers', i], message: 'protocol h2c is HTTP/2 without TLS: expected an http:// server (use protocol h2 for https://)' });
      });
    }
    if (upstream.tls !== undefined && !schemes.includes('https')) {
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls applies to https:// servers, and every server of this upstream is http://' });
    }
  })
  .meta({ description: 'A named group of servers.' });
export type Upstream = z.output<typeof Upstream>;

export const ReleaseState = z.enum(['idle', 'canary', 'full']).meta({
  description: '`idle`: everyone on stable. `canary`: the rules decide. `full`: everyone on the candidate.',
});
export type ReleaseState = z.output<typeof ReleaseState>;

/** How a shared cache is told that a response depended on the caller. */
export const CacheMode = z.enum(['vary', 'private']).meta({
  description:
    'When the version depended on the caller, `vary` adds `Vary` naming the request headers that decided (`*` for the client address); ' +
    '`private` sets `Cache-Control: private` instead (dropping `public`, `s-maxage` and `proxy-revalidate`), for caches that key poorly on Vary.',
});
export type CacheMode = z.output<typeof CacheMode>;

/** One candidate of an A/B/n release: its upstream and the share of callers the split sends it. */
export const WeightedCandidate = z
  .strictObject({
    upstream: Name.meta({ description: 'Upstream that serves this candidate version.' }),
    weight: z
      .number({ message: 'expected a number from 0 to 100' })
      .min(0, { message: 'weight is at least 0' })
      .max(100, { message: 'weight is at most 100' })
      .refine((weight) => Math.abs(weight * 100 - Math.round(weight * 100)) < 1e-6, { message: 'weight has at most two decimals (buckets are 0.01 %)' })
      .meta({ description: 'Percent of callers the split sends here, two decimals at most. 0: the split never sends anyone (rules naming it still do).' }),
  })
  .meta({ description: 'A candidate version and its share of the split.' });
export type WeightedCandidate = z.output<typeof WeightedCandidate>;

export const Release = z
  .strictObject({
    candidate: Name.optional().meta({ description: 'Upstream that serves the candidate version (one candidate; or use `candidates`).' }),
    candidates: z
      .array(WeightedCandidate)
      .min(1)
      .optional()
      .meta({
        description:
          'A/B/n: several candidate versions with weights (sum at most 100). Callers no rule decides are split among them by a sticky hash of ' +
          'their id (seeded apart from `percentage`); stable takes the rest. In `full`, exactly one candidate may have a weight above 0 (the winner).',
      }),
    state: ReleaseState.default('canary'),
    rules: z.array(Rule).default([]).meta({ description: 'Ordered rules; the first match decides; no match goes to the split (with `candidates`) or to stable.' }),
    cache: CacheMode.default('vary'),
  })
  .superRefine((release, ctx) => {
    if ((release.candidate === undefined) === (release.candidates === undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: release.candidate === undefined ? 'expected candidate (one upstream) or candidates (A/B/n)' : 'expected candidate or candidates, not both',
      });
    }
    if (release.candidates !== undefined) {
      const total = release.candidates.reduce((sum, c) => sum + Math.round(c.weight * 100), 0);
      if (total > 10_000) {
        ctx.addIssue({ code: 'custom', path: ['candidates'], message: `weights add up to ${total / 100}; at most 100 (stable takes the rest)` });
      }
    }
  })
  .meta({ description: 'The candidate version(s) of a service and the rules that send requests to them.' });
export type Release = z.output<typeof Release>;

// ---------------------------------------------------------------------------------------------
// Progressive rollout: a plan (written by people) and its run (written by graygate)

const Percent = z
  .number({ message: 'expected a number from 0 to 100' })
  .min(0, { message: 'percent is at least 0' })
  .max(100, { message: 'percent is at most 100' })
  .refine((percent) => Math.abs(percent * 100 - Math.round(percent * 100)) < 1e-6, { message: 'percent has at most two decimals (buckets are 0.01 %)' });

/** One step of a rollout plan: a percentage, a rule list, or a manual gate; and how long it holds. */
export const RolloutStep = exactlyOneOf(
  {
    percent: Percent.optional().meta({ description: 'A sticky percentage of identified callers on the candidate (the rule named `percentage`; the release\'s other rules stay).' }),
    rules: z.array(Rule).min(1).optional().meta({ description: 'The release\'s whole rule list during this step (any rule document).' }),
    gate: z.literal(true).optional().meta({ description: 'A manual gate: the rollout waits here, routing unchanged, until `graygate rollout promote`.' }),
    holdMs: Milliseconds.default(60_000).meta({
      description: 'How long the step runs before it may pass; analysis runs all along, and a failing candidate is rolled back at once, hold or not. Ignored by a gate.',
    }),
  },
  'step kind',
  ['percent', 'rules', 'gate'],
).meta({ description: 'One step: `percent` or `rules` (with `holdMs`), or `gate: true`.' });
export type RolloutStep = z.output<typeof RolloutStep>;


const CheckUrl = z.string().url({ message: 'expected an http:// or https:// URL' }).refine((url) => /^https?:\/\//.test(url), { message: 'expected an http:// or https:// URL' });

export const ExternalCheck = exactlyOneOf(
  {
    name: Name.optional().meta({ description: 'Shown in evidence and notifications; defaults to "check N".' }),
    prometheus: z
      .strictObject({
        url: CheckUrl.meta({ description: 'Prometheus base URL, e.g. http://prometheus:9090 (the query goes to /api/v1/query).' }),
        query: z.string().min(1).meta({ description: 'An instant query returning one number (a scalar, or a vector whose first sample is used).' }),
        op: z.enum(['<', '<=', '>', '>=', '==', '!=']).meta({ description: 'The condition the value must meet to pass: value OP threshold.' }),
        threshold: z.number().meta({ description: 'The number the value is compared with.' }),
      })
      .optional()
      .meta({ description: 'Passes when the query\'s value meets the condition; fails when it does not; a failed read or an empty answer is inconclusive.' }),
    webhook: z
      .strictObject({
        url: CheckUrl.meta({ description: 'Called with POST and a JSON body naming the service, candidate and step.' }),
      })
      .optional()
      .meta({ description: 'Passes on a 2xx answer; any other answer fails; no answer within the timeout is inconclusive.' }),
    timeoutMs: Milliseconds.min(1).default(5_000).meta({ description: 'How long one call may take; past it the check is inconclusive (never a pass).' }),
    everyMs: Milliseconds.min(100).default(10_000).meta({ description: 'How often the check is called during a step.' }),
  },
  'check kind',
  ['prometheus', 'webhook'],
).meta({ description: 'An external check: `prometheus` or `webhook`.' });
export type ExternalCheck = z.output<typeof ExternalCheck>;

export const RolloutPlan = z
  .strictObject({
    steps: z.array(RolloutStep).min(1).meta({ description: 'Ordered steps; each passes on its own analysis before the next starts.' }),
    end: z.enum(['full', 'stop']).default('full').meta({
      description: '`full`: after the last step the release goes to full (everyone on the candidate). `stop`: it stays at the last step, done, for a person to decide.',
    }),
    analysis: AnalysisParams.prefault({}).meta({ description: 'Judging the candidate against stable during every step, on graygate\'s own per-version figures (see docs/rollout.md).' }),
    checks: z.array(ExternalCheck).default([]).meta({ description: 'External checks, judged with the analysis at every step.' }),
    inconclusivePauseMs: Milliseconds.default(300_000).meta({
      description: 'How long past its hold an inconclusive step (too few samples, a check that cannot be read) waits before the rollout pauses for a person.',
    }),
    notify: z
      .strictObject({
        url: CheckUrl.meta({ description: 'Gets a JSON POST on every step, pause, promote, rollback and the end, with a Slack-compatible `text` field.' }),
        timeoutMs: Milliseconds.min(1).default(5_000).meta({ description: 'How long one notification may take.' }),
      })
      .optional()
      .meta({ description: 'A notification webhook (Slack incoming webhooks take it as is).' }),
  })
  .meta({ description: 'The progressive rollout plan of a service\'s releases: `graygate rollout start` runs it.' });
export type RolloutPlan = z.output<typeof RolloutPlan>;

/** One judged measure: what was measured, against which bound, on how many samples. */
export const RolloutEvidence = z
  .strictObject({
    metric: z.string().meta({ description: 'The check that judged: `samples`, `errors`, `latency-p50`, `latency-p99`, `figures`, or an external check\'s name.' }),
    outcome: z.enum(['pass', 'fail', 'inconclusive']),
    candidate: z.number().nullable().meta({ description: 'The candidate\'s value: a rate as a fraction, a latency in ms, a count (null: not measurable).' }),
    stable: z.number().nullable().meta({ description: 'Stable\'s value in the same window, when the check states it apart (else `detail` says it).' }),
    bound: z.number().nullable().meta({ description: 'The bound the candidate\'s value was held to (null: none).' }),
    samples: z.strictObject({ candidate: z.number().int().min(0), stable: z.number().int().min(0) }).meta({ description: 'Requests of each version the measure rests on.' }),
    detail: z.string().meta({ description: 'The judgement in a sentence.' }),
  })
  .meta({ description: 'One piece of evidence of a step.' });
export type RolloutEvidence = z.output<typeof RolloutEvidence>;

/** One entry of a rollout's record: a step begun or judged, a pause, a promote, the end. */
export const RolloutRecord = z
  .strictObject({
    at: z.string().meta({ description: 'ISO 8601 time.' }),
    step: z.number().int().min(0).meta({ description: 'Index into the plan\'s steps (0 is the first).' }),
    event: z.enum(['start', 'step', 'passed', 'promote', 'pause', 'resume', 'rollback', 'abort', 'done']),
    by: z.string().meta({ description: 'Who: `graygate` (the driver) or the admin token\'s name.' }),
    reason: z.string(),
    evidence: z.array(RolloutEvidence).default([]),
  })
  .meta({ description: 'One recorded event of a rollout.' });
export type RolloutRecord = z.output<typeof RolloutRecord>;

export const RolloutRun = z
  .strictObject({
    id: z.string().min(1).meta({ description: 'This run (a new start is a new run, beginning at step 0).' }),
    candidate: Name.meta({ description: 'The candidate upstream being rolled out.' }),
    status: z.enum(['running', 'paused', 'done', 'rolled-back', 'aborted']).meta({
      description: '`running`: steps advance on their analysis. `paused`: held for a person (`rollout resume`). `done`, `rolled-back`, `aborted`: ended.',
    }),
    step: z.number().int().min(0).meta({ description: 'The step in force (index into the plan\'s steps).' }),
    stepStartedAt: z.string().meta({ description: 'When the step in force began (its hold counts from here).' }),
    startedAt: z.string(),
    startedBy: z.string(),
    reason: z.string().meta({ description: 'Why the run is in its status (why it paused, rolled back, ended).' }),
    plan: RolloutPlan.meta({ description: 'The plan this run follows, fixed at start (a later edit of the service\'s plan applies to the next run).' }),
    records: z.array(RolloutRecord).default([]).meta({ description: 'Every step with its evidence, oldest first (the last 100 kept).' }),
  })
  .meta({ description: 'A rollout run, written by graygate (through the admin API and the driving gateway); do not edit by hand.' });
export type RolloutRun = z.output<typeof RolloutRun>;

const HostPattern = z
  .string()
  .regex(/^(\*\.)?[A-Za-z0-9.-]+$/, { message: 'expected a host name, optionally starting with "*." (no port)' })
  .transform((host) => host.toLowerCase());

const PathPrefix = z.string().regex(/^\/[^?#\s]*$/, { message: 'expected a path starting with "/" (no query)' });

export const Service = z
  .strictObject({
    name: Name,
    match: z
      .strictObject({
        host: HostPattern.optional().meta({ description: 'Host the request names (exact, or *.example.com for subdomains). Any host when absent.' }),
        pathPrefix: PathPrefix.default('/').meta({
          description: 'Path prefix, matched on whole segments: /api matches /api and /api/x, not /apix.',
        }),
      })
      .prefault({})
      .meta({ description: 'Which requests this service takes. The most specific match wins: exact host, then wildcard, then any; then the longest prefix.' }),
    stable: Name.meta({ description: 'Upstream that serves the stable version.' }),
    release: Release.optional(),
    rollout: RolloutPlan.optional().meta({ description: 'The progressive rollout plan for this service\'s releases (see docs/rollout.md).' }),
    rolloutRun: RolloutRun.optional().meta({ description: 'The current or last rollout run: written by graygate, shown by `graygate rollout status`.' }),
  })
  .meta({ description: 'What a request matches and which upstream is its stable version.' });
export type Service = z.output<typeof Service>;

type IdentityTable = typeof identitySources;
const identitySourceShape = Object.fromEntries(
  Object.entries(identitySources).map(([kind, source]) => [kind, source.schema.optional()]),
) as { [K in keyof IdentityTable]: z.ZodOptional<IdentityTable[K]['schema']> };

export const IdentitySourceConfig = exactlyOneOf(identitySourceShape, 'identity source').meta({
  description: 'One identity source, e.g. {header: {name: x-user-id}}.',
});
export type IdentitySourceConfig = z.output<typeof IdentitySourceConfig>;

/** The anonymous sticky id: a random id in a cookie for callers no identity source knows. */
export const AnonymousCookie = z
  .strictObject({
    enabled: z.boolean().default(true).meta({ description: 'Give anonymous callers a random id when a rule needs an identity.' }),
    name: z
      .string()
      .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { message: 'expected a cookie name (token characters)' })
      .default('gg_anon')
      .meta({ description: 'Cookie holding the anonymous id.' }),
    maxAgeDays: z
      .number()
      .int()
      .min(1)
      .max(400, { message: 'browsers keep a cookie at most 400 days' })
      .default(365)
      .meta({ description: 'Cookie lifetime; longer than any release, so a caller keeps its version from start to finish.' }),
    sameSite: z.enum(['Lax', 'Strict', 'None']).default('Lax').meta({ description: 'SameSite attribute; `None` always adds `Secure` (browsers require it).' }),
  })
  .meta({
    description:
      'When a service needs the caller\'s identity and no source yields one, the caller gets a random id in this cookie (Path=/, HttpOnly, ' +
      'Secure on TLS or X-Forwarded-Proto https from a trusted proxy); it is then an identity of kind `anonymous`, tried after the sources. ' +
      'The id only feeds the hash: 10 % stays 10 %. A response that sets it is made `Cache-Control: private`.',
  });
export type AnonymousCookie = z.output<typeof AnonymousCookie>;

export const Identity = z
  .strictObject({
    sources: z.array(IdentitySourceConfig).default([]).meta({ description: 'Tried in order; the first that yields an id wins.' }),
    anonymousCookie: AnonymousCookie.optional(),
  })
  .meta({ description: 'How the gateway learns who the caller is.' });
export type Identity = z.output<typeof Identity>;

/** The dynamic part: kept in the store, versioned, applied live. */
export const RoutingDocument = z
  .strictObject({
    upstreams: z.record(Name, Upstream).meta({ description: 'Upstreams by name.' }),
    services: z.array(Service).meta({ description: 'Services; each request goes to the one that matches it most specifically.' }),
    identity: Identity.prefault({}),
  })
  .meta({ description: 'The routing document: applied live whenever it changes in the store.' });
export type RoutingDocument = z.output<typeof RoutingDocument>;
export const routingKeys = Object.keys(RoutingDocument.shape) as (keyof RoutingDocument)[];

// ---------------------------------------------------------------------------------------------
// Settings: read once at start

export const FileStoreSettings = z
  .strictObject({
    kind: z.literal('file'),
    path: z.string().min(1).optional().meta({ description: 'File holding the routing document. Default: the config file itself.' }),
    historyDir: z.string().min(1).optional().meta({ description: 'Directory for the version history. Default: `<path>.history` beside the file.' }),
    historyLimit: z.number().int().min(1).default(200).meta({ description: 'Versions kept in history; the oldest are removed.' }),
    pollMs: Milliseconds.default(2_000).meta({ description: 'Backstop poll of the file, in case a change notification is missed.' }),
  })
  .meta({ description: 'The embedded store: one file, watched; history in a directory beside it.' });
export type FileStoreSettings = z.output<typeof FileStoreSettings>;

export const RedisStoreSettings = z
  .strictObject({
    kind: z.literal('redis'),
    url: z
      .string()
      .regex(/^(rediss?|redis\+sentinel|redis\+cluster):\/\/\S+$/, {
        message:
          'expected redis://[:password@]host:port[/db], rediss://… (TLS), redis+sentinel://host:port[,host:port]/masterName[/db] or redis+cluster://host:port[,host:port]',
      })
      .meta({
        description:
          'Where Redis is. `redis://[user:password@]host:port[/db]` standalone; `rediss://…` the same over TLS; ' +
          '`redis+sentinel://[:password@]host:port[,host:port…]/masterName[/db]` via Sentinel (the password is the data nodes\'; ' +
          'add `?sentinelPassword=…` for the sentinels); `redis+cluster://[:password@]host:port[,host:port…]` a Redis Cluster (seed nodes).',
      }),
    namespace: z
      .string()
      .regex(/^[A-Za-z0-9._:-]{1,64}$/, { message: 'expected 1-64 letters, digits, ".", "_", ":" or "-"' })
      .default('graygate')
      .meta({
        description:
          'Key prefix. Keys are `{namespace}:doc`, `{namespace}:version`, `{namespace}:history`, channel `{namespace}:changes`; the braces are a Cluster hash tag, so one document\'s keys live in one slot.',
      }),
    pollMs: Milliseconds.min(50).default(2_000).meta({ description: 'Backstop poll of the version key, in case a change notification is missed.' }),
    historyLimit: z.number().int().min(1).default(200).meta({ description: 'Versions kept in history; the oldest are removed.' }),
    commandTimeoutMs: Milliseconds.min(1).default(2_000).meta({
      description: 'Deadline for reads and writes of the routing document; past it the store reports itself unavailable (routing stays as it is).',
    }),
    lastGoodPath: z.string().min(1).optional().meta({
      description:
        'File where the last applied routing document is kept, so a gateway started while Redis is down serves its last good rules. ' +
        'Default: `<config file>.last-good.json`, or `graygate.last-good.json` in the working directory without a config file.',
    }),
    pingMs: Milliseconds.min(50).default(1_000).meta({
      description: 'The change subscriber is pinged this often; no reply within the same time and it is reconnected (half-open sockets).',
    }),
  })
  .meta({ description: 'Redis (standalone, Sentinel or Cluster): for fleets; changes reach every gateway by pub/sub, with a poll as backstop.' });
export type RedisStoreSettings = z.output<typeof RedisStoreSettings>;

export const StoreSettings = z.discriminatedUnion('kind', [FileStoreSettings, RedisStoreSettings]).meta({ description: 'Where the routing document lives.' });
export type StoreSettings = z.output<typeof StoreSettings>;

export const ProxySettings = z
  .strictObject({
    clientHeadersTimeoutMs: Milliseconds.default(10_000).meta({ description: 'A client must send its request headers within this time (slowloris guard).' }),
    clientRequestTimeoutMs: Milliseconds.default(300_000).meta({ description: 'A client must send its whole request within this time; 0 disables.' }),
    keepAliveTimeoutMs: Milliseconds.default(5_000).meta({ description: 'How long an idle client connection is kept open.' }),
    shutdownGraceMs: Milliseconds.default(30_000).meta({ description: 'On SIGTERM/SIGINT, in-flight requests get this long to finish.' }),
    preserveHost: z.boolean().default(true).meta({ description: 'Send the client Host header upstream (false: the server origin host).' }),
    versionHeader: HeaderName.optional().meta({
      description:
        'For debugging: a response header (e.g. `x-graygate-version`) naming the version that served the request, `stable` or `candidate`. ' +
        'Off by default: it tells every caller whether they are in a canary.',
    }),
  })
  .meta({ description: 'Behaviour of the proxy towards clients.' });
export type ProxySettings = z.output<typeof ProxySettings>;

const Cidr = z.string().regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, { message: 'expected an IP address or CIDR like 10.0.0.0/8' });

/**
 * PROXY protocol (v1 and v2) on the proxy listener: an L4 load balancer in front says who the
 * client is, so client-IP rules and X-Forwarded-For see the client, not the load balancer.
 */
export const ProxyProtocolSettings = z
  .strictObject({
    trustedFrom: z
      .array(CidrNetwork)
      .min(1, { message: 'give the load balancers\' addresses or networks (e.g. 10.0.0.0/8): only they may send a PROXY header' })
      .meta({
        description:
          'Peers (CIDRs) that may send a PROXY header: the load balancers. From them a header is required (a connection without one is closed); ' +
          'any other peer is served as itself, and closed if it sends a header.',
      }),
    headerTimeoutMs: Milliseconds.min(1)
      .max(60_000)
      .default(5_000)
      .meta({ description: 'A connection must deliver its whole PROXY header (or, from other peers, its first bytes) within this time, else it is closed.' }),
  })
  .meta({ description: 'Read a PROXY protocol header (v1 or v2) on each connection to the proxy listener. Node runtime only.' });
export type ProxyProtocolSettings = z.output<typeof ProxyProtocolSettings>;

/** A named bearer token of the admin API; its name is the actor recorded for each write. */
export const AdminToken = z
  .strictObject({
    name: Name.meta({ description: 'Who holds the token: recorded as the actor of every write made with it.' }),
    token: z.string().min(16, { message: 'a token is at least 16 characters' }).optional().meta({ description: 'The token itself (prefer tokenEnv: config files get copied).' }),
    tokenEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: 'expected an environment variable name' })
      .optional()
      .meta({ description: 'Name of the environment variable holding the token (read at start; at least 16 characters).' }),
  })
  .superRefine((token, ctx) => {
    if ((token.token === undefined) === (token.tokenEnv === undefined)) {
      ctx.addIssue({ code: 'custom', message: token.token === undefined ? 'expected token or tokenEnv' : 'expected token or tokenEnv, not both' });
    }
  })
  .meta({ description: 'A named bearer token: `Authorization: Bearer <token>`.' });
export type AdminToken = z.output<typeof AdminToken>;

const isLoopbackHost = (host: string) => host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);

export const AdminSettings = z
  .strictObject({
    listen: ListenAddress.prefault('127.0.0.1:9901').meta({ description: 'Where the admin API listens: host:port or a port (host defaults to 127.0.0.1).' }),
    tokens: z.array(AdminToken).default([]).meta({
      description: 'Bearer tokens allowed to use the admin API. With none, the API takes requests without a token and may only listen on loopback.',
    }),
    bodyLimitBytes: z.number().int().min(1_024).max(64 * 1024 * 1024).default(1024 * 1024).meta({ description: 'Largest request body; larger ones are refused with 413.' }),
  })
  .superRefine((admin, ctx) => {
    if (admin.tokens.length === 0 && !isLoopbackHost(admin.listen.host)) {
      ctx.addIssue({
        code: 'custom',
        path: ['tokens'],
        message: `the admin API would listen on ${admin.listen.host} without a token; add tokens, or listen on 127.0.0.1`,
      });
    }
    const seen = new Set<string>();
    admin.tokens.forEach((token, i) => {
      if (seen.has(token.name)) ctx.addIssue({ code: 'custom', path: ['tokens', i, 'name'], message: `token name "${token.name}" is used twice` });
      seen.add(token.name);
    });
  })
  .meta({ description: 'The admin HTTP API (and the CLI that drives it): its own listener, loopback by default, bearer tokens.' });
export type AdminSettings = z.output<typeof AdminSettings>;

const LogLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

export const AccessLogSettings = z
  .strictObject({
    enabled: z.boolean().default(true).meta({
      description:
        'One line per request: service, version, upstream, server, the rule that decided, identity source (never its value), status, bytes, duration, method, path without the query. ' +
        'On by default, as a proxy\'s access log is where an operator looks first; `sample` thins it under load.',
    }),
    sample: z.number().min(0).max(1).default(1).meta({ description: 'Share of requests logged, 0..1 (0.01: one in a hundred, at random). Metrics count every request regardless.' }),
    level: LogLevel.exclude(['silent']).default('info').meta({ description: 'Level the lines are written at; nothing is written when it is below `log.level`.' }),
  })
  .meta({ description: 'The access log.' });
export type AccessLogSettings = z.output<typeof AccessLogSettings>;

/**
 * TLS 1.2 suites of Mozilla's "intermediate" profile that have forward secrecy and AEAD, and the
 * three TLS 1.3 suites. Node takes both kinds from one list, and a list without `TLS_` names would
 * turn TLS 1.3 off, so they are all spelled out.
 */
export const DEFAULT_TLS_CIPHERS =
  'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:' +
  'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:' +
  'ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305';

const ServerName = z
  .string()
  .regex(/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, {
    message: 'expected a server name like shop.example.com, or *.example.com for its subdomains',
  })
  .transform((name) => name.toLowerCase());

export const TlsCertificate = z
  .strictObject({
    cert: z.string().min(1).meta({ description: 'PEM file: the certificate, followed by its intermediates (the chain clients need).' }),
    key: z.string().min(1).meta({ description: 'PEM file: the private key of `cert` (not encrypted).' }),
    names: z.array(ServerName).min(1).optional().meta({
      description:
        'Server names (SNI) this certificate is served for: exact (`shop.example.com`) or one label of wildcard (`*.example.com`). ' +
        'Default: the DNS names the certificate itself lists (subjectAltName, else its CN), read again on every reload.',
    }),
  })
  .meta({ description: 'A certificate and its key. Relative paths are relative to the config file.' });
export type TlsCertificate = z.output<typeof TlsCertificate>;

export const Http2Settings = z
  .strictObject({
    enabled: z.boolean().default(true).meta({ description: 'Offer HTTP/2 by ALPN (`h2`); HTTP/1.1 is always accepted on the same port.' }),
    maxConcurrentStreams: z.number().int().min(1).max(10_000).default(128).meta({
      description: 'Streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused.',
    }),
    maxHeaderListBytes: z.number().int().min(1_024).max(1024 * 1024).default(32 * 1024).meta({
      description: 'Largest request header list (names, values and 32 bytes per field, as HTTP/2 counts it); a larger one resets the stream.',
    }),
  })
  .meta({ description: 'HTTP/2 to clients on the TLS listener.' });
export type Http2Settings = z.output<typeof Http2Settings>;

export const TlsSettings = z
  .strictObject({
    listen: ListenAddress.meta({ description: 'Where the TLS listener listens: host:port or a port (host defaults to 127.0.0.1).' }),
    certificates: z.array(TlsCertificate).min(1).meta({
      description:
        'Certificates, chosen per connection by the server name the client asks for (exact names first, then wildcards); ' +
        'the first one is served when none matches or the client sends no name. The files are watched: a changed pair is loaded for new connections, ' +
        'open ones keep theirs, and a broken or mismatched pair is refused (logged, naming the file) while the previous one stays.',
    }),
    minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').meta({ description: 'Oldest TLS version accepted.' }),
    ciphers: z.string().min(1).default(DEFAULT_TLS_CIPHERS).meta({
      description: 'OpenSSL cipher list, TLS 1.3 suites (`TLS_…`) included; the default keeps forward-secret AEAD suites only.',
    }),
    clientCertificates: z
      .strictObject({
        ca: z.string().min(1).meta({ description: 'PEM file of the CA certificates that client certificates must chain to (watched like the certificates).' }),
        mode: z.enum(['required', 'optional']).default('required').meta({
          description: '`required`: a client without a valid certificate is refused in the handshake. `optional`: a client may send none, but one it sends must be valid.',
        }),
      })
      .optional()
      .meta({ description: 'Verify client certificates (mutual TLS).' }),
    watchMs: Milliseconds.min(100).default(1_000).meta({
      description: 'How often the certificate, key and CA files are checked for a change (besides file-system events, which can be missed).',
    }),
    http2: Http2Settings.prefault({}),
  })
  .meta({ description: 'A TLS listener (HTTP/1.1 and HTTP/2), on its own address; the plain `listen` stays unless it is `off`.' });
export type TlsSettings = z.output<typeof TlsSettings>;

/** The plain listener's address, or `off` (`false`) for none: TLS only. */
const PlainListen = z.union([z.literal('off'), z.literal(false), ListenAddress]).transform((value) => (value === 'off' || value === false ? null : value));

export const IdentitySampleSettings = z
  .strictObject({
    enabled: z.boolean().default(true).meta({
      description:
        'Keep a bounded sample of the callers each process served recently, so `graygate diff --impact` can say how many would change version before a change is applied. ' +
        'In process memory only: never stored, logged, exported or answered; only counts leave the process.',
    }),
    windowMs: Milliseconds.min(10_000).max(24 * 60 * 60_000).default(15 * 60_000).meta({ description: 'Callers not seen for this long leave the sample.' }),
    maxPerService: z.number().int().min(1).max(1_000_000).default(10_000).meta({
      description: 'Distinct callers kept per service and process at most; past it, new callers replace sampled ones at random (a uniform sample).',
    }),
  })
  .meta({ description: 'The recent-identity sample the impact of a routing change is counted on.' });
export type IdentitySampleSettings = z.output<typeof IdentitySampleSettings>;

export const Settings = z
  .strictObject({
  listen: PlainListen.prefault(8080).meta({
    description: 'Where the plain HTTP listener listens: host:port or a port (host defaults to 127.0.0.1); `off` for none (then `tls` is the only listener).',
  }),
  tls: TlsSettings.optional().meta({ description: 'Serve TLS (and HTTP/2) on a listener of its own.' }),
  trustedProxies: z.array(Cidr).default([]).meta({
    description: 'Peers (CIDRs) whose X-Forwarded-* headers are believed and appended to; from others they are replaced.',
  }),
  proxyProtocol: ProxyProtocolSettings.optional().meta({
    description: 'PROXY protocol on the proxy listener, for a gateway behind an L4 load balancer (HAProxy, nginx stream, AWS NLB). Off when absent.',
  }),
  proxy: ProxySettings.prefault({}),
  admin: AdminSettings.optional().meta({ description: 'Starts the admin API when present (`admin: {}` for the defaults).' }),
  store: StoreSettings.default({ kind: 'file', historyLimit: 200, pollMs: 2_000 }),
  identitySample: IdentitySampleSettings.prefault({}),
  log: z
    .strictObject({
      level: LogLevel.default('info').meta({ description: 'Lowest level written.' }),
      format: z.enum(['json', 'pretty', 'auto']).default('auto').meta({
        description: '`json`: one JSON object per line (pino). `pretty`: human-readable, for a terminal (pino-pretty). `auto`: pretty when stdout is a terminal, else JSON.',
      }),
      access: AccessLogSettings.prefault({}),
    })
    .prefault({})
    .meta({ description: 'Logging (on stdout).' }),
  })
  .superRefine((settings, ctx) => {
    if (settings.listen === null && settings.tls === undefined) {
      ctx.addIssue({ code: 'custom', path: ['listen'], message: 'the plain listener is off and there is no tls listener: nothing would take requests' });
    }
    const plain = settings.listen;
    const tls = settings.tls?.listen;
    if (plain && tls && plain.port !== 0 && plain.port === tls.port && (plain.host === tls.host || plain.host === '0.0.0.0' || tls.host === '0.0.0.0' || plain.host === '::' || tls.host === '::')) {
      ctx.addIssue({ code: 'custom', path: ['tls', 'listen'], message: `the tls listener and the plain listener both want port ${tls.port}; give each its own` });
    }
  });
export type Settings = z.output<typeof Settings>;

/** A whole config file: settings, plus the routing document when the file store reads it. */
export const ConfigFile = z
  .strictObject({
    ...Settings.shape,
    upstreams: RoutingDocument.shape.upstreams.optional(),
    services: RoutingDocument.shape.services.optional(),
    identity: RoutingDocument.shape.identity.optional(),
  })
  .meta({ description: 'A graygate config file (YAML or JSON).' });
export type ConfigFile = z.output<typeof ConfigFile>;
