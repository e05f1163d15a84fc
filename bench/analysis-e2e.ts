/**
 * The end-to-end half of `npm run bench:analysis -- --e2e`: two real gateways (one with
 * `--workers 2`) sharing one real Redis, backends that inject an error rate and latency per
 * version, a paced load of 200 req/s in total spread over both gateways, and rollouts started
 * through the admin API with a 10 % first step. Measured:
 *
 * (a) candidate at 5 % errors against stable at 0.1 %: time from the candidate's first bad
 *     response (as the load generator saw it) to the rollback the driver wrote (its record's time);
 * (b) candidate p99 2× stable's, same p50: the same, "bad" being a response whose injected delay
 *     is above stable's p99;
 * (c) candidate as good as stable (0.5 % errors both, same latency), a four-step plan: steps
 *     taken, and whether it was rolled back (it should not be);
 * (d) the driving gateway SIGKILLed mid-rollout: time until the survivor drives the run at the
 *     stored step, and the requests that failed other than those in flight on the killed gateway.
 *
 * Side by side, the fixed-interval threshold policy of the simulation (every 60 s, the
 * candidate's error rate above 1 % or its p99 above 500 ms fails a check; the third failed check
 * rolls back; a clean interval past the hold advances) is replayed on the per-second candidate
 * figures the load generator recorded during the live runs of the same scenario: no second live
 * run. It needs minutes of traffic where graygate needed seconds, so the recorded seconds of a
 * scenario are concatenated (every repetition, in order) and cycled, each replay starting at
 * another repetition's first second.
 *
 * Bounded: each scenario stops at its repetition count or its share of `--budget-s` (default
 * 540 s), whichever comes first, after at least one repetition; every repetition has a cap.
 * Flags: --runs N (a, b; default 10), --good-runs N (c; default 2), --kill-runs N (d; default 3),
 * --budget-s S, --rate R (req/s; default 200), --only-e2e (skip the simulation), --scenarios a,b,c,d.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Agent, request } from 'undici';
import { quantile } from './analysis-sim.js';
// @ts-expect-error: plain JS module shared by the bench scripts (typed below)
import * as harnessModule from './lib/harness.mjs';

interface BenchRun {
  readonly dir: string;
  start(name: string, command: string, args: string[], onStdout?: (line: string) => void): ChildProcess;
  stopAll(): void;
}
const { cliPath, createRun, freePort, gitCommit, root, startRedis, waitPort } = harnessModule as {
  cliPath: string;
  root: string;
  createRun(prefix: string): BenchRun;
  freePort(): Promise<number>;
  waitPort(port: number, withinMs?: number): Promise<void>;
  gitCommit(): string | undefined;
  startRedis(run: BenchRun): Promise<{ url: string }>;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How a version's backend answers: an error with `errorRate`, after a lognormal delay (median, sigma). */
export interface VersionModel {
  readonly errorRate: number;
  readonly medianMs: number;
  readonly sigma: number;
}

const STABLE: VersionModel = { errorRate: 0.001, medianMs: 50, sigma: 0.5 };
/** Same median, p99 twice stable's: only the tail is worse (ln 2 / z(0.99) added to sigma). */
const SLOW_TAIL: VersionModel = { ...STABLE, sigma: STABLE.sigma + Math.log(2) / 2.326 };
const p99Of = (model: VersionModel) => model.medianMs * Math.exp(2.326 * model.sigma);

/** Upstreams the backends serve: one port each. */
const MODELS = {
  'stable-01': STABLE,
  'candidate-errors': { ...STABLE, errorRate: 0.05 },
  'candidate-tail': SLOW_TAIL,
  'stable-05': { ...STABLE, errorRate: 0.005 },
  'candidate-good': { ...STABLE, errorRate: 0.005 },
  'stable-clean': { ...STABLE, errorRate: 0 },
  'candidate-clean': { ...STABLE, errorRate: 0 },
} satisfies Record<string, VersionModel>;
type Upstream = keyof typeof MODELS;

/** One service per scenario, so a scenario's rollouts never meet another's figures. */
const SERVICES: Record<string, { stable: Upstream; candidate: Upstream }> = {
  errors: { stable: 'stable-01', candidate: 'candidate-errors' },
  tail: { stable: 'stable-01', candidate: 'candidate-tail' },
  good: { stable: 'stable-05', candidate: 'candidate-good' },
  kill: { stable: 'stable-clean', candidate: 'candidate-clean' },
};

/** Where processes are started: the bench's run (bench/lib/harness.mjs) or a test's tracked spawner. */
export interface Lab {
  readonly dir: string;
  /** Starts a process in a process group of its own; `onStdout` gets its stdout line by line. */
  start(name: string, command: string, args: string[], onStdout?: (line: string) => void): ChildProcess;
  readonly redisUrl: string;
}

// ---------------------------------------------------------------------------------------------
// Backends

/** One node process serving every upstream of MODELS on its own port (shared noise: the same process and event loop). */
async function startBackends(lab: Lab): Promise<Record<Upstream, string>> {
  const ports: Record<string, number> = {};
  for (const name of Object.keys(MODELS)) ports[name] = await freePort();
  const spec = Object.entries(MODELS).map(([name, model]) => ({ name, port: ports[name], ...model }));
  // The delay is drawn per request (Box-Muller); the injected delay goes back in a header, so the
  // load generator can tell a "bad" (slower than stable's p99) response from loopback noise.
  const script = `const http=require('http');const spec=${JSON.stringify(spec)};
function gauss(){let u=0;while(u===0)u=Math.random();return Math.sqrt(-2*Math.log(u))*Math.cos(2*Math.PI*Math.random())}
for(const s of spec)http.createServer((q,r)=>{q.resume();const d=s.medianMs*Math.exp(s.sigma*gauss());const bad=Math.random()<s.errorRate;
setTimeout(()=>{const body=JSON.stringify({version:s.name});r.writeHead(bad?500:200,{'content-type':'application/json','x-delay-ms':d.toFixed(1),'content-length':Buffer.byteLength(body)});r.end(body)},d)}).listen(s.port,'127.0.0.1')`;
  lab.start('backends', process.execPath, ['-e', script]);
  await Promise.all(Object.values(ports).map((port) => waitPort(port)));
  return Object.fromEntries(Object.entries(ports).map(([name, port]) => [name, `http://127.0.0.1:${port}`])) as Record<Upstream, string>;
}

// ---------------------------------------------------------------------------------------------
// Gateways

interface Gateway {
  readonly name: string;
  readonly workers: number;
  readonly url: string;
  readonly adminUrl: string;
  child: ChildProcess;
  /** JSON log lines seen so far (only the rollout ones are kept). */
  readonly logs: Record<string, unknown>[];
  alive: boolean;
}

function gatewayConfig(redisUrl: string, backends: Record<Upstream, string>, port: number, adminPort: number): unknown {
  return {
    listen: `127.0.0.1:${port}`,
    admin: { listen: `127.0.0.1:${adminPort}` },
    // The access log would write 200 lines a second for nothing the bench reads.
    log: { level: 'info', format: 'json', access: { enabled: false } },
    store: { kind: 'redis', url: redisUrl, namespace: 'analysis-e2e', pollMs: 1_000 },
    upstreams: Object.fromEntries(Object.entries(backends).map(([name, url]) => [name, { servers: [url] }])),
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: Object.entries(SERVICES).map(([name, s]) => ({ name, match: { pathPrefix: `/${name}` }, stable: s.stable })),
  };
}

async function startGateway(lab: Lab, name: string, workers: number, config: { port: number; adminPort: number; file: string }): Promise<Gateway> {
  const logs: Record<string, unknown>[] = [];
  const child = lab.start(name, process.execPath, [cliPath, 'start', '--config', config.file, '--workers', String(workers)], (line) => {
    if (!line.includes('"rollout')) return;
    try {
      logs.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line that is not JSON (none expected with format json)
    }
  });
  await waitPort(config.port, 90_000);
  await waitPort(config.adminPort, 90_000);
  return { name, workers, url: `http://127.0.0.1:${config.port}`, adminUrl: `http://127.0.0.1:${config.adminPort}`, child, logs, alive: true };
}

async function admin(gateway: Gateway, method: 'GET' | 'POST', urlPath: string, body?: unknown): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const response = await request(`${gateway.adminUrl}${urlPath}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const text = await response.body.text();
  return { status: response.statusCode, body: text.startsWith('{') ? JSON.parse(text) : text };
}

async function isDriver(gateway: Gateway): Promise<boolean> {
  if (!gateway.alive) return false;
  try {
    return /^graygate_rollout_driver 1$/m.test((await admin(gateway, 'GET', '/metrics')).body as string);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Load

/** One candidate second as the load generator saw it. */
export interface CandidateSecond {
  requests: number;
  errors: number;
  /** Responses slower than stable's p99 (by the injected delay) or 5xx: what "bad" means here. */
  bad: number;
  /** Client-side latencies (ms) of the candidate's responses. */
  latencies: number[];
}

interface Failure {
  readonly gateway: string;
  readonly sentAt: number;
  readonly what: string;
}

/** What one repetition saw: per-second candidate figures from its start, and its first bad candidate response. */
class Recorder {
  readonly seconds: CandidateSecond[] = [];
  firstBadAt: number | undefined;
  readonly failures: Failure[] = [];
  readonly byVersion: Record<string, number> = {};
  constructor(
    readonly startedAt: number,
    private readonly isBad: (status: number, delayMs: number) => boolean,
  ) {}
  response(gateway: string, sentAt: number, at: number, status: number, version: string | undefined, delayMs: number, latencyMs: number): void {
    if (sentAt < this.startedAt) return;
    this.byVersion[version ?? 'unknown'] = (this.byVersion[version ?? 'unknown'] ?? 0) + 1;
    if (status < 200 || status >= 300) this.failures.push({ gateway, sentAt, what: `status ${status} from ${version ?? 'the gateway'}` });
    if (version === undefined || !version.startsWith('candidate')) return;
    const index = Math.floor((at - this.startedAt) / 1000);
    while (this.seconds.length <= index) this.seconds.push({ requests: 0, errors: 0, bad: 0, latencies: [] });
    const second = this.seconds[index]!;
    second.requests++;
    second.latencies.push(latencyMs);
    if (status >= 500) second.errors++;
    if (this.isBad(status, delayMs)) {
      second.bad++;
      if (this.firstBadAt === undefined || at < this.firstBadAt) this.firstBadAt = at;
    }
  }
  failed(gateway: string, sentAt: number, what: string): void {
    if (sentAt >= this.startedAt) this.failures.push({ gateway, sentAt, what });
  }
}

/**
 * A paced open-loop load: `rate` requests a second in total, each to the next live gateway in
 * turn, each with a random user id (so a percentage step splits them), whatever the answers'
 * latency. Bounded: it runs until stopped, and at most `maxInFlight` requests wait at once
 * (beyond that a request is counted as not sent, never queued).
 */
class PacedLoad {
  recorder: Recorder | undefined;
  path = '/';
  private timer: NodeJS.Timeout | undefined;
  private sent = 0;
  private startedAt = 0;
  private turn = 0;
  private inFlight = 0;
  notSent = 0;
  private readonly agent = new Agent({ connections: 64, keepAliveTimeout: 30_000 });
  constructor(
    private readonly rate: number,
    private readonly gateways: Gateway[],
    private readonly maxInFlight = 400,
  ) {}
  start(): void {
    this.startedAt = performance.now();
    this.sent = 0;
    this.timer = setInterval(() => this.tick(), 10);
  }
  private tick(): void {
    const due = Math.floor(((performance.now() - this.startedAt) * this.rate) / 1000) - this.sent;
    for (let i = 0; i < due; i++) {
      this.sent++;
      const live = this.gateways.filter((g) => g.alive);
      if (live.length === 0 || this.inFlight >= this.maxInFlight) {
        this.notSent++;
        continue;
      }
      void this.one(live[this.turn++ % live.length]!);
    }
  }
  private async one(gateway: Gateway): Promise<void> {
    const recorder = this.recorder;
    const sentAt = Date.now();
    const t0 = performance.now();
    this.inFlight++;
    try {
      const response = await request(`${gateway.url}${this.path}`, {
        dispatcher: this.agent,
        headers: { 'x-user-id': String(1 + Math.floor(Math.random() * 10_000_000)) },
        headersTimeout: 10_000,
        bodyTimeout: 10_000,
      });
      const text = await response.body.text();
      const latencyMs = performance.now() - t0;
      let version: string | undefined;
      try {
        version = (JSON.parse(text) as { version?: string }).version;
      } catch {
        version = undefined;
      }
      const delayMs = Number(response.headers['x-delay-ms'] ?? NaN);
      recorder?.response(gateway.name, sentAt, Date.now(), response.statusCode, version, delayMs, latencyMs);
    } catch (error) {
      recorder?.failed(gateway.name, sentAt, (error as Error).message);
    } finally {
      this.inFlight--;
    }
  }
  async stop(): Promise<void> {
    clearInterval(this.timer);
    const deadline = Date.now() + 15_000;
    while (this.inFlight > 0 && Date.now() < deadline) await sleep(50);
    await this.agent.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The threshold policy, replayed on recorded seconds

/** The fixed-interval policy of the simulation: Argo Rollouts' / Flagger's defaults. */
export const THRESHOLD = { intervalS: 60, failureLimit: 3, maxErrorRate: 0.01, maxP99Ms: 500 } as const;

export interface ThresholdOutcome {
  readonly result: 'rollback' | 'done' | 'held';
  readonly stepsTaken: number;
  /** From the first bad second to the rollback (s); null without a rollback or without a bad second. */
  readonly detectionS: number | null;
  readonly durationS: number;
}

function p99(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(0.99 * sorted.length) - 1)]!;
}

/**
 * What the threshold policy would have decided on `seconds` (cycled from `offset`): an interval
 * whose candidate error rate is above 1 % or whose p99 is above 500 ms is a failed check, the
 * third rolls back; a clean interval once a step has held `holdS` advances. Stops after `maxS`.
 */
export function thresholdReplay(seconds: readonly CandidateSecond[], offset: number, plan: { steps: number; holdS: number }, maxS: number): ThresholdOutcome {
  if (seconds.length === 0) return { result: 'held', stepsTaken: 0, detectionS: null, durationS: 0 };
  let firstBad: number | null = null;
  let failed = 0;
  let step = 0;
  let stepStart = 0;
  let interval: CandidateSecond = { requests: 0, errors: 0, bad: 0, latencies: [] };
  for (let t = 1; t <= maxS; t++) {
    const second = seconds[(offset + t - 1) % seconds.length]!;
    if (firstBad === null && second.bad > 0) firstBad = t - 1;
    interval.requests += second.requests;
    interval.errors += second.errors;
    interval.latencies.push(...second.latencies);
    if (t % THRESHOLD.intervalS !== 0) continue;
    const isFailed = (interval.requests > 0 && interval.errors / interval.requests > THRESHOLD.maxErrorRate) || p99(interval.latencies) > THRESHOLD.maxP99Ms;
    interval = { requests: 0, errors: 0, bad: 0, latencies: [] };
    if (isFailed) {
      failed++;
      if (failed >= THRESHOLD.failureLimit) return { result: 'rollback', stepsTaken: step, detectionS: firstBad === null ? null : t - firstBad, durationS: t };
    } else if (t - stepStart >= plan.holdS) {
      step++;
      stepStart = t;
      if (step >= plan.steps) return { result: 'done', stepsTaken: step, detectionS: null, durationS: t };
    }
  }
  return { result: 'held', stepsTaken: step, detectionS: null, durationS: maxS };
}

// ---------------------------------------------------------------------------------------------
// Scenarios

export interface Options {
  /** Repetitions of (a) and (b). */
  runs: number;
  goodRuns: number;
  killRuns: number;
  budgetS: number;
  rate: number;
  scenarios: readonly ('a' | 'b' | 'c' | 'd')[];
  /** Per-repetition cap of (a) and (b), s: past it the run is aborted and counted as not rolled back. */
  capS?: { a: number; b: number };
  /** Hold of each of (c)'s four steps, ms. */
  goodHoldMs?: number;
  log?: (line: string) => void;
}

export interface DetectionRun {
  readonly result: 'rollback' | 'not rolled back' | 'paused' | 'done';
  /** First bad candidate response to the rollback record (ms). */
  readonly detectionMs: number | null;
  /** The rollout's start to the rollback record (ms). */
  readonly startToRollbackMs: number | null;
  readonly failingCheck: string | null;
  /** Candidate requests the rollback's errors/latency evidence rests on. */
  readonly samples: { readonly candidate: number; readonly stable: number } | null;
  readonly evidence: unknown;
}

export interface GoodRun {
  readonly result: string;
  readonly stepsTaken: number;
  readonly steps: number;
  readonly durationMs: number;
}

export interface KillRun {
  readonly killed: string;
  readonly stepAtKill: number;
  readonly resumedAtStep: number | null;
  /** SIGKILL to the survivor driving the run at the stored step (ms); null if it did not within the cap. */
  readonly resumeMs: number | null;
  /** Requests that failed, other than those in flight on the killed gateway. */
  readonly failed: number;
  readonly failures: readonly Failure[];
  /** Requests in flight on the killed gateway when it was killed (they fail with it: not the rollout's doing). */
  readonly inFlightOnKilled: number;
  readonly requests: number;
}

export interface Report {
  readonly when: string;
  readonly options: Omit<Options, 'log'>;
  readonly host: { cpus: number; loadavg: number[]; node: string; commit: string | undefined };
  readonly rows: Record<string, string>[];
  readonly scenarios: {
    a?: { runs: DetectionRun[]; threshold: ThresholdOutcome[] };
    b?: { runs: DetectionRun[]; threshold: ThresholdOutcome[] };
    c?: { runs: GoodRun[]; threshold: ThresholdOutcome[] };
    d?: { runs: KillRun[] };
  };
  readonly notSent: number;
}

const FIRST_STEP_PERCENT = 10;

/**
 * Starts the backends and the two gateways in `lab`, runs the chosen scenarios, and returns the
 * report (the table rows, and every repetition's figures).
 */
export async function runScenarios(lab: Lab, options: Options): Promise<Report> {
  const log = options.log ?? (() => undefined);
  const backends = await startBackends(lab);
  const configs = await Promise.all(
    ['gw-a', 'gw-b'].map(async (name) => {
      const port = await freePort();
      const adminPort = await freePort();
      const file = path.join(lab.dir, `${name}.json`);
      writeFileSync(file, JSON.stringify(gatewayConfig(lab.redisUrl, backends, port, adminPort)));
      return { name, port, adminPort, file };
    }),
  );
  // One gateway of two processes (its primary and two workers), one of one: the fleet's sum is what is judged.
  const gateways = [await startGateway(lab, 'gw-a (2 workers)', 2, configs[0]!), await startGateway(lab, 'gw-b', 1, configs[1]!)];
  for (const gateway of gateways) await waitServing(gateway);
  const load = new PacedLoad(options.rate, gateways);
  load.start();
  const started = Date.now();
  const share = { a: 0.25, b: 0.35, c: 0.25, d: 0.15 };
  const report: Report['scenarios'] = {};
  const budgetOf = (key: keyof typeof share) => (options.budgetS * 1000 * share[key]) / options.scenarios.reduce((sum, s) => sum + share[s], 0);
  try {
    const stableP99 = p99Of(STABLE);
    if (options.scenarios.includes('a')) {
      const runs = await detectionScenario('errors', options.runs, budgetOf('a'), (options.capS?.a ?? 90) * 1000, (status) => status >= 500);
      report.a = { runs: runs.runs, threshold: replayAll(runs.recorded, { steps: 1, holdS: 900 }, 900) };
    }
    if (options.scenarios.includes('b')) {
      const runs = await detectionScenario('tail', options.runs, budgetOf('b'), (options.capS?.b ?? 120) * 1000, (status, delayMs) => status >= 500 || delayMs > stableP99);
      report.b = { runs: runs.runs, threshold: replayAll(runs.recorded, { steps: 1, holdS: 900 }, 900) };
    }
    if (options.scenarios.includes('c')) report.c = await goodScenario(options.goodRuns, budgetOf('c'), options.goodHoldMs ?? 15_000);
    if (options.scenarios.includes('d')) report.d = { runs: await killScenario(options.killRuns, budgetOf('d')) };
  } finally {
    await load.stop();
  }
  return { when: new Date().toISOString(), options: { ...options, log: undefined } as Omit<Options, 'log'>, host: { cpus: os.cpus().length, loadavg: os.loadavg(), node: process.version, commit: gitCommit() }, rows: rowsOf(report, options), scenarios: report, notSent: load.notSent };

  async function waitServing(gateway: Gateway): Promise<void> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      try {
        const response = await request(`${gateway.url}/kill`, { headers: { 'x-user-id': '1' }, headersTimeout: 5_000, bodyTimeout: 5_000 });
        await response.body.dump();
        if (response.statusCode === 200) return;
      } catch {
        // not yet
      }
      if (Date.now() > deadline) throw new Error(`${gateway.name} does not serve /kill`);
      await sleep(200);
    }
  }

  async function status(service: string, at = gateways.find((g) => g.alive)!) {
    return (await admin(at, 'GET', `/v1/services/${service}/rollout`)).body as { state: string; run: any; live: any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  }

  async function startRollout(service: string, plan: unknown, reason: string): Promise<string> {
    const at = gateways.find((g) => g.alive)!;
    const started = await admin(at, 'POST', `/v1/services/${service}/rollout/start`, { reason, candidate: SERVICES[service]!.candidate, plan });
    if (started.status !== 200) throw new Error(`rollout start of ${service}: ${started.status} ${JSON.stringify(started.body)}`);
    return started.body.run.id as string;
  }

  /** Waits until the run is no longer running (or the cap): its final status, as stored. */
  async function until(service: string, capMs: number, done: (run: any) => boolean) { // eslint-disable-line @typescript-eslint/no-explicit-any
    const deadline = Date.now() + capMs;
    for (;;) {
      const now = await status(service);
      if (done(now.run) || Date.now() > deadline) return now;
      await sleep(200);
    }
  }

  async function detectionScenario(service: string, runs: number, budgetMs: number, capMs: number, isBad: (status: number, delayMs: number) => boolean) {
    const recorded: CandidateSecond[][] = [];
    const results: DetectionRun[] = [];
    const scenarioStarted = Date.now();
    load.path = `/${service}`;
    // The first step holds far longer than any cap: only a fail ends it.
    const plan = { steps: [{ percent: FIRST_STEP_PERCENT, holdMs: 3_600_000 }, { percent: 100, holdMs: 60_000 }], inconclusivePauseMs: 3_600_000 };
    for (let i = 0; i < runs && (i === 0 || Date.now() - scenarioStarted < budgetMs); i++) {
      const recorder = new Recorder(Date.now(), isBad);
      load.recorder = recorder;
      await startRollout(service, plan, `bench ${service} ${i + 1}`);
      const end = await until(service, capMs, (run) => run.status !== 'running');
      const run = end.run;
      let result: DetectionRun;
      if (run.status === 'rolled-back') {
        const record = run.records.at(-1);
        const at = Date.parse(record.at);
        const failing = (record.evidence as { metric: string; outcome: string; samples: { candidate: number; stable: number } }[]).find((e) => e.outcome === 'fail');
        result = {
          result: 'rollback',
          detectionMs: recorder.firstBadAt === undefined ? null : Math.max(0, at - recorder.firstBadAt),
          startToRollbackMs: at - recorder.startedAt,
          failingCheck: failing?.metric ?? null,
          samples: failing?.samples ?? null,
          evidence: record.evidence,
        };
      } else {
        if (run.status === 'running') await admin(gateways.find((g) => g.alive)!, 'POST', `/v1/services/${service}/rollout/abort`, { reason: 'bench cap reached' });
        result = { result: run.status === 'paused' ? 'paused' : 'not rolled back', detectionMs: null, startToRollbackMs: null, failingCheck: null, samples: null, evidence: run.records.at(-1)?.evidence ?? [] };
      }
      results.push(result);
      recorded.push(recorder.seconds.filter((s) => s.requests > 0));
      log(`  ${service} ${i + 1}: ${result.result}${result.detectionMs === null ? '' : ` ${(result.detectionMs / 1000).toFixed(1)} s after the first bad response (${result.failingCheck})`}`);
      load.recorder = undefined;
      // Both gateways serve the rollback (the other within its poll) before the next start.
      await sleep(2_000);
    }
    return { runs: results, recorded };
  }

  async function goodScenario(runs: number, budgetMs: number, holdMs: number): Promise<NonNullable<Report['scenarios']['c']>> {
    const service = 'good';
    const percents = [FIRST_STEP_PERCENT, 25, 50, 75];
    // end: stop keeps the release at the last step (a canary), so the next repetition may start again.
    const plan = { steps: percents.map((percent) => ({ percent, holdMs })), end: 'stop', inconclusivePauseMs: 120_000 };
    const results: GoodRun[] = [];
    const recorded: CandidateSecond[][] = [];
    const scenarioStarted = Date.now();
    load.path = `/${service}`;
    for (let i = 0; i < runs && (i === 0 || Date.now() - scenarioStarted < budgetMs); i++) {
      const recorder = new Recorder(Date.now(), (status) => status >= 500);
      load.recorder = recorder;
      const t0 = Date.now();
      await startRollout(service, plan, `bench good ${i + 1}`);
      const end = await until(service, percents.length * holdMs + 180_000, (run) => run.status !== 'running');
      const run = end.run;
      if (run.status === 'running') await admin(gateways.find((g) => g.alive)!, 'POST', `/v1/services/${service}/rollout/abort`, { reason: 'bench cap reached' });
      const passed = (run.records as { event: string }[]).filter((r) => r.event === 'passed').length;
      results.push({ result: run.status, stepsTaken: passed, steps: percents.length, durationMs: Date.now() - t0 });
      recorded.push(recorder.seconds.filter((s) => s.requests > 0));
      log(`  good ${i + 1}: ${run.status}, ${passed} of ${percents.length} steps passed in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      load.recorder = undefined;
      await sleep(1_000);
    }
    return { runs: results, threshold: replayAll(recorded, { steps: percents.length, holdS: holdMs / 1000 }, 1_800) };
  }

  async function killScenario(runs: number, budgetMs: number): Promise<KillRun[]> {
    const service = 'kill';
    const results: KillRun[] = [];
    const scenarioStarted = Date.now();
    load.path = `/${service}`;
    // Step 1 passes as soon as its samples are in; step 2 holds: the kill lands in it.
    const plan = { steps: [{ percent: FIRST_STEP_PERCENT, holdMs: 1_000 }, { percent: 30, holdMs: 3_600_000 }], inconclusivePauseMs: 3_600_000 };
    for (let i = 0; i < runs && (i === 0 || Date.now() - scenarioStarted < budgetMs); i++) {
      const recorder = new Recorder(Date.now(), (status) => status >= 500);
      load.recorder = recorder;
      await startRollout(service, plan, `bench kill ${i + 1}`);
      const atStep = await until(service, 120_000, (run) => run.step >= 1 || run.status !== 'running');
      if (atStep.run.step < 1 || atStep.run.status !== 'running') throw new Error(`kill scenario: the run did not reach step 2 (${atStep.run.status}: ${atStep.run.reason})`);
      let driver: Gateway | undefined;
      const findUntil = Date.now() + 30_000;
      while (driver === undefined && Date.now() < findUntil) {
        for (const gateway of gateways) if (await isDriver(gateway)) driver = gateway;
        if (driver === undefined) await sleep(100);
      }
      if (driver === undefined) throw new Error('kill scenario: no gateway drives the rollout');
      const survivor = gateways.find((g) => g !== driver)!;
      const stepAtKill = (await status(service, survivor)).run.step as number;
      // Stop sending to it first: what fails then is what was in flight there.
      driver.alive = false;
      const killedAt = Date.now();
      try {
        process.kill(-driver.child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      let resumeMs: number | null = null;
      let resumedAtStep: number | null = null;
      const resumeUntil = Date.now() + 30_000;
      while (resumeMs === null && Date.now() < resumeUntil) {
        const now = await status(service, survivor).catch(() => undefined);
        if (now?.live && Date.parse(now.live.at) >= killedAt && now.live.step === stepAtKill && (await isDriver(survivor))) {
          resumeMs = Date.now() - killedAt;
          resumedAtStep = now.run.step as number;
        } else await sleep(50);
      }
      // A few more seconds under the survivor alone: failures there would be the rollout's.
      await sleep(3_000);
      const stored = await status(service, survivor);
      resumedAtStep ??= stored.run.step as number;
      await admin(survivor, 'POST', `/v1/services/${service}/rollout/abort`, { reason: 'bench: kill measured' });
      load.recorder = undefined;
      const onKilled = recorder.failures.filter((f) => f.gateway === driver.name && f.sentAt <= killedAt);
      const failures = recorder.failures.filter((f) => !onKilled.includes(f));
      const requests = Object.values(recorder.byVersion).reduce((a, b) => a + b, 0);
      results.push({ killed: driver.name, stepAtKill, resumedAtStep, resumeMs, failed: failures.length, failures: failures.slice(0, 20), inFlightOnKilled: onKilled.length, requests });
      log(`  kill ${i + 1}: killed ${driver.name} at step ${stepAtKill + 1}; survivor drove step ${resumedAtStep + 1} ${resumeMs === null ? 'not within 30 s' : `after ${(resumeMs / 1000).toFixed(1)} s`}; ${failures.length} failed requests (${onKilled.length} in flight on the killed gateway)`);
      // Bring the killed gateway back (same ports, same config) for the next repetition.
      const index = gateways.indexOf(driver);
      await new Promise((resolve) => (driver.child.exitCode !== null || driver.child.signalCode !== null ? resolve(undefined) : driver.child.once('exit', resolve)));
      const config = configs[index]!;
      const restarted = await startGateway(lab, driver.name, driver.workers, config);
      await waitServing(restarted);
      gateways[index] = restarted;
    }
    return results;
  }
}

function replayAll(recorded: CandidateSecond[][], plan: { steps: number; holdS: number }, maxS: number): ThresholdOutcome[] {
  const seconds = recorded.flat();
  const offsets: number[] = [];
  let offset = 0;
  for (const run of recorded) {
    offsets.push(offset);
    offset += run.length;
  }
  return offsets.map((start) => thresholdReplay(seconds, start, plan, maxS));
}

const s = (ms: number | null | undefined) => (ms === null || ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`);

function detectionRows(name: string, target: string, runs: DetectionRun[], threshold: ThresholdOutcome[]): Record<string, string>[] {
  const times = runs.map((r) => r.detectionMs).filter((ms): ms is number => ms !== null);
  const rolled = runs.filter((r) => r.result === 'rollback').length;
  const tTimes = threshold.map((r) => r.detectionS).filter((x): x is number => x !== null).map((x) => x * 1000);
  const tRolled = threshold.filter((r) => r.result === 'rollback').length;
  return [
    { scenario: name, policy: 'graygate sequential (live)', runs: String(runs.length), rollback: `${rolled}`, 'detect p50': s(quantile(times, 0.5)), 'detect p95': s(quantile(times, 0.95)), 'steps / resume': '0', target },
    { scenario: name, policy: 'threshold 60 s × 3 (replayed)', runs: String(threshold.length), rollback: `${tRolled}`, 'detect p50': s(quantile(tTimes, 0.5)), 'detect p95': s(quantile(tTimes, 0.95)), 'steps / resume': tRolled === threshold.length ? '0' : 'never rolled back in 900 s', target },
  ];
}

function rowsOf(report: Report['scenarios'], options: Options): Record<string, string>[] {
  const rows: Record<string, string>[] = [];
  const at = `${FIRST_STEP_PERCENT} % of ${options.rate} req/s`;
  if (report.a) rows.push(...detectionRows(`errors 5 % vs 0.1 %, ${at}`, '≤ 15 s p50, ≤ 30 s p95', report.a.runs, report.a.threshold));
  if (report.b) rows.push(...detectionRows(`p99 2× stable (same p50), ${at}`, '≤ 60 s', report.b.runs, report.b.threshold));
  if (report.c) {
    const c = report.c;
    const mean = (xs: number[]) => (xs.length === 0 ? '—' : (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1));
    rows.push({ scenario: 'as good as stable (0.5 % both), 4 steps', policy: 'graygate sequential (live)', runs: String(c.runs.length), rollback: String(c.runs.filter((r) => r.result === 'rolled-back').length), 'detect p50': '—', 'detect p95': '—', 'steps / resume': `${mean(c.runs.map((r) => r.stepsTaken))} of 4 in ${s(quantile(c.runs.map((r) => r.durationMs), 0.5))}`, target: 'no rollback' });
    rows.push({ scenario: 'as good as stable (0.5 % both), 4 steps', policy: 'threshold 60 s × 3 (replayed)', runs: String(c.threshold.length), rollback: String(c.threshold.filter((r) => r.result === 'rollback').length), 'detect p50': '—', 'detect p95': '—', 'steps / resume': `${mean(c.threshold.map((r) => r.stepsTaken))} of 4 in ${s(quantile(c.threshold.map((r) => r.durationS * 1000), 0.5))}`, target: 'no rollback' });
  }
  if (report.d) {
    const d = report.d.runs;
    const resumes = d.map((r) => r.resumeMs).filter((ms): ms is number => ms !== null);
    const sameStep = d.filter((r) => r.resumedAtStep === r.stepAtKill).length;
    rows.push({ scenario: 'driver SIGKILLed mid-rollout', policy: 'graygate sequential (live)', runs: String(d.length), rollback: '—', 'detect p50': '—', 'detect p95': '—', 'steps / resume': `resume p50 ${s(quantile(resumes, 0.5))}, max ${s(resumes.length ? Math.max(...resumes) : null)}; ${sameStep}/${d.length} at the stored step; ${d.reduce((a, r) => a + r.failed, 0)} failed of ${d.reduce((a, r) => a + r.requests, 0)}`, target: 'resume ≤ 5 s, 0 failed' });
  }
  return rows;
}

/** Flags of the e2e run (see the header). */
export function parseOptions(argv: readonly string[]): Options {
  const flag = (name: string, fallback: number) => {
    const index = argv.indexOf(`--${name}`);
    if (index < 0) return fallback;
    const value = Number(argv[index + 1]);
    if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name}: expected a positive number, got ${JSON.stringify(argv[index + 1])}`);
    return value;
  };
  const scenariosIndex = argv.indexOf('--scenarios');
  const scenarios = scenariosIndex < 0 ? ['a', 'b', 'c', 'd'] : String(argv[scenariosIndex + 1]).split(',');
  for (const scenario of scenarios) if (!['a', 'b', 'c', 'd'].includes(scenario)) throw new Error(`--scenarios: expected a comma-separated list of a, b, c, d; got ${JSON.stringify(argv[scenariosIndex + 1])}`);
  return {
    runs: Math.floor(flag('runs', 10)),
    goodRuns: Math.floor(flag('good-runs', 2)),
    killRuns: Math.floor(flag('kill-runs', 3)),
    budgetS: flag('budget-s', 540),
    rate: flag('rate', 200),
    scenarios: scenarios as Options['scenarios'],
  };
}

/** `npm run bench:analysis -- --e2e`: builds dist/, runs the scenarios, prints the table, writes the JSON. */
export async function runEndToEnd(argv: readonly string[] = process.argv): Promise<void> {
  const options = { ...parseOptions(argv), log: (line: string) => console.log(line) };
  console.log(`\nend to end: building dist/ (the gateways run the built CLI)…`);
  await new Promise<void>((resolve, reject) => {
    const build = spawn('npm', ['run', 'build', '--silent'], { cwd: root, stdio: 'inherit' });
    build.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`npm run build exited ${code}`))));
  });
  const run = createRun('analysis-e2e');
  const redis = await startRedis(run);
  const lab: Lab = { dir: run.dir, start: run.start, redisUrl: redis.url };
  const started = Date.now();
  console.log(`end to end: two gateways (one with 2 workers), one Redis, ${options.rate} req/s; scenarios ${options.scenarios.join(', ')}; budget ${options.budgetS} s`);
  let report: Report;
  try {
    report = await runScenarios(lab, options);
  } finally {
    run.stopAll();
  }
  console.table(report.rows);
  console.log(`end to end took ${((Date.now() - started) / 1000).toFixed(0)} s; the threshold rows are replayed on the candidate's recorded per-second figures of the same runs; ${report.notSent} requests not sent (load generator at its in-flight cap)`);
  const dir = path.join(root, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `analysis-e2e-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(report, null, 1));
  console.log(`raw results: ${path.relative(root, file)}`);
}
