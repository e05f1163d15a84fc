import { parseRoutingDocument } from '../config/load.js';
import type { RolloutEvidence, RolloutRun, RoutingDocument } from '../config/schema.js';
import { isGraygateError } from '../errors.js';
import { rateLimited, type Logger } from '../observe/log.js';
import type { Store, StoredVersion } from '../store/store.js';
import { checkName, runCheck } from './checks.js';
import { analyzeStep } from './analysis/analyze.js';
import { fleetWindow } from './analysis/fleet.js';
import type { CheckEvidence, ExternalCheckResult, FleetSample, Verdict } from './analysis/types.js';
import { notificationOf, sendNotification } from './notify.js';
import { advance, DRIVER_ACTOR, isActive, manualChange, pauseOrResume, rollBack, type Move } from './run.js';

/** The lease every driver competes for: one gateway of the fleet drives every rollout. */
export const ROLLOUT_LEASE = 'rollout';
/** How often the driver looks (and renews its lease). */
export const DRIVER_TICK_MS = 500;
/**
 * How long a lease outlives its holder's last renewal: a killed driver's successor takes over
 * within this plus one tick, well inside the 5 s a leader change may take.
 */
export const LEASE_TTL_MS = 3_000;
/** How long live figures published by the driver stay readable by other gateways. */
const LIVE_TTL_MS = 5_000;

/** What the driver sees of one running rollout now: shown by status, the dashboard and metrics. */
export interface LiveRollout {
  readonly service: string;
  readonly rollout: string;
  readonly step: number;
  readonly status: RolloutRun['status'];
  /** The combined outcome now; `gate` while a gate waits for promote. */
  readonly outcome: Verdict | 'gate' | 'paused';
  readonly evidence: readonly RolloutEvidence[];
  /** How long the step has run, and must hold. */
  readonly elapsedMs: number;
  readonly holdMs: number;
  /** The gateway driving it. */
  readonly driver: string;
  readonly at: string;
}

export interface RolloutEventSink {
  /** A move the driver wrote (step, pass, pause, rollback, done). */
  moved(service: string, event: string): void;
}

export interface RolloutDriverOptions {
  readonly store: Store;
  readonly instanceId: string;
  readonly logger: Logger;
  /** Every gateway's cumulative per-version figures now (on the file store: this gateway's own). */
  readonly sample: () => Promise<FleetSample>;
  /** Serves a version this gateway wrote at once (see the gateway's applyWritten). */
  readonly applyWritten: (written: StoredVersion) => Promise<unknown>;
  readonly events?: RolloutEventSink;
  /**
   * Whether the routing this gateway serves has a rollout in progress. While none has, the
   * driver leaves the store alone (no lease, no reads): a fleet with nothing to roll out sends
   * Redis nothing for it. A start is seen within a tick of being served.
   */
  readonly hasActiveRun?: () => boolean;
  readonly tickMs?: number;
}

interface CheckSlot {
  result: ExternalCheckResult | undefined;
  calledAt: number;
  inFlight: boolean;
}

/**
 * Drives every service's rollout from the gateway process. Only the holder of the `rollout`
 * lease acts (a store without leases, the file store, serves one gateway, which drives); the
 * lease's fencing token goes with each write, so a driver that lost the lease cannot write, and
 * each write is a compare-and-set of the routing document, so it never overwrites a change it
 * did not see. What it acts on is the stored run (step, step start, records), read anew each
 * tick: a new driver carries on at the stored step. The figures window of a step starts when
 * this driver first sees the step (counts are per process); the hold counts from the stored start.
 */
export class RolloutDriver {
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private closed = false;
  private token: number | undefined;
  private readonly baselines = new Map<string, FleetSample>();
  private readonly checks = new Map<string, CheckSlot>();
  private readonly liveByService = new Map<string, LiveRollout>();
  private readonly logFault: ReturnType<typeof rateLimited>;

  constructor(private readonly options: RolloutDriverOptions) {
    this.logFault = rateLimited(options.logger);
  }

  /** True while this gateway holds the lease (or needs none). */
  get isLeader(): boolean {
    return this.token !== undefined;
  }

  /** The rollouts this gateway drives, as of its last tick. */
  live(): LiveRollout[] {
    return [...this.liveByService.values()];
  }

  start(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => this.tick(), this.options.tickMs ?? DRIVER_TICK_MS);
    this.timer.unref();
    this.tick();
  }

  /** Stops driving and gives the lease up, so another gateway takes over at once. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.ticking;
    const leases = this.options.store.leases;
    if (leases && this.token !== undefined) await leases.release(ROLLOUT_LEASE, this.options.instanceId, this.token).catch(() => undefined);
    this.token = undefined;
  }

  private tick(): void {
    if (this.closed || this.ticking) return;
    this.ticking = this.once()
      .catch((error: unknown) => this.logFault('rollout-driver', 'warn', { err: (error as Error)?.message ?? String(error) }, `rollout driver: ${(error as Error)?.message ?? String(error)}; trying again`))
      .finally(() => {
        this.ticking = undefined;
      });
  }

  private async once(): Promise<void> {
    const { store, instanceId, logger } = this.options;
    if (this.options.hasActiveRun && !this.options.hasActiveRun()) {
      // Nothing to drive: the lease (if held) runs out, and any gateway takes it at the next start.
      if (this.token !== undefined && store.leases) logger.info({ event: 'rollout-driver-idle', token: this.token }, 'no rollout in progress: this gateway stops holding the rollout lease');
      this.token = undefined;
      this.liveByService.clear();
      return;
    }
    if (store.leases) {
      const previous = this.token;
      this.token = await store.leases.hold(ROLLOUT_LEASE, instanceId, LEASE_TTL_MS).catch((error: unknown) => {
        // Unsure whether it still holds the lease: it stops acting (its writes would be refused anyway).
        this.logFault('rollout-lease', 'warn', { err: (error as Error).message }, 'rollout driver: cannot reach the store to hold the lease; not driving until it can');
        return undefined;
      });
      if (this.token !== previous) {
        if (this.token !== undefined) logger.info({ event: 'rollout-driver', token: this.token }, `this gateway drives rollouts now (lease token ${this.token})`);
        else if (previous !== undefined) logger.warn({ event: 'rollout-driver-lost', token: previous }, 'this gateway no longer drives rollouts (lease lost)');
      }
      if (this.token === undefined) {
        this.liveByService.clear();
        return;
      }
    } else this.token = 0;
    if (this.closed) return;
    const current = await store.current();
    // What is kept per run (figure baselines, external checks' answers) goes when its run ends.
    const active = new Set(current.document.services.flatMap((service) => (isActive(service.rolloutRun) ? [`${service.rolloutRun!.id}:`] : [])));
    const isLive = (key: string) => [...active].some((prefix) => key.startsWith(prefix));
    for (const key of this.baselines.keys()) if (!isLive(key)) this.baselines.delete(key);
    for (const key of this.checks.keys()) if (!isLive(key)) this.checks.delete(key);
    const seen = new Set<string>();
    for (const service of current.document.services) {
      const run = service.rolloutRun;
      if (!isActive(run)) continue;
      seen.add(service.name);
      const wrote = await this.drive(current, service.name, run);
      // One write per tick: the next tick reads the version it made.
      if (wrote) break;
    }
    for (const name of this.liveByService.keys()) if (!seen.has(name)) this.liveByService.delete(name);
  }

  /** Judges one running rollout and writes its next move, if any. True when it wrote. */
  private async drive(current: StoredVersion, service: string, run: RolloutRun): Promise<boolean> {
    const now = new Date();
    const elapsedMs = Math.max(0, now.getTime() - Date.parse(run.stepStartedAt));
    const step = run.plan.steps[run.step]!;
    const live = (outcome: LiveRollout['outcome'], evidence: readonly RolloutEvidence[]) => this.publish({ service, rollout: run.id, step: run.step, status: run.status, outcome, evidence, elapsedMs, holdMs: step.holdMs, driver: this.options.instanceId, at: now.toISOString() });
    if (run.status === 'paused') {
      live('paused', []);
      return false;
    }
    const changed = manualChange(current.document, service, run);
    if (changed !== undefined) {
      const reason =
        `routing of "${service}" changed outside the rollout (version ${current.version} by ${current.meta.actor}: "${current.meta.reason}"): ${changed}; ` +
        'paused instead of overwriting it. `graygate rollout resume` puts the step\'s routing back and carries on; `graygate rollout abort` ends it';
      return this.write(current, service, pauseOrResume(current.document, service, 'pause', DRIVER_ACTOR, reason, now), reason);
    }
    if (step.gate) {
      live('gate', []);
      return false;
    }
    const key = `${run.id}:${run.step}:${run.stepStartedAt}`;
    // A read error is never a pass: the analysis gets "could not be read" and holds the step.
    let figures: { ok: true; window: ReturnType<typeof fleetWindow> } | { ok: false; reason: string };
    try {
      const sample = await this.options.sample();
      let baseline = this.baselines.get(key);
      if (baseline === undefined) {
        for (const old of this.baselines.keys()) if (old.startsWith(`${run.id}:`)) this.baselines.delete(old);
        baseline = sample;
        this.baselines.set(key, sample);
      }
      figures = { ok: true, window: fleetWindow(baseline, sample) };
    } catch (error) {
      figures = { ok: false, reason: (error as Error).message };
    }
    const samples = figures.ok ? samplesOf(figures.window.services[service]) : { candidate: 0, stable: 0 };
    const analysis = analyzeStep({ service, figures, nowMs: now.getTime(), external: this.checkResults(key, service, run, samples) }, run.plan.analysis);
    const evidence = analysis.evidence.map(toEvidence);
    const outcome = analysis.verdict;
    live(outcome, evidence);
    if (outcome === 'fail') {
      const failing = evidence.filter((e) => e.outcome === 'fail');
      const reason = `rolled back at step ${run.step + 1}: ${failing.map((e) => `${e.metric} failed: ${e.detail}`).join('; ')}`;
      return this.write(current, service, rollBack(current.document, service, DRIVER_ACTOR, reason, now, evidence, 'rollback'), reason, evidence);
    }
    if (elapsedMs < step.holdMs) return false;
    if (outcome === 'pass') {
      const reason = `step ${run.step + 1} passed after ${Math.round(elapsedMs / 1000)} s: ${analysis.reason}`;
      return this.write(current, service, advance(current.document, service, DRIVER_ACTOR, reason, now, evidence), reason, evidence);
    }
    if (elapsedMs >= step.holdMs + run.plan.inconclusivePauseMs) {
      const open = evidence.filter((e) => e.outcome === 'inconclusive');
      const reason = `step ${run.step + 1} still inconclusive ${Math.round((elapsedMs - step.holdMs) / 1000)} s past its hold: ${open.map((e) => e.detail).join('; ')}; paused for a person (resume, promote or abort)`;
      return this.write(current, service, pauseOrResume(current.document, service, 'pause', DRIVER_ACTOR, reason, now, evidence), reason, evidence);
    }
    return false;
  }

  /** The external checks' latest answers; each is called again every `everyMs`, in the background. */
  private checkResults(key: string, service: string, run: RolloutRun, samples: { candidate: number; stable: number }): ExternalCheckResult[] {
    return run.plan.checks.map((check, index) => {
      const slotKey = `${key}:${index}`;
      let slot = this.checks.get(slotKey);
      if (slot === undefined) {
        // A new step of this run: its earlier steps' answers go. Other runs' slots stay (several
        // services may be rolling out at once, each with its own checks).
        for (const old of this.checks.keys()) if (old.startsWith(`${run.id}:`) && !old.startsWith(`${key}:`)) this.checks.delete(old);
        slot = { result: undefined, calledAt: 0, inFlight: false };
        this.checks.set(slotKey, slot);
      }
      const held = slot;
      if (!held.inFlight && Date.now() - held.calledAt >= check.everyMs) {
        held.inFlight = true;
        held.calledAt = Date.now();
        void runCheck(check, index, { service, candidate: run.candidate, runId: run.id, step: run.step, samples }).then((result) => {
          held.result = result;
          held.inFlight = false;
        });
      }
      const name = checkName(check, index);
      return held.result ?? { check: name, outcome: 'error' as const, metric: name, value: null, bound: null, reason: 'no answer yet' };
    });
  }

  private publish(live: LiveRollout): void {
    this.liveByService.set(live.service, live);
    const leases = this.options.store.leases;
    if (leases) void leases.putLive(`rollout:${live.service}`, JSON.stringify(live), LIVE_TTL_MS).catch(() => undefined);
  }

  /** Writes a move under the lease, serves it here, logs and notifies. False when another write got there first. */
  private async write(current: StoredVersion, service: string, move: Move, reason: string, evidence: RolloutEvidence[] = []): Promise<boolean> {
    const { store, logger, instanceId } = this.options;
    let written: StoredVersion;
    try {
      written = await store.write(parseRoutingDocument(move.document as RoutingDocument), {
        expectedVersion: current.version,
        actor: DRIVER_ACTOR,
        reason: `${service}: ${reason}`,
        ...(store.leases && this.token !== undefined ? { lease: { name: ROLLOUT_LEASE, holder: instanceId, token: this.token } } : {}),
      });
    } catch (error) {
      // Someone wrote first (an operator, or an abort): the next tick reads their version.
      if (isGraygateError(error) && (error.code === 'GG_VERSION_CONFLICT' || error.code === 'GG_LEASE_LOST')) {
        if (error.code === 'GG_LEASE_LOST') this.token = undefined;
        return false;
      }
      throw error;
    }
    await this.options.applyWritten(written);
    const level = move.event === 'rollback' ? 'error' : move.event === 'pause' ? 'warn' : 'info';
    logger[level](
      { event: `rollout-${move.event}`, service, rollout: move.run.id, step: move.run.step + 1, status: move.run.status, version: written.version, evidence },
      `rollout of ${move.run.candidate} on ${service}: ${reason}`,
    );
    this.options.events?.moved(service, move.event);
    void sendNotification(move.run, notificationOf(service, move.run, move.event, DRIVER_ACTOR, reason, evidence), logger);
    return true;
  }
}

/** Requests of each version in a window (a candidate's fallbacks to stable count as the candidate's). */
function samplesOf(figures: { stable: { requests: number }; candidate: { requests: number; failures: number } } | undefined): { candidate: number; stable: number } {
  return { candidate: (figures?.candidate.requests ?? 0) + (figures?.candidate.failures ?? 0), stable: figures?.stable.requests ?? 0 };
}

/** The analysis's evidence as the rollout records it. */
function toEvidence(check: CheckEvidence): RolloutEvidence {
  return {
    metric: check.check,
    outcome: check.verdict,
    candidate: check.value,
    stable: check.stableValue,
    bound: check.bound,
    samples: { candidate: check.candidateSamples, stable: check.stableSamples },
    detail: check.reason,
  };
}
