import type { RoutingDocument } from '../config/schema.js';
import { compileRouting } from '../rules/compile.js';
import type { RequestIdentity } from '../rules/request-identity.js';
import type { Decision, RoutingSnapshot } from '../rules/snapshot.js';
import type { RequestInput } from '../rules/strategy.js';
import type { IdentitySample, ServiceSampleView } from './identity-sample.js';

/**
 * The impact of a routing change on the callers seen recently: every sampled caller's facts are
 * decided by the current rules and by the proposed ones, and the moves are counted. Only counts
 * come out: no id, no header value.
 */

/** Where a caller goes: `stable`, a candidate's upstream name, or `none` (no service takes it). */
export type Destination = string;

export interface ImpactMove {
  readonly from: Destination;
  readonly to: Destination;
  readonly count: number;
}

export interface ServiceImpact {
  readonly service: string;
  /** Distinct callers in the sample (seen within the window) that were evaluated. */
  readonly sampled: number;
  /** True when the sample reached its bound: the counts are over a uniform sample of the callers, not all of them. */
  readonly full: boolean;
  /** New callers in the window the full sample did not admit. */
  readonly notSampled: number;
  readonly stableToCandidate: number;
  readonly candidateToStable: number;
  /** A/B/n: callers moved from one candidate to another. */
  readonly candidateToCandidate: number;
  readonly unchanged: number;
  /** Every kind of move with its count (unchanged callers left out), largest first. */
  readonly moves: readonly ImpactMove[];
  /**
   * Request inputs the proposed rules read that the sample did not keep (the current rules do not
   * read them): the proposed rules saw them absent, so these counts may be off. Named as
   * `header x-beta`, `cookie ab`, `query preview`.
   */
  readonly unobserved: readonly string[];
}

export interface ImpactCounts {
  /** How far back the sample reaches. */
  readonly windowMs: number;
  /** False when the gateway records no sample (`identitySample.enabled: false`). */
  readonly enabled: boolean;
  /** Processes whose sample was counted (each `--workers` worker, or the one process). */
  readonly processes: number;
  readonly services: readonly ServiceImpact[];
}

/** The routing to compare: a document with the store values it compiles with. */
export interface ProposedRouting {
  readonly document: RoutingDocument;
  readonly version: number;
  readonly values: readonly (readonly [string, string | undefined])[];
}

/** Identity is already resolved in every sampled entry: compiling only needs its shape. */
const RESOLVED: RequestIdentity = Object.freeze({
  inputs: Object.freeze([]),
  resolve: () => undefined,
  resolveOrMint: () => undefined,
  resolveWithoutMinting: () => undefined,
});

/** Compiles a routing document for evaluating sampled callers (never for serving: identity is not resolved). Throws ConfigError. */
export function compileForImpact(routing: ProposedRouting): RoutingSnapshot {
  const values = new Map(routing.values);
  return compileRouting(structuredClone(routing.document), routing.version, { storeValue: (key) => values.get(key), identity: () => RESOLVED });
}

function destinationOf(decision: Decision | undefined): Destination {
  if (decision === undefined) return 'none';
  return decision.version === 'stable' ? 'stable' : decision.upstream;
}

function inputName(input: RequestInput): string | undefined {
  return input.kind === 'header' || input.kind === 'cookie' || input.kind === 'query' ? `${input.kind} ${input.name}` : undefined;
}

/** Counts, per sampled service, where its callers go under `from` and under `to`. Pure. */
export function impactOfViews(views: readonly ServiceSampleView[], from: RoutingSnapshot, to: RoutingSnapshot): ServiceImpact[] {
  const results: ServiceImpact[] = [];
  for (const view of views) {
    const moves = new Map<string, ImpactMove>();
    let stableToCandidate = 0;
    let candidateToStable = 0;
    let candidateToCandidate = 0;
    let unchanged = 0;
    const unobserved = new Set<string>();
    const captured = new Set([...view.captured.headers.map((n) => `header ${n}`), ...view.captured.cookies.map((n) => `cookie ${n}`), ...view.captured.queries.map((n) => `query ${n}`)]);
    const checked = new Set<unknown>();
    for (const facts of view.facts) {
      const before = from.matchService(facts.host, facts.path);
      const after = to.matchService(facts.host, facts.path);
      if (after !== undefined && !checked.has(after)) {
        checked.add(after);
        for (const rule of after.explain.rules) {
          for (const input of rule.inputs) {
            const name = inputName(input);
            if (name !== undefined && !captured.has(name)) unobserved.add(name);
          }
        }
      }
      const a = destinationOf(before?.decide(facts));
      const b = destinationOf(after?.decide(facts));
      if (a === b) {
        unchanged++;
        continue;
      }
      if (a === 'stable' && b !== 'none') stableToCandidate++;
      else if (b === 'stable' && a !== 'none') candidateToStable++;
      else if (a !== 'none' && b !== 'none') candidateToCandidate++;
      const key = `${a}\u0000${b}`;
      const move = moves.get(key);
      moves.set(key, { from: a, to: b, count: (move?.count ?? 0) + 1 });
    }
    results.push({
      service: view.service,
      sampled: view.facts.length,
      full: view.full,
      notSampled: view.notSampled,
      stableToCandidate,
      candidateToStable,
      candidateToCandidate,
      unchanged,
      moves: sortMoves([...moves.values()]),
      unobserved: [...unobserved].sort(),
    });
  }
  return results.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
}

function sortMoves(moves: ImpactMove[]): ImpactMove[] {
  return moves.sort((a, b) => b.count - a.count || (a.from + a.to < b.from + b.to ? -1 : 1));
}

/**
 * The impact of going from `from` (the routing this process serves when undefined) to `to`, over
 * this process's sample. Throws ConfigError when a document does not compile.
 */
export function impactInProcess(sample: IdentitySample | undefined, served: RoutingSnapshot | undefined, request: { from?: ProposedRouting | undefined; to: ProposedRouting }): ImpactCounts {
  const windowMs = sample?.options.windowMs ?? 0;
  const enabled = sample?.options.enabled ?? false;
  const to = compileForImpact(request.to);
  const from = request.from !== undefined ? compileForImpact(request.from) : served;
  if (sample === undefined || from === undefined) return { windowMs, enabled, processes: 1, services: [] };
  return { windowMs, enabled, processes: 1, services: impactOfViews(sample.view(), from, to) };
}

/** Sums the counts of several processes (the `--workers` workers of one gateway). */
export function sumImpacts(parts: readonly ImpactCounts[], windowMs: number, enabled: boolean): ImpactCounts {
  const services = new Map<string, { sum: Omit<ServiceImpact, 'moves' | 'unobserved'>; moves: Map<string, ImpactMove>; unobserved: Set<string> }>();
  let processes = 0;
  for (const part of parts) {
    processes += part.processes;
    for (const impact of part.services) {
      let entry = services.get(impact.service);
      if (entry === undefined) {
        entry = {
          sum: { service: impact.service, sampled: 0, full: false, notSampled: 0, stableToCandidate: 0, candidateToStable: 0, candidateToCandidate: 0, unchanged: 0 },
          moves: new Map(),
          unobserved: new Set(),
        };
        services.set(impact.service, entry);
      }
      const s = entry.sum;
      entry.sum = {
        service: s.service,
        sampled: s.sampled + impact.sampled,
        full: s.full || impact.full,
        notSampled: s.notSampled + impact.notSampled,
        stableToCandidate: s.stableToCandidate + impact.stableToCandidate,
        candidateToStable: s.candidateToStable + impact.candidateToStable,
        candidateToCandidate: s.candidateToCandidate + impact.candidateToCandidate,
        unchanged: s.unchanged + impact.unchanged,
      };
      for (const move of impact.moves) {
        const key = `${move.from}\u0000${move.to}`;
        entry.moves.set(key, { from: move.from, to: move.to, count: (entry.moves.get(key)?.count ?? 0) + move.count });
      }
      for (const name of impact.unobserved) entry.unobserved.add(name);
    }
  }
  const summed = [...services.values()].map((entry) => ({ ...entry.sum, moves: sortMoves([...entry.moves.values()]), unobserved: [...entry.unobserved].sort() }));
  return { windowMs, enabled, processes, services: summed.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0)) };
}
