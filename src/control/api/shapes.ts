import { z } from 'zod';
import { Name } from '../../config/primitives.js';
import { CacheMode, Release, ReleaseState, RolloutEvidence, RolloutPlan, RolloutRun, RoutingDocument, Rule, Service, Upstream, WeightedCandidate } from '../../config/schema.js';
import { RequestDescription } from '../../rules/explain.js';

/**
 * Request and response shapes of the admin API, built from the one config schema
 * (src/config/schema.ts): the API validates with them and the OpenAPI document is generated
 * from them, so nothing here mirrors the config by hand.
 */

export const Reason = z.string().trim().min(1, { message: 'required: say why (it is kept in the history)' }).max(500).meta({ description: 'Why: kept in the history with the actor and the time.' });
export const VersionPrecondition = z
  .number({ message: 'expected the version number you read' })
  .int()
  .min(0)
  .meta({ description: 'The version you read (or send If-Match: "N"); a different current version refuses the write with 409.' });

const writeShape = { reason: Reason, version: VersionPrecondition.optional() };

export const ConfigPutBody = z.strictObject({ ...writeShape, document: RoutingDocument }).meta({ description: 'Replace the whole routing document.' });
export const ServicePutBody = z.strictObject({ ...writeShape, service: Service.extend({ name: Name.optional() }).meta({ description: 'The service; its name must be the one in the path (or absent).' }) });
export const UpstreamPutBody = z.strictObject({ ...writeShape, upstream: Upstream });
export const ReleasePutBody = z.strictObject({ ...writeShape, release: Release });
export const WriteBody = z.strictObject(writeShape).meta({ description: 'A write with nothing else to say than why (and, optionally, the version read).' });
export const ActionBody = z
  .strictObject({
    ...writeShape,
    candidate: Name.optional().meta({ description: 'start: the candidate upstream (default: the idle release\'s).' }),
    candidates: z.array(WeightedCandidate).min(1).optional().meta({ description: 'start: A/B/n candidates with weights.' }),
    rules: z.array(Rule).optional().meta({ description: 'start, set: the ordered rules (replace the release\'s).' }),
    percentage: z.number().min(0).max(100).optional().meta({ description: 'start, set: a sticky share of identified callers, kept as the rule named `percentage`.' }),
    cache: CacheMode.optional(),
    winner: Name.optional().meta({ description: 'full with several candidates: the one that takes everyone.' }),
  })
  .meta({ description: 'A release action; which fields apply depends on the action.' });
export type ActionBody = z.output<typeof ActionBody>;
export const ExplainBody = RequestDescription;

export const HistoryQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1_000).optional() });
export const DiffQuery = z.strictObject({
  from: z.coerce.number().int().min(1).meta({ description: 'The older version.' }),
  to: z.coerce.number().int().min(1).optional().meta({ description: 'The newer version (default: the current one).' }),
});

// ---- responses ------------------------------------------------------------------------------

export const ChangeMetaShape = z.object({ actor: z.string(), time: z.string(), reason: z.string() });
export const VersionedDocument = z.object({ version: z.number().int(), meta: ChangeMetaShape, document: RoutingDocument });
export const WriteResult = z
  .object({
    changed: z.boolean().meta({ description: 'False when the write would change nothing (e.g. a rollback of an idle release); nothing is recorded then.' }),
    previousVersion: z.number().int(),
    version: z.number().int().meta({ description: 'The current version after the write.' }),
    actor: z.string(),
    reason: z.string(),
    served: z
      .object({
        everywhere: z.boolean().meta({ description: 'True once every process of the gateway that took the write (every worker) routes by this version or a newer one.' }),
        version: z.number().int().nullable().meta({ description: 'The version this gateway serves as it answers.' }),
        behind: z.array(z.object({ pid: z.number().int(), version: z.number().int().nullable() })).meta({ description: 'Workers that did not confirm the version in time, and the version each serves.' }),
        message: z.string().optional().meta({ description: 'When not everywhere: what is and is not served yet.' }),
      })
      .optional()
      .meta({ description: 'For a write that changed something: whether this gateway serves it everywhere yet. The write stands either way.' }),
  })
  .meta({ description: 'What a write did: the versions before and after.' });
export const ActionResult = WriteResult.extend({ service: z.string(), from: ReleaseState, to: ReleaseState });
export const HistoryEntry = z.object({ version: z.number().int(), previousVersion: z.number().int(), actor: z.string(), time: z.string(), reason: z.string() });
export const HistoryList = z.object({ versions: z.array(HistoryEntry) });
export const DiffResult = z.object({
  from: z.number().int(),
  to: z.number().int(),
  changes: z.array(z.object({ path: z.string(), op: z.enum(['added', 'removed', 'changed']), before: z.unknown().optional(), after: z.unknown().optional() })),
});
export const ServiceList = z.object({ version: z.number().int(), services: z.array(Service) });
export const ServiceOne = z.object({ version: z.number().int(), service: Service });
export const UpstreamList = z.object({ version: z.number().int(), upstreams: z.record(z.string(), Upstream) });
export const UpstreamOne = z.object({ version: z.number().int(), name: z.string(), upstream: Upstream });
export const ReleaseOne = z.object({ version: z.number().int(), service: z.string(), state: ReleaseState, release: Release.nullable() });
export const LoadFiguresShape = z.object({
  inFlightRequests: z.number().int().meta({ description: 'Requests in flight (on Node, WebSocket/Upgrade tunnels count while open).' }),
  openConnections: z.number().int(),
});
export const DataPlaneStatsShape = z.object({
  openConnections: z.number().int(),
  inFlightRequests: z.number().int(),
  upstreams: z.record(z.string(), LoadFiguresShape).meta({ description: 'Per upstream name: requests in flight to it and connections open to its servers.' }),
});
const LoadScope = z.enum(['process', 'fleet']).meta({
  description: 'fleet: summed over every gateway that reported its load to the shared store (Redis) within the last 3 s; process: this gateway process alone (the file store has no fleet).',
});
export const FleetLoadShape = z
  .object({
    scope: LoadScope,
    gateways: z.number().int().meta({ description: 'How many gateway processes the figures sum (with --workers, one per primary).' }),
    inFlightRequests: z.number().int(),
    openConnections: z.number().int(),
    upstreams: z.record(z.string(), LoadFiguresShape),
  })
  .meta({ description: 'Load summed over the scope.' });
export const DrainReport = z
  .object({
    service: z.string(),
    state: ReleaseState.meta({ description: 'The state in the snapshot this gateway serves.' }),
    servedVersion: z.number().int().nullable(),
    scope: LoadScope,
    gateways: z.number().int().meta({ description: 'How many gateway processes the figures sum (this one included).' }),
    gatewaysBehind: z
      .number()
      .int()
      .meta({ description: 'Of those, how many did not yet serve this gateway\'s version (or a newer one) for 500 ms when they measured: their counts may predate full.' }),
    inFlightRequests: z.number().int().meta({ description: 'All upstreams together, over the scope.' }),
    openConnections: z.number().int().meta({ description: 'Client connections, over the scope.' }),
    stable: LoadFiguresShape.extend({ upstream: z.string() }).meta({ description: 'The service\'s stable upstream and its figures over the scope (all services that route to it).' }),
    upstreams: z.record(z.string(), LoadFiguresShape).meta({ description: 'Per upstream name, over the scope: requests in flight to it and connections open to its servers.' }),
    drained: z
      .boolean()
      .meta({
        description:
          'True when the release is full, every gateway in the scope has served this version (or a newer one) for 500 ms when it measured (so counts reported by --workers are past the switch), ' +
          'and nothing is in flight to the stable upstream: no request started before full (the only ones that could go to stable) is still running.',
      }),
  })
  .meta({ description: 'Whether stable has drained after `full`, over the fleet when the store is shared (Redis), else this gateway process.' });
export const FleetViewShape = z
  .object({
    scope: LoadScope,
    store: z
      .object({ version: z.number().int(), epoch: z.string().nullable() })
      .nullable()
      .meta({ description: 'The store\'s current version and epoch; null when it could not be read (see storeError).' }),
    storeError: z.object({ code: z.string(), message: z.string() }).optional(),
    gateways: z.array(
      z.object({
        instanceId: z.string(),
        self: z.boolean().meta({ description: 'The gateway that answered.' }),
        servedVersion: z.number().int().nullable(),
        servedEpoch: z.string().nullable().meta({ description: 'The store epoch of the served version (null: unknown, e.g. the config file\'s routing served at boot).' }),
        servedForMs: z.number().int(),
        behind: z.boolean().meta({ description: 'Serves another version than the store\'s current one (with the store unreadable: than the newest one served).' }),
        dataPlane: z.string().optional().meta({ description: 'What serves its traffic when not graygate itself: `openresty` (nginx; servedVersion is what nginx serves).' }),
      }),
    ),
    versions: z.array(z.object({ version: z.number().int().nullable(), epoch: z.string().nullable(), gateways: z.number().int() })).meta({ description: 'Each distinct served version and epoch, newest first.' }),
    split: z.boolean().meta({ description: 'True while the gateways serve different versions: the same request may be routed differently by different gateways.' }),
  })
  .meta({ description: 'What each gateway of the fleet serves (by their load reports, at most 3 s old), against the store.' });
export const StatusResult = z.object({
  version: z.number().int().nullable().meta({ description: 'The store\'s current version (null when the store is unreachable).' }),
  servedVersion: z.number().int().nullable(),
  ready: z.boolean(),
  services: z.array(
    z.object({
      name: z.string(),
      stable: z.string(),
      state: ReleaseState,
      candidates: z.array(z.string()),
      rules: z.array(z.string()),
    }),
  ),
  dataPlane: DataPlaneStatsShape.meta({ description: 'This gateway process (with --workers: summed over its workers).' }),
  load: FleetLoadShape.optional().meta({ description: 'Summed over the fleet on a shared store; absent when the fleet\'s reports could not be read (see loadError).' }),
  loadError: z.unknown().optional(),
  storeKind: z.string(),
  storeUp: z.boolean().meta({ description: 'Whether the store answers (graygate_store_up).' }),
  fleet: FleetViewShape.optional().meta({ description: 'What each gateway serves; absent when the fleet\'s reports could not be read.' }),
  lastSyncError: z.unknown().optional(),
});
export const Health = z.object({ status: z.literal('ok') });
export const Ready = z.object({
  ready: z.boolean(),
  servedVersion: z.number().int().nullable(),
  storeReached: z.boolean().meta({ description: 'Whether the store has answered at least once since start.' }),
  workers: z
    .array(z.object({ pid: z.number().int(), version: z.number().int().nullable(), behind: z.boolean(), behindMs: z.number().int() }))
    .optional()
    .meta({ description: 'With --workers: the version each worker serves; a worker behind makes the gateway not ready.' }),
  reason: z.string().optional().meta({ description: 'Why the gateway is not ready.' }),
});
export const ErrorBody = z.object({
  error: z.object({ code: z.string(), message: z.string(), issues: z.array(z.string()).optional() }),
});
export const Explanation = z.object({
  service: z.string(),
  version: z.enum(['stable', 'candidate']),
  upstream: z.string(),
  reason: z.string(),
  identity: z.object({ source: z.string().optional(), userId: z.string().optional() }),
  rules: z.array(z.object({ name: z.string(), to: z.string(), matched: z.boolean() })),
  splitBucket: z.number().int().optional(),
  cache: z.object({ vary: z.string().optional(), private: z.boolean() }),
  routingVersion: z.number().int(),
});

export const RolloutStartBody = z
  .strictObject({
    ...writeShape,
    candidate: Name.optional().meta({ description: 'The candidate upstream (default: the release\'s).' }),
    plan: RolloutPlan.optional().meta({ description: 'The plan to run (default: the service\'s `rollout`).' }),
  })
  .meta({ description: 'Start a rollout at its first step.' });
export const RolloutLive = z
  .object({
    rollout: z.string(),
    step: z.number().int(),
    outcome: z.enum(['pass', 'fail', 'inconclusive', 'gate', 'paused']).meta({ description: 'The step\'s judgement now.' }),
    evidence: z.array(RolloutEvidence),
    elapsedMs: z.number(),
    holdMs: z.number(),
    driver: z.string().meta({ description: 'The gateway that drives the rollout.' }),
    at: z.string(),
  })
  .meta({ description: 'Live evidence of the step in force, from the gateway that drives the rollout.' });
export const RolloutStatus = z.object({
  version: z.number().int(),
  service: z.string(),
  state: ReleaseState,
  plan: RolloutPlan.nullable().meta({ description: 'The service\'s plan (what the next start runs).' }),
  run: RolloutRun.nullable().meta({ description: 'The current or last run, with every step\'s record and evidence.' }),
  live: RolloutLive.nullable(),
});
export const RolloutActionResult = WriteResult.extend({ service: z.string(), run: RolloutRun.nullable() });

// ---- impact of a change ---------------------------------------------------------------------

export const ImpactBody = z
  .strictObject({
    from: z.number().int().min(1).optional().meta({ description: 'A kept version to start from (default: the routing this gateway serves).' }),
    to: z.number().int().min(1).optional().meta({ description: 'A kept version to go to.' }),
    document: RoutingDocument.optional().meta({ description: 'A proposed routing document to go to (what `config apply` would write).' }),
    release: z
      .strictObject({
        service: Name,
        action: z.enum(['start', 'set', 'full', 'finish', 'rollback']),
        params: ActionBody.omit({ reason: true, version: true }).optional(),
      })
      .optional()
      .meta({ description: 'A release action to go to, as `POST /v1/services/{service}/release/{action}` would make it from the current version.' }),
    rollout: z
      .strictObject({
        service: Name,
        action: z.enum(['start', 'promote']).meta({ description: '`start`: the rollout\'s first step; `promote`: the next step of the rollout in progress.' }),
        candidate: Name.optional(),
        plan: RolloutPlan.optional(),
      })
      .optional()
      .meta({ description: 'A rollout step to go to, as `rollout start` or `rollout promote` would write it from the current version.' }),
  })
  .meta({ description: 'The change to count: exactly one of `to`, `document`, `release`, `rollout`.' });

const ImpactMoveShape = z.object({ from: z.string(), to: z.string(), count: z.number().int() });
export const ImpactResult = z
  .object({
    from: z.number().int().meta({ description: 'The version counted from.' }),
    to: z.union([z.number().int(), z.literal('proposed')]).meta({ description: 'The version counted to, or `proposed` for a document or an action not yet written.' }),
    windowMs: z.number().int().meta({ description: 'How far back the sample reaches.' }),
    enabled: z.boolean().meta({ description: 'False when the gateway keeps no sample (`identitySample.enabled: false`).' }),
    processes: z.number().int().meta({ description: 'Processes whose sample was counted (each worker with `--workers`).' }),
    scope: z.literal('gateway').meta({ description: 'Counted on the gateway that answers (its own callers), not the fleet.' }),
    services: z.array(
      z.object({
        service: z.string(),
        sampled: z.number().int().meta({ description: 'Distinct callers (by identity) seen in the window and evaluated.' }),
        full: z.boolean().meta({ description: 'The sample reached its bound: counts over a uniform sample of the callers.' }),
        notSampled: z.number().int(),
        stableToCandidate: z.number().int(),
        candidateToStable: z.number().int(),
        candidateToCandidate: z.number().int().meta({ description: 'A/B/n: moved from one candidate to another.' }),
        unchanged: z.number().int(),
        moves: z.array(ImpactMoveShape).meta({ description: 'Each move (`stable`, a candidate upstream, or `none` when no service takes the request) with its count.' }),
        unobserved: z.array(z.string()).meta({ description: 'Inputs the proposed rules read that the sample does not keep (the current rules do not read them).' }),
      }),
    ),
  })
  .meta({ description: 'How many of the callers seen recently would change version: counts only, never an id.' });
