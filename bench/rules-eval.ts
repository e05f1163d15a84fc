/**
 * Question: what does deciding one request cost (identity + compiled rules), and does it
 * allocate? Run: `npx tsx bench/rules-eval.ts` (about 15 s; re-runs itself with --expose-gc).
 *
 * Each scenario compiles a real routing document with `compileRouting` and evaluates what the
 * data plane does per request: `service.resolveIdentity(facts)` then `service.decide(facts)`.
 * Facts are built once (a pool of 1024 requests with different ids and IPs, rotated) so the
 * loop measures evaluation, not request parsing.
 *
 * Allocation check. Node 20 has no allocated-bytes counter, so: force a full GC, read
 * `heapUsed`, run N evaluations, read `heapUsed` again, and keep the run only if no GC happened
 * in between (a PerformanceObserver counts 'gc' entries). Without a GC, heapUsed only grows by
 * what was allocated, so (after - before) / N is bytes per evaluation. N is chosen so that one
 * 16-byte object per evaluation (320 KB) fits in a fresh young generation, i.e. a per-request
 * allocation cannot hide behind a scavenge. Two controls calibrate the method: an empty loop
 * (≈ 0 B/op: the measurement's own overhead) and a loop that keeps one small object per
 * iteration (must show ≥ 16 B/op, proving the method sees allocations). Identity and rules are
 * also measured apart, so a regression points at its half.
 *
 * Finding when written: rules allocate 0 B; identity allocated 80 B per request once any chain in
 * the process had taken its Promise path (the JWT warm-up here, a token-lookup miss in
 * production): chain.ts `walk` declares `const index` captured by the `.then` closures inside
 * its loop, so V8 allocates a context per iteration. Moving the continuation into a separate
 * function removes it (checked: 80 → 0 B).
 */
import { spawnSync } from 'node:child_process';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { RoutingDocument } from '../src/config/schema.js';
import { identityCompiler } from '../src/identity/request-identity.js';
import { compileRouting } from '../src/rules/compile.js';
import type { CompiledService } from '../src/rules/snapshot.js';
import { makeFacts, type LiteralFacts } from '../test/helpers/facts.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  const self = fileURLToPath(import.meta.url);
  const result = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', self], { stdio: 'inherit', timeout: 120_000 });
  process.exit(result.status ?? 1);
}

const POOL = 1024;
const ROUNDS = 5;
const ROUND_MS = 300;
const ALLOC_EVALS = 20_000;

interface Scenario {
  name: string;
  service: CompiledService;
  pool: LiteralFacts[];
}

const upstreams = { v1: { servers: ['http://127.0.0.1:9'] }, v2: { servers: ['http://127.0.0.1:10'] } };

function compileService(rules: unknown[], sources: unknown[]): CompiledService {
  const document = RoutingDocument.parse({
    upstreams,
    services: [{ name: 'checkout', stable: 'v1', release: { candidate: 'v2', rules } }],
    identity: { sources },
  });
  const snapshot = compileRouting(document, 1, { identity: identityCompiler() });
  return snapshot.matchService('', '/')!;
}

function pool(make: (i: number) => Parameters<typeof makeFacts>[0]): LiteralFacts[] {
  return Array.from({ length: POOL }, (_, i) => makeFacts(make(i)));
}

async function scenarios(): Promise<Scenario[]> {
  const typicalRules = [
    { name: 'deny-vip', to: 'stable', uidList: { ids: Array.from({ length: 50 }, (_, i) => 900_000 + i) } },
    { name: 'beta-header', header: { name: 'x-beta', equals: 'on' } },
    { name: 'five-percent', percentage: { percent: 5 } },
  ];
  const typical: Scenario = {
    name: 'typical: header identity + 3 rules',
    service: compileService(typicalRules, [{ header: { name: 'x-user-id' } }]),
    pool: pool((i) => ({ headers: { 'x-user-id': String(100_000 + i * 7919), ...(i % 50 === 0 ? { 'x-beta': 'on' } : {}) } })),
  };

  // JWT identity in the steady state: every token already verified once (cache hit).
  const secret = 'bench-secret-that-is-at-least-32-bytes';
  const key = new TextEncoder().encode(secret);
  const tokens = await Promise.all(
    Array.from({ length: POOL }, (_, i) =>
      new SignJWT({ sub: `user-${i}` }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(key),
    ),
  );
  const jwtService = compileService(typicalRules, [{ jwt: { secret } }]);
  const jwtPool = pool((i) => ({ headers: { authorization: `Bearer ${tokens[i]}` } }));
  for (const facts of jwtPool) await jwtService.resolveIdentity(facts);
  const jwt: Scenario = { name: 'typical: JWT identity (cached) + 3 rules', service: jwtService, pool: jwtPool };

  const cidrs = Array.from({ length: 50 }, (_, i) => (i % 5 === 4 ? `2001:db8:${i.toString(16)}::/48` : `10.${i}.0.0/16`));
  const largeRules = [
    ...Array.from({ length: 10 }, (_, i) => ({ name: `header-${i}`, header: { name: `x-flag-${i}`, oneOf: ['a', 'b', 'c'] } })),
    { name: 'offices', cidr: { cidrs } },
    { name: 'allow-list', uidList: { ids: Array.from({ length: 100_000 }, (_, i) => i * 3) } },
  ];
  const large: Scenario = {
    name: 'large: 10 headers, 50 CIDRs, 100k ids',
    service: compileService(largeRules, [{ header: { name: 'x-user-id' } }]),
    // Worst case: no header rule matches, the IP is outside every CIDR (all 50 compared).
    pool: pool((i) => ({ headers: { 'x-user-id': String(i * 5) }, clientIp: `192.168.${i & 255}.${(i >> 8) & 255}` })),
  };
  return [typical, jwt, large];
}

function evaluate(service: CompiledService, facts: LiteralFacts): number {
  const pending = service.resolveIdentity(facts);
  if (pending !== undefined) throw new Error('identity went async in the steady state');
  return service.decide(facts).version === 'candidate' ? 1 : 0;
}

/**
 * Time-bounded: ROUNDS rounds of ROUND_MS each. The machine is shared, so wall-clock best and
 * median are shown, and the median of process CPU time per evaluation (time this process was
 * descheduled does not count; the loop is single threaded, so CPU time is the loop's own).
 */
function timeIt(scenario: Scenario): { evals: number; bestNs: number; medianNs: number; cpuNs: number; candidateShare: number } {
  const { service, pool: facts } = scenario;
  let candidate = 0;
  for (let i = 0; i < 200_000; i++) candidate += evaluate(service, facts[i & (POOL - 1)]!); // warm up: let V8 optimize
  candidate = 0;
  let total = 0;
  const perRound: number[] = [];
  const cpuPerRound: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    let evals = 0;
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    const deadline = start + BigInt(ROUND_MS) * 1_000_000n;
    let now = start;
    while (now < deadline && evals < 20_000_000) {
      for (let i = 0; i < 10_000; i++) candidate += evaluate(service, facts[(evals + i) & (POOL - 1)]!);
      evals += 10_000;
      now = process.hrtime.bigint();
    }
    const cpu = process.cpuUsage(cpuStart);
    total += evals;
    perRound.push(Number(now - start) / evals);
    cpuPerRound.push(((cpu.user + cpu.system) * 1000) / evals);
  }
  perRound.sort((a, b) => a - b);
  cpuPerRound.sort((a, b) => a - b);
  return {
    evals: total,
    bestNs: perRound[0]!,
    medianNs: perRound[perRound.length >> 1]!,
    cpuNs: cpuPerRound[cpuPerRound.length >> 1]!,
    candidateShare: candidate / total,
  };
}

// Start times of every GC (forced or not); entries arrive asynchronously, so a window is
// judged by start time after the entries had time to arrive.
const gcStarts: number[] = [];
const observer = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcStarts.push(entry.startTime);
});
observer.observe({ entryTypes: ['gc'] });
const settle = () => new Promise((resolve) => setTimeout(resolve, 30));

let sink: unknown;

/** Bytes allocated per call of `body`, from the best of several GC-free windows. */
async function bytesPerCall(body: (i: number) => void): Promise<{ bytes: number; cleanRuns: number }> {
  // Warm up first: unoptimized (interpreted) code boxes values that optimized code keeps in
  // registers, and the question is what the steady state allocates.
  for (let i = 0; i < 200_000; i++) body(i);
  let best = Infinity;
  let cleanRuns = 0;
  for (let attempt = 0; attempt < 7; attempt++) {
    gc!();
    await settle();
    const opened = performance.now();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < ALLOC_EVALS; i++) body(i);
    const after = process.memoryUsage().heapUsed;
    const closed = performance.now();
    await settle();
    // A GC in the window: heapUsed no longer counts what was allocated.
    if (gcStarts.some((start) => start >= opened && start <= closed)) continue;
    cleanRuns++;
    best = Math.min(best, (after - before) / ALLOC_EVALS);
  }
  return { bytes: best, cleanRuns };
}

async function main(): Promise<void> {
  const list = await scenarios();
  const rows: string[][] = [];
  const empty = await bytesPerCall(() => {});
  const control = await bytesPerCall((i) => {
    sink = { i };
  });
  const show = (r: { bytes: number; cleanRuns: number }) => (r.cleanRuns === 0 ? 'n/a' : r.bytes.toFixed(2));
  for (const scenario of list) {
    const timing = timeIt(scenario);
    const { service, pool: facts } = scenario;
    const whole = await bytesPerCall((i) => {
      sink = evaluate(service, facts[i & (POOL - 1)]!);
    });
    const identity = await bytesPerCall((i) => {
      sink = service.resolveIdentity(facts[i & (POOL - 1)]!);
    });
    const rules = await bytesPerCall((i) => {
      sink = service.decide(facts[i & (POOL - 1)]!);
    });
    rows.push([
      scenario.name,
      timing.evals.toLocaleString('en'),
      timing.bestNs.toFixed(0),
      timing.medianNs.toFixed(0),
      timing.cpuNs.toFixed(0),
      (timing.candidateShare * 100).toFixed(2),
      show(whole),
      show(identity),
      show(rules),
    ]);
  }
  rows.push(['control: empty loop', '', '', '', '', '', show(empty), '', '']);
  rows.push(['control: one {i} object per call', '', '', '', '', '', show(control), '', '']);
  observer.disconnect();

  const header = ['scenario', 'evaluations', 'best ns', 'median ns', 'CPU ns', 'cand. %', 'B/eval', 'B identity', 'B rules'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]) => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  console.log(`node ${process.version}; ns per evaluation over ${ROUNDS} rounds of ${ROUND_MS} ms; heap bytes per call over ${ALLOC_EVALS} calls without a GC`);
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
  if (!(control.bytes >= 16)) console.log('WARNING: the control allocation was not seen; the allocation figures are not trustworthy');
  void sink;
}

await main();
