import type { CacheMode, Condition, Release, RoutingDocument, Rule, Service, WeightedCandidate } from '../config/schema.js';
import { GraygateError } from '../errors.js';
import { strategies } from '../rules/strategies/index.js';

/**
 * The release lifecycle as a state machine, so no command can leave a release half-way (a
 * promote without a canary, a finish that keeps the candidate's rules): idle → canary → full →
 * idle, and rollback from any state to idle. Every function
 * here is pure over the routing document: it returns the next document (plain, not yet
 * validated) and the control plane writes it as one compare-and-set version, so a restart
 * resumes from the store and a stale writer is refused.
 *
 * `idle` is a service with no release, or one whose release says `state: idle`. `finish` and
 * `rollback` remove the release: no rule is left that could reach the candidate, and the
 * history keeps what it was.
 *
 * Rules that read a store key (a `uidRange` with `fromKey: Grayscale_Range`) are the exception:
 * who they send to the candidate is decided by writing that key, as in the recipe graygate
 * replaces, where the range rule outlives every release and the next one starts with a SET.
 * `finish` returns such a release to canary with only those rules, and `rollback` leaves it idle
 * with only those rules (so nothing reaches the candidate, and `start` resumes it).
 */

export type LifecycleState = 'idle' | 'canary' | 'full';
export type LifecycleAction = 'start' | 'set' | 'full' | 'finish' | 'rollback';

/** The allowed moves: an action is refused (GG_ILLEGAL_TRANSITION) from any state not listed. */
export const transitions: Readonly<Record<LifecycleAction, { readonly from: readonly LifecycleState[]; readonly to: LifecycleState }>> = {
  start: { from: ['idle'], to: 'canary' },
  set: { from: ['canary'], to: 'canary' },
  full: { from: ['canary'], to: 'full' },
  finish: { from: ['full'], to: 'idle' },
  rollback: { from: ['idle', 'canary', 'full'], to: 'idle' },
};

/** What each action may carry; fields are checked again by parseRoutingDocument on the result. */
export interface ActionParams {
  /** start: the one candidate upstream (or `candidates` for A/B/n); default: the idle release's. */
  readonly candidate?: string;
  readonly candidates?: readonly WeightedCandidate[];
  /** start, set: the ordered rules (replacing the release's). */
  readonly rules?: readonly Rule[];
  /** start, set: a sticky percentage of identified callers, kept as the rule named `percentage`. */
  readonly percentage?: number;
  /** start: cache mode of the release. */
  readonly cache?: CacheMode;
  /** full with several candidates: the upstream that takes everyone. */
  readonly winner?: string;
}

export interface ActionResult {
  /** The next document: a fresh plain object, to be validated and written as one version. */
  readonly document: RoutingDocument;
  readonly from: LifecycleState;
  readonly to: LifecycleState;
  /** False when the action changed nothing (rollback of an idle service): nothing to write. */
  readonly changed: boolean;
}

/** The rule name `percentage` is kept under, so `set --percent` replaces it in place. */
export const PERCENTAGE_RULE = 'percentage';

/** True when `rule` (or a condition inside it) reads a store key: the key, not the lifecycle, decides who it sends. */
export function readsStoreKey(rule: Rule | Condition): boolean {
  for (const [key, value] of Object.entries(rule as Record<string, unknown>)) {
    if (value === undefined || key === 'name' || key === 'to') continue;
    if (key === 'all' || key === 'any') {
      if ((value as Condition[]).some(readsStoreKey)) return true;
    } else if (key === 'not') {
      if (readsStoreKey(value as Condition)) return true;
    } else {
      const strategy = (strategies as Record<string, { storeKeys?(config: unknown): readonly string[] }>)[key];
      if ((strategy?.storeKeys?.(value)?.length ?? 0) > 0) return true;
    }
  }
  return false;
}

/** The lifecycle state of a service. */
export function stateOf(service: Service): LifecycleState {
  const release = service.release;
  if (!release || release.state === 'idle') return 'idle';
  return release.state;
}

/** Finds a service by name; GG_NOT_FOUND naming the known ones when absent. */
export function findService(document: RoutingDocument, name: string): { service: Service; index: number } {
  const index = document.services.findIndex((service) => service.name === name);
  if (index < 0) {
    const known = document.services.map((service) => service.name);
    throw new GraygateError('GG_NOT_FOUND', `service "${name}" is not defined; known: ${known.length ? known.join(', ') : '(none)'}`);
  }
  return { service: document.services[index]!, index };
}

const advice: Record<LifecycleAction, Partial<Record<LifecycleState, string>>> = {
  start: {
    canary: 'it is already in canary; change its rules with `release set`, or roll back first',
    full: 'it is in full (everyone on the candidate); `release finish` once stable is updated, or roll back',
  },
  set: {
    idle: 'it has no canary running; `release start` one first',
    full: 'it is in full, where rules no longer decide; roll back to leave full',
  },
  full: {
    idle: 'it has no canary running; `release start` one and check it before sending everyone',
    full: 'it is already in full; wait for stable to drain, update it, then `release finish`',
  },
  finish: {
    idle: 'it has no release to finish',
    canary: 'it is still in canary; `release full` first (finish ends a release that everyone is on), or roll back to abandon it',
  },
  rollback: {},
};

/** Throws GG_ILLEGAL_TRANSITION, saying why, when `action` is not allowed from `from`. */
export function checkTransition(serviceName: string, action: LifecycleAction, from: LifecycleState): void {
  if (transitions[action].from.includes(from)) return;
  const why = advice[action][from] ?? `allowed only from ${transitions[action].from.join(' or ')}`;
  throw new GraygateError('GG_ILLEGAL_TRANSITION', `cannot ${action} the release of service "${serviceName}" (state ${from}): ${why}`);
}

const clone = <T>(value: T): T => structuredClone(value) as T;

/** Rules with the `percentage` rule set (replaced in place, or appended). */
function withPercentage(rules: readonly Rule[], percent: number | undefined): Rule[] {
  const next = rules.map((rule) => clone(rule));
  if (percent === undefined) return next;
  const rule = { name: PERCENTAGE_RULE, to: 'candidate', percentage: { percent } } as Rule;
  const at = next.findIndex((r) => r.name === PERCENTAGE_RULE);
  if (at >= 0) next[at] = rule;
  else next.push(rule);
  return next;
}

function invalid(field: string, message: string): GraygateError {
  return new GraygateError('GG_REQUEST_INVALID', `${field}: ${message}`);
}

/**
 * Applies one lifecycle action to the service named `serviceName`, returning the next document.
 * Throws GG_NOT_FOUND for an unknown service, GG_ILLEGAL_TRANSITION when the action is not
 * allowed from the service's state, GG_REQUEST_INVALID when a required parameter is missing.
 * The result is not validated: the caller runs parseRoutingDocument before writing it.
 */
export function applyAction(document: RoutingDocument, serviceName: string, action: LifecycleAction, params: ActionParams = {}): ActionResult {
  const { service, index } = findService(document, serviceName);
  const from = stateOf(service);
  checkTransition(serviceName, action, from);
  const next = clone(document) as RoutingDocument;
  const target = next.services[index]!;
  const to = transitions[action].to;
  const release = target.release;

  switch (action) {
    case 'start': {
      const candidates = params.candidates ?? (params.candidate === undefined ? release?.candidates : undefined);
      const candidate = params.candidate ?? (params.candidates === undefined ? release?.candidate : undefined);
      if (candidate === undefined && candidates === undefined) throw invalid('candidate', 'required: the upstream that serves the candidate version');
      const started: Release = {
        ...(candidate !== undefined ? { candidate } : {}),
        ...(candidates !== undefined ? { candidates: candidates.map((c) => ({ ...c })) } : {}),
        state: 'canary',
        rules: withPercentage(params.rules ?? release?.rules ?? [], params.percentage),
        cache: params.cache ?? release?.cache ?? 'vary',
      };
      target.release = started;
      break;
    }
    case 'set': {
      if (params.rules === undefined && params.percentage === undefined) throw invalid('rules', 'give rules or percentage (or both)');
      target.release = { ...release!, rules: withPercentage(params.rules ?? release!.rules, params.percentage) };
      break;
    }
    case 'full': {
      const current = release!;
      if (current.candidates !== undefined) {
        const weighted = current.candidates.filter((c) => c.weight > 0);
        const winner = params.winner ?? (weighted.length === 1 ? weighted[0]!.upstream : undefined);
        if (winner === undefined) throw invalid('winner', `required with ${current.candidates.length} candidates: name the one that takes everyone`);
        if (!current.candidates.some((c) => c.upstream === winner)) {
          throw invalid('winner', `"${winner}" is not a candidate of this release; candidates: ${current.candidates.map((c) => c.upstream).join(', ')}`);
        }
        target.release = {
          ...current,
          state: 'full',
          candidates: current.candidates.map((c) => ({ upstream: c.upstream, weight: c.upstream === winner ? (c.weight > 0 ? c.weight : 100) : 0 })),
        };
      } else {
        if (params.winner !== undefined && params.winner !== current.candidate) {
          throw invalid('winner', `"${params.winner}" is not the candidate of this release (${current.candidate})`);
        }
        target.release = { ...current, state: 'full' };
      }
      break;
    }
    case 'finish':
    case 'rollback': {
      if (release === undefined) return { document: next, from, to, changed: false };
      const standing = release.rules.filter((rule) => readsStoreKey(rule));
      if (standing.length === 0) {
        delete target.release;
        break;
      }
      // The store key's rules stay; a finished release is back in canary on them alone.
      const state: LifecycleState = action === 'finish' ? 'canary' : 'idle';
      const kept: Release = { ...release, state, rules: standing.map((rule) => clone(rule)) };
      if (release.candidates !== undefined) kept.candidates = release.candidates.map((c) => ({ ...c }));
      // Rollback stays idempotent: an idle release holding only such rules is already rolled back.
      if (action === 'rollback' && from === 'idle' && standing.length === release.rules.length) return { document: next, from, to, changed: false };
      target.release = kept;
      return { document: next, from, to: state, changed: true };
    }
  }
  return { document: next, from, to, changed: true };
}

/** True when no request can reach a candidate of `service` (no release, or an idle one). */
export function isCandidateUnreachable(service: Service): boolean {
  return stateOf(service) === 'idle';
}
