#!/usr/bin/env node
// Question: does a release cost graygate more than 5 % of its requests/s against no release, at
// the same worker count? (the aim: any release vs. no release, same worker count, at most 5 %
// fewer requests/s.)
//
//   npm run bench:release                                  # build, then ~4 min
//   node bench/release-overhead.mjs --runtime bun --workers 2
//   node bench/release-overhead.mjs --rounds 4 --duration 1 --warmup 1   # a smoke run
//   flags: --runtime node|bun (node) --workers N (1) --rounds N (40) --duration s (1)
//          --warmup s (5) --conns N (50) --shapes seed,typical,large --control --own-headers --no-pin
//
// Why this shape of bench: req/s on a shared 2-core box moves by 10–30 % from one run to the
// next, while the decision itself is 150–400 ns of a ~70–90 µs request. Measuring shapes one
// after the other (as the suite does) compares figures taken minutes apart; here every shape's
// gateway runs at once (one process group each: none, seed, typical, large, same runtime and
// workers, same backends), and they are measured in many short rounds, each round measuring
// every shape once, in an order that changes every round (a Williams design: over each cycle of
// rounds every shape follows every other exactly once, and stands once in each position). What
// drifts on the box drifts for all shapes of a round alike, and the ratio within a round keeps
// the release's cost. Much of the noise is per run, not drift (a run lands at 0.5× or 1× of
// its neighbours whichever shape it measures, even with nothing else busy): it is the number of
// rounds that narrows the interval, hence many 1 s rounds rather than a few long ones (40 × 1 s:
// about ±3 %; 16 × 3 s: about ±7–15 %, measured here). Each run also records what other
// processes took of the box meanwhile (/proc/stat less this bench's own processes).
//
// Per shape against none, over the rounds: the median of the per-round ratios of req/s and of
// CPU µs/request (utime+stime of the gateway's process group from /proc ÷ requests), each with
// a distribution-free 95 % confidence interval for that median (the sign test's: order
// statistics of the ratios; exact, no assumption on the noise), and a verdict on the target:
// "within 5 %" when the whole interval of the req/s ratio is ≥ 0.95, "more than 5 % slower" when
// it is all below, else "cannot tell at this noise" (then: more rounds). --control adds a second
// no-release gateway (none-b): its true ratio is 1, so its interval shows what the bench
// resolves on this box.
//
// Shapes (the suite's configs, bench/lib/gateways.mjs), all at -c50 on /, all loaded with the
// same request by default (headers TOKEN and x-user-id; see SAME_REQUEST):
//   none      no release                                  the reference
//   seed      TOKEN header → TOKEN_<token> in Redis (cache warm) → uid, range from Grayscale_Range
//   typical   header identity + 3 rules (50-id deny list, header, 5 %)
//   large     header identity + 10 header rules, 50 CIDRs, a 100k-id list (every rule evaluated)
//
// Time: the expected duration is printed at the start (default ≈ 4 min: 40 rounds × 4 shapes ×
// 1 s, plus wrk's start per run and 5 s of warm-up per gateway). Everything listens on 127.0.0.1, every load run is
// bounded, and every process started here is stopped at the end. Table on stdout; raw figures
// (every round) in bench/results/release-overhead-<time>.json. Load: wrk -t1 when installed,
// else autocannon. Run it alone on the box: `flock /tmp/gg-bench.lock npm run bench:release`.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cliPath,
  createRun,
  gitCommit,
  groupCpuSeconds,
  has,
  loadTool,
  machineBusySeconds,
  ownCpuSeconds,
  root,
  runLoad,
  startBackends,
  startRedis,
} from './lib/harness.mjs';
import { bunPath, CALLERS, probe, seedRedis, startGateway, stopGateway, TOKEN } from './lib/gateways.mjs';

const RELEASES = ['seed', 'typical', 'large'];
const TARGET = 0.95; // at most 5 % fewer requests/s than no release
const SETUP_SECONDS = 8; // backends, redis, gateways starting, probes (measured: 3–8 s)
const PER_RUN_OVERHEAD_SECONDS = 0.35; // wrk start, /proc reads
/**
 * The request every gateway is loaded with by default: all the callers' headers at once, so two
 * gateways differ only in their release (clients send their token whether or not a release
 * reads it; a bigger request costs the same with or without one). With it, seed finds user 1234
 * through the token (candidate), typical reads x-user-id 1234 (the 5 % rule decides), large
 * matches nothing (1234 is no multiple of 3). --own-headers sends each shape only its own
 * caller's headers instead, as the suite does (none then gets no header at all).
 */
const SAME_REQUEST = { TOKEN, 'x-user-id': '1234' };

function parseFlags(argv) {
  const flags = { runtime: 'node', workers: 1, rounds: 40, duration: 1, warmup: 5, conns: 50, shapes: RELEASES, control: false, ownHeaders: false, pin: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--runtime') flags.runtime = value();
    else if (arg === '--workers') flags.workers = Number(value());
    else if (arg === '--rounds') flags.rounds = Number(value());
    else if (arg === '--duration') flags.duration = Number(value());
    else if (arg === '--warmup') flags.warmup = Number(value());
    else if (arg === '--conns') flags.conns = Number(value());
    else if (arg === '--shapes') flags.shapes = value().split(',').filter((s) => s !== 'none');
    else if (arg === '--control') flags.control = true;
    else if (arg === '--own-headers') flags.ownHeaders = true;
    else if (arg === '--no-pin') flags.pin = false;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(
        'node bench/release-overhead.mjs [--runtime node|bun] [--workers 1] [--rounds 40] [--duration 1] [--warmup 5] [--conns 50]\n' +
          `                                 [--shapes ${RELEASES.join(',')}] [--control] [--own-headers] [--no-pin]\n`,
      );
      process.exit(0);
    } else throw new Error(`unknown flag ${arg} (try --help)`);
  }
  if (flags.runtime !== 'node' && flags.runtime !== 'bun') throw new Error('--runtime: node or bun');
  for (const shape of flags.shapes) if (!RELEASES.includes(shape)) throw new Error(`unknown shape ${shape}; shapes: ${RELEASES.join(', ')}`);
  if (flags.shapes.length === 0) throw new Error('--shapes: at least one release shape');
  for (const [name, v] of [['workers', flags.workers], ['rounds', flags.rounds], ['duration', flags.duration], ['conns', flags.conns]]) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: a whole number ≥ 1, got ${v}`);
  }
  if (!Number.isInteger(flags.warmup) || flags.warmup < 0) throw new Error('--warmup: whole seconds ≥ 0');
  return flags;
}

// ---- order of the shapes in each round -----------------------------------------------------

/**
 * A Williams design for n treatments: rows (rounds) in which every treatment follows every
 * other exactly once and stands once in each position (n rows for even n, 2n for odd n).
 */
function williamsOrders(n) {
  const first = [0];
  for (let lo = 1, hi = n - 1; first.length < n; ) {
    first.push(lo++);
    if (first.length < n) first.push(hi--);
  }
  const rows = Array.from({ length: n }, (_, shift) => first.map((t) => (t + shift) % n));
  return n % 2 === 0 ? rows : [...rows, ...rows.map((row) => [...row].reverse())];
}

// ---- statistics ----------------------------------------------------------------------------

/** P(B ≤ k) for B ~ Binomial(n, 1/2). */
function binomialCdfHalf(k, n) {
  let term = 0.5 ** n; // C(n, 0) / 2^n
  let sum = 0;
  for (let i = 0; i <= k; i++) {
    sum += term;
    term = (term * (n - i)) / (i + 1);
  }
  return sum;
}

/**
 * The sign test's confidence interval for a median: [x(k), x(n+1-k)] of the sorted values, with
 * the largest k whose coverage 1 − 2·P(B ≤ k−1) is still ≥ 95 %. Undefined below 6 values (no
 * such interval exists).
 */
function medianInterval(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const n = sorted.length;
  let k = 0;
  while (k + 1 <= n / 2 && binomialCdfHalf(k, n) <= 0.025) k++;
  if (k === 0) return undefined;
  return { low: sorted[k - 1], high: sorted[n - k], coverage: 1 - 2 * binomialCdfHalf(k - 1, n) };
}

/** The median; of an even count, the mean of the two middle values (harness.median takes the upper one). */
const middle = (values) => {
  const s = [...values].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};

/** "within 5 %" when the whole interval is on the good side of the bound, `beyond` when all of it is past it. */
function verdict(ci, isWithin, isBeyond, beyond) {
  if (!ci) return 'too few rounds';
  if (isWithin(ci)) return 'within 5 %';
  if (isBeyond(ci)) return beyond;
  return 'cannot tell at this noise';
}

function compare(rounds, shape, reference) {
  const pairs = rounds
    .map((round) => [round.runs[shape], round.runs[reference]])
    .filter(([a, b]) => a && b && !a.errors && !b.errors && a.requests > 0 && b.requests > 0);
  const rps = pairs.map(([a, b]) => a.rps / b.rps);
  const cpu = pairs.map(([a, b]) => a.cpuUsPerReq / b.cpuUsPerReq).filter(Number.isFinite);
  const rpsCi = medianInterval(rps);
  const cpuCi = medianInterval(cpu);
  return {
    shape,
    pairs: pairs.length,
    rps: { median: middle(rps), ci: rpsCi, ratios: rps },
    cpu: { median: middle(cpu), ci: cpuCi, ratios: cpu },
    verdict: verdict(rpsCi, (ci) => ci.low >= TARGET, (ci) => ci.high < TARGET, 'more than 5 % slower'),
    cpuVerdict: verdict(cpuCi, (ci) => ci.high <= 1.05, (ci) => ci.low > 1.05, 'more than 5 % more CPU'),
  };
}

// ---- main ----------------------------------------------------------------------------------

const fix = (x, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const span = (ci, d = 3) => (ci ? `${fix(ci.low, d)} – ${fix(ci.high, d)}` : '–');

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  if (!existsSync(cliPath)) throw new Error('run `npm run build` first (npm run bench:release does)');
  if (flags.runtime === 'bun' && !existsSync(bunPath)) throw new Error('bun is not installed (node_modules/.bin/bun)');
  // Measured shapes: none first, the releases, and the second no-release gateway if asked.
  const shapes = ['none', ...flags.shapes, ...(flags.control ? ['none-b'] : [])];
  const configOf = (shape) => (shape === 'none-b' ? 'none' : shape);
  const callerOf = (shape) => {
    const { headers, expect } = CALLERS[configOf(shape)];
    return { headers: flags.ownHeaders ? headers : SAME_REQUEST, expect };
  };
  const orders = williamsOrders(shapes.length);
  const expected = SETUP_SECONDS + shapes.length * flags.warmup + flags.rounds * shapes.length * (flags.duration + PER_RUN_OVERHEAD_SECONDS);
  const started = Date.now();
  const log = (text) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${text}\n`);
  const label = `graygate ${flags.runtime} --workers ${flags.workers}`;
  log(
    `${label}: ${shapes.join(', ')}; ${flags.rounds} rounds × ${shapes.length} shapes × ${flags.duration} s (${loadTool()} -c${flags.conns}), ` +
      `order rotated per round (cycle of ${orders.length}); expected ≈ ${Math.round(expected)} s (${(expected / 60).toFixed(1)} min)`,
  );
  if (flags.rounds % orders.length !== 0) log(`note: ${flags.rounds} rounds is not a whole number of cycles of ${orders.length}: the orders are not fully balanced`);

  // Pinning: the gateways on the last `workers` cores, this bench and all it starts besides them
  // (wrk, the backends, redis) on the others, so that no run shares the gateway's core with wrk
  // or nginx by the scheduler's chance (on the 2-core box, 40 rounds: the per-round ratios spread
  // by 17–21 % pinned against 31 % unpinned). Only with more cores than workers, and taskset.
  const cores = os.cpus().length;
  const list = (from, to) => (from === to ? `${from}` : `${from}-${to}`);
  const pin = flags.pin && cores > flags.workers && has('taskset') ? { gateways: list(cores - flags.workers, cores - 1), rest: list(0, cores - flags.workers - 1) } : undefined;
  if (pin) execFileSync('taskset', ['-a', '-p', '-c', pin.rest, String(process.pid)], { stdio: 'ignore' });
  log(pin ? `pinned: gateways on CPU ${pin.gateways}; wrk, backends and redis on CPU ${pin.rest}` : 'not pinned (--no-pin, no taskset, or no core to spare)');

  const run = createRun('graygate-release');
  const backends = await startBackends(run);
  const redis = shapes.includes('seed') ? await startRedis(run) : undefined;
  if (redis) seedRedis(redis);
  const gateways = {};
  await Promise.all(
    shapes.map(async (shape) => {
      gateways[shape] = await startGateway(run, { runtime: flags.runtime, workers: flags.workers, kind: configOf(shape), backends, redis, cpus: pin?.gateways });
    }),
  );
  for (const shape of shapes) await probe(gateways[shape].port, callerOf(shape));
  // JIT, the token cache, the upstream pools: a fresh process spends several times more CPU
  // per request in its first seconds.
  if (flags.warmup > 0) for (const shape of shapes) runLoad(gateways[shape].port, callerOf(shape).headers, { duration: flags.warmup, conns: flags.conns });
  log(`gateways up and warm (backends ${backends.kind})`);

  // CPU seconds so far: the whole box, every process of this bench (itself and the wrk runs it
  // waited for, the gateways, backends and redis), and the gateway measured.
  const sampleCpu = (gateway) => ({
    at: Date.now(),
    machine: machineBusySeconds(),
    ours: ownCpuSeconds() + run.groups().reduce((sum, pgid) => sum + groupCpuSeconds(pgid), 0),
    gateway: groupCpuSeconds(gateway.pgid),
  });
  const rounds = [];
  for (let r = 0; r < flags.rounds; r++) {
    const order = orders[r % orders.length].map((i) => shapes[i]);
    const runs = {};
    for (const shape of order) {
      const gateway = gateways[shape];
      const before = sampleCpu(gateway);
      const result = runLoad(gateway.port, callerOf(shape).headers, { duration: flags.duration, conns: flags.conns });
      const after = sampleCpu(gateway);
      if (!(result.requests > 0)) result.errors ||= 'no request completed';
      // What the rest of the box (other users' processes) took of its cores during this run.
      const others = Math.max(0, after.machine - before.machine - (after.ours - before.ours)) / (((after.at - before.at) / 1000) * os.cpus().length);
      runs[shape] = { ...result, cpuUsPerReq: ((after.gateway - before.gateway) * 1e6) / result.requests, others };
    }
    const others = Math.max(...Object.values(runs).map((x) => x.others));
    rounds.push({ round: r + 1, order, loadavg: os.loadavg()[0], others, runs });
    log(
      `round ${r + 1}/${flags.rounds} (${order.join(' ')}): ${shapes.map((s) => `${s} ${Math.round(runs[s].rps)}${runs[s].errors ? ' (errors)' : ''}`).join(', ')} req/s; ` +
        `others took up to ${(100 * others).toFixed(0)} % of the box`,
    );
  }
  for (const shape of shapes) await stopGateway(gateways[shape]);

  // ---- report ----
  const comparisons = shapes.filter((s) => s !== 'none').map((s) => compare(rounds, s, 'none'));
  const per = (shape, key) => rounds.map((round) => round.runs[shape]?.[key]).filter(Number.isFinite);
  const noneRps = per('none', 'rps');
  const othersPerRun = rounds.flatMap((round) => Object.values(round.runs).map((x) => x.others));
  const lines = [
    `## Release vs no release: ${label}, ${rounds.length} interleaved rounds × ${flags.duration} s (${loadTool()} -t1 -c${flags.conns}, backends ${backends.kind}; ${flags.ownHeaders ? "each shape its own caller's headers" : 'the same request for all: TOKEN and x-user-id headers'}; ${pin ? `gateways pinned to CPU ${pin.gateways}, the rest to ${pin.rest}` : 'not pinned'})`,
    '',
    '| shape | median req/s | median CPU µs/req | req/s × none (median of rounds) | 95 % CI | CPU/req × none | 95 % CI | verdict: ≤ 5 % fewer req/s | CPU/req within 5 % |',
    '|---|--:|--:|--:|---|--:|---|---|---|',
    `| none | ${Math.round(middle(noneRps))} | ${fix(middle(per('none', 'cpuUsPerReq')), 1)} | 1 | | 1 | | reference | |`,
    ...comparisons.map(
      (c) =>
        `| ${c.shape} | ${Math.round(middle(per(c.shape, 'rps')))} | ${fix(middle(per(c.shape, 'cpuUsPerReq')), 1)} | ${fix(c.rps.median)} | ${span(c.rps.ci)} | ${fix(c.cpu.median)} | ${span(c.cpu.ci)} | ${c.verdict} | ${c.cpuVerdict} |`,
    ),
    '',
    `(ratios: per round, shape ÷ none of the same round; CI: the sign test's for the median, coverage ${comparisons[0]?.rps.ci ? `${(100 * comparisons[0].rps.ci.coverage).toFixed(1)} %` : '–'} with ${comparisons[0]?.pairs ?? 0} paired rounds; ` +
      `none alone moved ${Math.round(Math.min(...noneRps))}–${Math.round(Math.max(...noneRps))} req/s across rounds; ` +
      `other processes took ${(100 * middle(othersPerRun)).toFixed(0)} % of the box during the median run (at most ${(100 * Math.max(...othersPerRun)).toFixed(0)} %); ` +
      `${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} at the end; rounds with errors are left out of the ratios: ${rounds.filter((r) => Object.values(r.runs).some((x) => x.errors)).length})`,
  ];
  process.stdout.write(`\n${lines.join('\n')}\n`);
  const dir = path.join(root, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `release-overhead-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      { when: new Date().toISOString(), flags, pin, shapes, tool: loadTool(), backends: backends.kind, host: { cpus: os.cpus().length, loadavg: os.loadavg(), node: process.version, commit: gitCommit() }, comparisons, rounds },
      null,
      1,
    ),
  );
  process.stdout.write(`\nraw figures: ${path.relative(root, file)}; took ${((Date.now() - started) / 1000).toFixed(0)} s (expected ≈ ${Math.round(expected)} s)\n`);
  run.stopAll();
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
