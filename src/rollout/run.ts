import { isDeepStrictEqual } from 'node:util';
import { parseRoutingDocument } from '../config/load.js';
import type { RolloutEvidence, RolloutPlan, RolloutRecord, RolloutRun, RoutingDocument, Service } from '../config/schema.js';
import { applyAction, findService, stateOf } from '../control/lifecycle.js';
import { GraygateError } from '../errors.js';

/**
 * A rollout run is kept in the routing document, on its service (`rolloutRun`), so a step's
 * routing and the record of the step are one compare-and-set version: a restart or another
 * gateway resumes from what is stored, and two writers can never both advance. Every routing
 * move goes through the release lifecycle (control/lifecycle.ts): start/set for a step, full at
 * the end, rollback on a failed step or an abort. These functions are pure over the document.
 */

/** Who the driver writes as, in history and records. */
export const DRIVER_ACTOR = 'graygate rollout';

/** Records kept per run: the oldest go first (a plan of many steps paused and resumed often). */
const RECORDS_KEPT = 100;

/** The statuses in which a run is in progress (routing is the rollout's). */
export const activeStatuses: readonly RolloutRun['status'][] = ['running', 'paused'];

export function isActive(run: RolloutRun | undefined): run is RolloutRun {
  return run !== undefined && activeStatuses.includes(run.status);
}

function withRecord(run: RolloutRun, record: Omit<RolloutRecord, 'evidence'> & { evidence?: RolloutEvidence[] }): RolloutRecord[] {
  return [...run.records, { ...record, evidence: record.evidence ?? [] }].slice(-RECORDS_KEPT);
}

/** The document with service `index`'s run replaced. */
function withRun(document: RoutingDocument, index: number, service: Service, run: RolloutRun): RoutingDocument {
  const services = [...document.services];
  services[index] = { ...service, rolloutRun: run };
  return { ...document, services };
}

/**
 * The document with step `step` of `run`'s plan in force for the service: its routing through the
 * lifecycle (start from idle, set in canary). A gate changes no routing.
 */
export function applyStep(document: RoutingDocument, serviceName: string, run: RolloutRun, step: number): RoutingDocument {
  const definition = run.plan.steps[step];
  if (definition === undefined) throw new GraygateError('GG_INTERNAL', `step ${step} is not in the plan of ${serviceName}'s rollout`);
  if (definition.gate) {
    // A gate holds the routing of the step before it (a first-step gate keeps the release as it is).
    const routed = routedStep(run, step);
    return routed < 0 ? document : applyStep(document, serviceName, run, routed);
  }
  const { service } = findService(document, serviceName);
  const params = definition.percent !== undefined ? { percentage: definition.percent } : { rules: definition.rules! };
  if (stateOf(service) === 'idle') return applyAction(document, serviceName, 'start', { candidate: run.candidate, ...params }).document;
  return applyAction(document, serviceName, 'set', params).document;
}

/** The step whose routing is in force at `step` (a gate keeps the one before it); -1: none yet. */
function routedStep(run: RolloutRun, step: number): number {
  for (let at = step; at >= 0; at--) if (!run.plan.steps[at]!.gate) return at;
  return -1;
}

/**
 * When the service's routing is not what the run's step puts there, says what changed: a write
 * not made by the rollout (an operator's), which the driver must not overwrite. Undefined when
 * the routing is the step's.
 */
export function manualChange(document: RoutingDocument, serviceName: string, run: RolloutRun): string | undefined {
  const { service } = findService(document, serviceName);
  const state = stateOf(service);
  if (state === 'idle') return 'the release was rolled back or removed';
  if (state === 'full') return 'the release was sent to full';
  const candidate = service.release?.candidate;
  if (candidate !== run.candidate) return `the candidate is now ${candidate ?? 'a list of candidates'}, not ${run.candidate}`;
  const step = routedStep(run, run.step);
  if (step < 0) return undefined;
  const expected = findService(parseRoutingDocument(applyStep(document, serviceName, run, step)), serviceName).service.release;
  if (!isDeepStrictEqual(expected?.rules, service.release?.rules)) return 'the release\'s rules were changed';
  return undefined;
}

export interface StartParams {
  readonly candidate?: string | undefined;
  readonly plan?: RolloutPlan | undefined;
  readonly actor: string;
  readonly reason: string;
  readonly now: Date;
}

/** Starts a run at step 0 (a new run always begins there), with the step's routing. */
export function startRun(document: RoutingDocument, serviceName: string, params: StartParams): RoutingDocument {
  const { service, index } = findService(document, serviceName);
  if (isActive(service.rolloutRun)) {
    throw new GraygateError(
      'GG_ILLEGAL_TRANSITION',
      `service "${serviceName}" already has a rollout ${service.rolloutRun.status} at step ${service.rolloutRun.step + 1} of ${service.rolloutRun.plan.steps.length}; abort it first`,
    );
  }
  const plan = params.plan ?? service.rollout;
  if (plan === undefined) throw new GraygateError('GG_REQUEST_INVALID', `plan: service "${serviceName}" has no rollout plan (services[].rollout); give one in the request`);
  const state = stateOf(service);
  if (state === 'full') throw new GraygateError('GG_ILLEGAL_TRANSITION', `cannot start a rollout of service "${serviceName}": its release is in full; finish or roll it back first`);
  const candidate = params.candidate ?? service.release?.candidate;
  if (candidate === undefined) throw new GraygateError('GG_REQUEST_INVALID', 'candidate: required: the upstream that serves the candidate version');
  const time = params.now.toISOString();
  const run: RolloutRun = {
    id: `${serviceName}-${params.now.getTime().toString(36)}`,
    candidate,
    status: 'running',
    step: 0,
    stepStartedAt: time,
    startedAt: time,
    startedBy: params.actor,
    reason: params.reason,
    plan,
    records: [],
  };
  run.records = withRecord(run, { at: time, step: 0, event: 'start', by: params.actor, reason: params.reason });
  const routed = applyStep(withRun(document, index, service, run), serviceName, run, 0);
  return routed;
}

/** The service's run, or GG_ROLLOUT_NOT_RUNNING when none is in progress. */
export function activeRun(document: RoutingDocument, serviceName: string): { service: Service; index: number; run: RolloutRun } {
  const { service, index } = findService(document, serviceName);
  const run = service.rolloutRun;
  if (!isActive(run)) {
    const ended = service.rolloutRun;
    const last = ended ? ` (the last one is ${ended.status}: ${ended.reason})` : '';
    throw new GraygateError('GG_ROLLOUT_NOT_RUNNING', `service "${serviceName}" has no rollout in progress${last}; nothing was changed`);
  }
  return { service, index, run };
}

export type RunAction = 'pause' | 'resume' | 'promote' | 'abort';

export interface Move {
  readonly document: RoutingDocument;
  readonly run: RolloutRun;
  /** The event recorded, for notifications. */
  readonly event: RolloutRecord['event'];
}

/** Moves the run to step `next` (or to its end past the last step), with the step's routing. */
export function advance(document: RoutingDocument, serviceName: string, by: string, reason: string, now: Date, evidence: RolloutEvidence[] = [], event: RolloutRecord['event'] = 'passed'): Move {
  const { service, index, run } = activeRun(document, serviceName);
  const time = now.toISOString();
  const records = withRecord(run, { at: time, step: run.step, event, by, reason, evidence });
  const next = run.step + 1;
  if (next >= run.plan.steps.length) {
    const why = run.plan.end === 'full' ? `every step passed; the release is in full` : 'every step passed; the release stays at the last step (plan end: stop)';
    const done: RolloutRun = { ...run, status: 'done', reason: why, records: withRecord({ ...run, records }, { at: time, step: run.step, event: 'done', by, reason: why }) };
    let result = withRun(document, index, service, done);
    if (run.plan.end === 'full') result = applyAction(result, serviceName, 'full').document;
    return { document: result, run: done, event: 'done' };
  }
  const stepped: RolloutRun = { ...run, status: 'running', step: next, stepStartedAt: time, reason: `step ${next + 1} of ${run.plan.steps.length}`, records };
  stepped.records = withRecord(stepped, { at: time, step: next, event: 'step', by, reason: describeStep(run.plan, next) });
  return { document: applyStep(withRun(document, index, service, stepped), serviceName, stepped, next), run: stepped, event: event === 'promote' ? 'promote' : 'step' };
}

/** Ends the run by a rollback of the release (a failed step, or an abort): routing back to stable at once. */
export function rollBack(document: RoutingDocument, serviceName: string, by: string, reason: string, now: Date, evidence: RolloutEvidence[], event: 'rollback' | 'abort'): Move {
  const { service, index, run } = activeRun(document, serviceName);
  const ended: RolloutRun = {
    ...run,
    status: event === 'abort' ? 'aborted' : 'rolled-back',
    reason,
    records: withRecord(run, { at: now.toISOString(), step: run.step, event, by, reason, evidence }),
  };
  const withEnded = withRun(document, index, service, ended);
  // The operator may have rolled the release back already: nothing more to move then.
  const routed = stateOf(findService(withEnded, serviceName).service) === 'idle' ? withEnded : applyAction(withEnded, serviceName, 'rollback').document;
  return { document: routed, run: ended, event };
}

/** Pauses (routing stays as it is) or resumes (the step starts over: its hold and window count from now, its routing put back). */
export function pauseOrResume(document: RoutingDocument, serviceName: string, action: 'pause' | 'resume', by: string, reason: string, now: Date, evidence: RolloutEvidence[] = []): Move {
  const { service, index, run } = activeRun(document, serviceName);
  const time = now.toISOString();
  if (action === 'pause') {
    if (run.status === 'paused') return { document, run, event: 'pause' };
    const paused: RolloutRun = { ...run, status: 'paused', reason, records: withRecord(run, { at: time, step: run.step, event: 'pause', by, reason, evidence }) };
    return { document: withRun(document, index, service, paused), run: paused, event: 'pause' };
  }
  if (run.status === 'running') return { document, run, event: 'resume' };
  const resumed: RolloutRun = { ...run, status: 'running', stepStartedAt: time, reason: `resumed at step ${run.step + 1}: ${reason}`, records: withRecord(run, { at: time, step: run.step, event: 'resume', by, reason }) };
  const withResumed = withRun(document, index, service, resumed);
  const step = routedStep(resumed, resumed.step);
  // Resuming puts the step's routing back: a manual change that paused the run is undone on purpose.
  const routed = step < 0 ? withResumed : applyStep(reopen(withResumed, serviceName, resumed), serviceName, resumed, step);
  return { document: routed, run: resumed, event: 'resume' };
}

/** A release rolled back or sent to full by hand is brought back to canary before a resume reapplies the step. */
function reopen(document: RoutingDocument, serviceName: string, run: RolloutRun): RoutingDocument {
  const { service } = findService(document, serviceName);
  const state = stateOf(service);
  if (state === 'full') return applyAction(document, serviceName, 'rollback').document;
  if (state === 'canary' && service.release?.candidate !== run.candidate) return applyAction(document, serviceName, 'rollback').document;
  return document;
}

/** The step in words: `5 % for 30 s`, `rules (2) for 1 min`, `gate (waits for promote)`. */
export function describeStep(plan: RolloutPlan, step: number): string {
  const definition = plan.steps[step]!;
  const of = `step ${step + 1} of ${plan.steps.length}`;
  if (definition.gate) return `${of}: a gate, waiting for \`graygate rollout promote\``;
  const what = definition.percent !== undefined ? `${definition.percent} % of callers` : `${definition.rules!.length} rule(s)`;
  return `${of}: ${what} on the candidate, held ${Math.round(definition.holdMs / 100) / 10} s`;
}
