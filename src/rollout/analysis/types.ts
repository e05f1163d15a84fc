import type { SparseHistogram } from './histogram.js';

/**
 * Cumulative figures of one version of one service in one gateway process (its workers summed),
 * counted since `GatewayFigures.startedAt`: a window is the difference of two reports.
 */
export interface VersionFigures {
  /** Responses this version served (any status; a candidate decision served by stable counts for stable). */
  readonly requests: number;
  /** Of those, responses with a 5xx status (the gateway's own 502/504 for this version's upstream included). */
  readonly errors: number;
  /**
   * Requests the rules sent to this version that it could not take (no server, every server
   * ejected, or no connection), and that went to stable instead: invisible in `errors`, yet a
   * failure of this version. Always 0 for stable, which has nothing to fall back to.
   */
  readonly failures: number;
  /** Latency (time to the end of the response) of `requests`, see histogram.ts. */
  readonly latency: SparseHistogram;
}

/** Stable and candidate side by side, for one service. */
export interface ServiceFigures {
  readonly stable: VersionFigures;
  readonly candidate: VersionFigures;
}

/** What one gateway reports (part of its load report): cumulative per-service, per-version figures. */
export interface GatewayFigures {
  /**
   * Names this run of the counters (random, new at every process start). A different id at the
   * end of a window than at its start means the gateway restarted and its counters began again.
   */
  readonly countersId: string;
  /** When (ms, the gateway's clock) the counters began. */
  readonly startedAt: number;
  /** By service name. A service without traffic since start may be absent. */
  readonly services: Readonly<Record<string, ServiceFigures>>;
}

/** One gateway's figures as read from the store at one moment (`at`: the store's clock). */
export interface GatewaySample {
  readonly instanceId: string;
  readonly at: number;
  /** Undefined when the gateway reports load but no figures (an older version): it is left out, and named. */
  readonly figures: GatewayFigures | undefined;
}

/** Every gateway's figures at one read: those reporting in time, and those whose report is stale. */
export interface FleetSample {
  /** The store's clock at the read, in ms. */
  readonly at: number;
  readonly gateways: readonly GatewaySample[];
  /** Gateways whose last report is older than the staleness bound: left out of every sum. */
  /** ageMs: null when the report could not be read (malformed): treated as stale. */
  readonly stale: readonly { readonly instanceId: string; readonly ageMs: number | null }[];
}

/** A gateway left out of a window, and why (stale, restarted without a start figure, no figures…). */
export interface ExcludedGateway {
  readonly instanceId: string;
  readonly reason: string;
}

/** A gateway whose counters began again within the window: only what it counted since is included. */
export interface CounterReset {
  readonly instanceId: string;
  readonly reason: string;
}

/**
 * The fleet's figures of one window: per gateway the end minus the start, summed. Never negative:
 * a gateway whose counters went back (a restart) contributes only what it counted since.
 */
export interface FleetWindow {
  readonly fromMs: number;
  readonly toMs: number;
  /** By service name. */
  readonly services: Readonly<Record<string, ServiceFigures>>;
  /** Gateways summed. */
  readonly gateways: readonly string[];
  readonly excluded: readonly ExcludedGateway[];
  readonly resets: readonly CounterReset[];
}

/** The outcome of one check, and of a step: pass advances, fail rolls back, inconclusive holds. */
export type Verdict = 'pass' | 'fail' | 'inconclusive';

/** The built-in checks; external checks (Prometheus, webhook) bring their own names. */
export type CheckName = 'samples' | 'errors' | 'latency-p50' | 'latency-p99' | 'figures';

/**
 * Why one check said what it said; self-explaining, so it is printed as is (API, CLI, history,
 * log, dashboard, notifications).
 */
export interface CheckEvidence {
  /** `samples`, `errors`, `latency-p50`, `latency-p99`, `figures`, or an external check's name. */
  readonly check: CheckName | (string & {});
  readonly verdict: Verdict;
  /** What `value` measures, with its unit: `error rate (5xx + upstream failures)`, `p99 latency ms`, `candidate requests`. */
  readonly metric: string;
  /** The candidate's figure (rate as a fraction, latency in ms, a count); null when it could not be measured. */
  readonly value: number | null;
  /**
   * Stable's figure for the same measure in the same window, in the same unit (its error rate,
   * its p50/p99, its request count); null when it could not be measured or the check has no
   * stable counterpart (an external check).
   */
  readonly stableValue: number | null;
  /** The bound it is judged against, in the same unit: the highest the candidate may show; null when there is none. */
  readonly bound: number | null;
  readonly candidateSamples: number;
  readonly stableSamples: number;
  /**
   * A sentence saying why: the figures of both versions, the bound and where it comes from, and
   * the statistical evidence (`e-value 1532 ≥ 1000`), or what is missing.
   */
  readonly reason: string;
  /**
   * The sequential test's evidence against "the candidate is within the bound" (an e-value: it
   * fails at 1/alpha). Absent for checks that are not statistical.
   */
  readonly evidence?: number;
  /** The e-value the check fails at (1/alpha of this check). */
  readonly evidenceToFail?: number;
}

/** An external check's outcome as the driver measured it (a Prometheus query, a webhook): judged as is. */
export interface ExternalCheckResult {
  readonly check: string;
  /** `error`: it could not be read (timeout, refused, bad answer): never a pass. */
  readonly outcome: Verdict | 'error';
  readonly metric: string;
  readonly value: number | null;
  readonly bound: number | null;
  readonly reason: string;
}

/** The figures the driver could read for one step, or why it could not. */
export type FiguresRead = { readonly ok: true; readonly window: FleetWindow } | { readonly ok: false; readonly reason: string };

/** One look at a step: everything the analysis judges. Time is passed in; the analysis reads no clock. */
export interface StepInput {
  /** The service the release belongs to. */
  readonly service: string;
  /** Figures since the step began (the whole step so far: the tests are valid at every look). */
  readonly figures: FiguresRead;
  /** Now, in ms (the driver's clock); stamped on the result. */
  readonly nowMs: number;
  /** Outcomes of the step's external checks, if any. */
  readonly external?: readonly ExternalCheckResult[];
}

/** The judgment of one look at a step. */
export interface StepAnalysis {
  /** fail if any check failed; else inconclusive if any check is; else pass. */
  readonly verdict: Verdict;
  /** One line: the deciding check's reason (for fail and inconclusive), or a summary for pass. */
  readonly reason: string;
  /** Every check, in a fixed order: samples, errors, latency-p50, latency-p99, then external ones. */
  readonly evidence: readonly CheckEvidence[];
  /** `StepInput.nowMs`. */
  readonly atMs: number;
  /** The window judged, when figures were read. */
  readonly window?: { readonly fromMs: number; readonly toMs: number; readonly gateways: readonly string[]; readonly excluded: readonly ExcludedGateway[]; readonly resets: readonly CounterReset[] };
}
