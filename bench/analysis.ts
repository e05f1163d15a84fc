/**
 * Question: how fast does the rollout analysis roll back a bad candidate, how often does it roll
 * back a good one, and how does that compare with a fixed-interval threshold policy configured
 * like Argo Rollouts' / Flagger's defaults, on the same traffic?
 * Run: `npm run bench:analysis` (simulation, bounded: each scenario stops at its run count or
 * after BUDGET_MS). `npm run bench:analysis -- --e2e` adds the end-to-end run through real
 * gateways (see analysis-e2e.ts for its flags); `-- --only-e2e` runs that alone.
 *
 * Targets: a candidate at 5 % errors against stable at 0.1 %, at 10 % of 200 req/s, rolled back
 * within 15 s (median) / 30 s (p95) of its first bad response; a candidate as good as stable
 * (0.5 % errors both, same latency) rolled back in ≤ 1 % of 500 10-step rollouts; a candidate
 * whose p99 is 2× stable's rolled back within 60 s.
 */
import { quantile, simulate, type Outcome, type Scenario, type VersionModel } from './analysis-sim.js';

// Wall-clock cap: on an idle core the whole table takes well under a minute; a loaded box stops
// early, and the table shows how many runs each row got.
const BUDGET_MS = 300_000;
const STABLE: VersionModel = { errorRate: 0.001, medianMs: 50, sigma: 0.5 };
const PLAN = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
// Same median, p99 twice stable's: only the tail is worse (ln 2 / z(0.99) added to sigma).
const SLOW_TAIL: VersionModel = { ...STABLE, sigma: STABLE.sigma + Math.log(2) / 2.326 };

const scenarios: { scenario: Scenario; runs: number; target: string; share: number }[] = [
  {
    scenario: { name: 'errors 5 % vs 0.1 %, 10 % of 200 req/s', rps: 200, stable: STABLE, candidate: { ...STABLE, errorRate: 0.05 }, steps: [0.1], holdMs: 900_000, pauseAfterMs: 0, lookMs: 1_000 },
    runs: 300,
    share: 0.1,
    target: 'rollback ≤ 15 s median, ≤ 30 s p95 after the first bad response',
  },
  {
    scenario: { name: 'p99 2× stable (same p50), 10 % of 200 req/s', rps: 200, stable: STABLE, candidate: SLOW_TAIL, steps: [0.1], holdMs: 900_000, pauseAfterMs: 0, lookMs: 1_000 },
    runs: 300,
    share: 0.1,
    target: 'rollback ≤ 60 s',
  },
  {
    scenario: { name: 'as good as stable (0.5 % both), 10 steps × 60 s', rps: 200, stable: { ...STABLE, errorRate: 0.005 }, candidate: { ...STABLE, errorRate: 0.005 }, steps: PLAN, holdMs: 60_000, pauseAfterMs: 300_000, lookMs: 2_000 },
    runs: 500,
    share: 0.7,
    target: 'rolled back in ≤ 1 % of rollouts',
  },
  {
    scenario: { name: 'errors 5 % vs 0.1 %, 10 steps × 60 s', rps: 200, stable: STABLE, candidate: { ...STABLE, errorRate: 0.05 }, steps: PLAN, holdMs: 60_000, pauseAfterMs: 300_000, lookMs: 2_000 },
    runs: 200,
    share: 0.1,
    target: 'rolled back in the first step',
  },
];

function seconds(ms: number | null): string {
  return ms === null ? '—' : `${(ms / 1000).toFixed(1)} s`;
}

function summarize(outcomes: Outcome[]): Record<string, string> {
  const rollbacks = outcomes.filter((o) => o.result === 'rollback');
  const detections = rollbacks.map((o) => o.detectionMs).filter((ms): ms is number => ms !== null);
  const steps = outcomes.map((o) => o.stepsTaken);
  return {
    runs: String(outcomes.length),
    rollback: `${rollbacks.length} (${((rollbacks.length / Math.max(1, outcomes.length)) * 100).toFixed(1)} %)`,
    paused: String(outcomes.filter((o) => o.result === 'paused').length),
    'detect p50': seconds(quantile(detections, 0.5)),
    'detect p95': seconds(quantile(detections, 0.95)),
    'steps taken (mean)': (steps.reduce((a, b) => a + b, 0) / Math.max(1, steps.length)).toFixed(2),
    'rollout time p50': seconds(quantile(outcomes.map((o) => o.durationMs), 0.5)),
  };
}

const rows: Record<string, string>[] = [];
const started = Date.now();
// --only-e2e: the end-to-end run alone (the simulation is seeded: its table does not change between runs).
const simulated = process.argv.includes('--only-e2e') ? [] : scenarios;
for (const { scenario, runs, target, share } of simulated) {
  for (const policy of ['sequential', 'threshold'] as const) {
    const outcomes: Outcome[] = [];
    const scenarioStarted = Date.now();
    for (let seed = 1; seed <= runs && Date.now() - scenarioStarted < (BUDGET_MS * share) / 2; seed++) outcomes.push(simulate(scenario, policy, seed * 7919));
    rows.push({ scenario: scenario.name, policy: policy === 'sequential' ? 'graygate sequential' : 'threshold 60 s × 3', ...summarize(outcomes), target });
  }
}
if (rows.length > 0) console.table(rows);
if (rows.length > 0) console.log(`simulation took ${((Date.now() - started) / 1000).toFixed(1)} s (each scenario stops at its run count or its share of ${BUDGET_MS / 1000} s)`);

if (process.argv.includes('--e2e') || process.argv.includes('--only-e2e')) {
  const { runEndToEnd } = await import('./analysis-e2e.js');
  await runEndToEnd(process.argv);
  // The load generator's keep-alive sockets and the run's exit handlers: end here, having written the results.
  process.exit(0);
}
