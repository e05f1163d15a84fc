#!/usr/bin/env node
// Question: what does graygate cost, shape by shape, on Node and on Bun, with 1 and 2 workers,
// compared with the backend directly and with nginx proxy_pass, all in one run?
//
//   npm run bench:suite                       # build, then the full suite (about 10 min)
//   npm run build && node bench/suite.mjs --quick
//   node bench/suite.mjs --shapes none,seed --runtimes node --workers 1 --duration 5
//
// Time: per measurement --duration (8 s; --quick 1 s) plus --warmup (2 s; --quick 0), and 5 s of
// warm-up per gateway started (--quick 1 s; quick figures only show the suite works): a fresh Node process costs several times more CPU per
// request in its first seconds.
//
// One mechanism: start the loopback backends (nginx when installed, else node:http; both serve
// a 5-byte body on / and a 1 MiB body on /1mb), a redis-server, and nginx proxy_pass; measure the
// baselines (direct, nginx); then, for each runtime × worker count, start one gateway per routing
// config it needs and measure every selected shape on it with one bounded load run each
// (wrk -t1 when installed, else autocannon; the table says which). Shapes:
//
//   none      no release (a service with only `stable`)                              -c50, /
//   seed      the seed's rule: TOKEN header → TOKEN_<token> in Redis (cache warm) → uid,
//             range from the Grayscale_Range key                                      -c50, /
//   typical   header identity + 3 rules (uidList of 50, header, 5 % percentage)     -c50, /
//   large     header identity + 10 header rules, 50 CIDRs, a uidList of 100k ids
//             (the caller matches none: every rule is evaluated)                      -c50, /
//   1mb       seed rule, 1 MiB response body: MB/s against direct in the same run     -c50, /1mb
//   c1000     seed rule, 1,000 concurrent keep-alive connections under load
//   c5000     seed rule, 5,000 concurrent keep-alive connections under load
//   idle1000  seed rule, 1,000 keep-alive connections held idle (each served one request): RSS
//   idle5000  same with 5,000 (target: RSS under 250 MB per worker)
//
// Per load row: req/s, × direct and × nginx (same shape), × no-release (same runtime and
// workers, at -c50), p50/p99, p99 × nginx, CPU µs/request (utime+stime of the gateway's whole
// process group from /proc over the measured window ÷ requests), peak RSS (VmHWM of each process,
// reset before each shape through /proc/<pid>/clear_refs). Writes the table to stdout and the raw
// figures to bench/results/suite-<time>.json. Everything listens on 127.0.0.1, every load run
// is bounded, and every process started here (own process groups) is stopped at the end.
// Gateways run with proxy.keepAliveTimeoutMs 120 s so idle connections outlive the hold.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  cliPath,
  createRun,
  freePort,
  gitCommit,
  groupCpuSeconds,
  groupPids,
  has,
  loadTool,
  processMemory,
  resetPeakRss,
  root,
  runLoad,
  startBackends,
  startRedis,
  waitPort,
} from './lib/harness.mjs';
import { bunPath, CALLERS, probe, seedRedis, sleep, startGateway, stopGateway } from './lib/gateways.mjs';

const ALL_SHAPES = ['none', 'seed', 'typical', 'large', '1mb', 'c1000', 'c5000', 'idle1000', 'idle5000'];
const NOFILE_NEEDED = 12_000; // 5,000 client sockets + as many on the gateway side, plus slack

// ---- flags ---------------------------------------------------------------------------------

function parseFlags(argv) {
  const flags = { shapes: ALL_SHAPES, runtimes: ['node', 'bun'], workers: [1, 2], duration: 8, warmup: 2, conns: 50, quick: false, baselines: true };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--quick') flags.quick = true;
    else if (arg === '--shapes') flags.shapes = value().split(',');
    else if (arg === '--runtimes') flags.runtimes = value().split(',');
    else if (arg === '--workers') flags.workers = value().split(',').map(Number);
    else if (arg === '--duration') flags.duration = Number(value());
    else if (arg === '--warmup') flags.warmup = Number(value());
    else if (arg === '--conns') flags.conns = Number(value());
    else if (arg === '--no-baselines') flags.baselines = false;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(
        `node bench/suite.mjs [--quick] [--shapes ${ALL_SHAPES.join(',')}] [--runtimes node,bun] [--workers 1,2]\n` +
          `                     [--duration s (default 8; --quick 1)] [--warmup s (default 2; --quick 0)] [--conns 50] [--no-baselines]\n`,
      );
      process.exit(0);
    } else throw new Error(`unknown flag ${arg} (try --help)`);
  }
  if (flags.quick) {
    if (!argv.includes('--duration')) flags.duration = 1;
    if (!argv.includes('--warmup')) flags.warmup = 0;
  }
  for (const shape of flags.shapes) if (!ALL_SHAPES.includes(shape)) throw new Error(`unknown shape ${shape}; shapes: ${ALL_SHAPES.join(', ')}`);
  for (const runtime of flags.runtimes) if (runtime !== 'node' && runtime !== 'bun') throw new Error(`unknown runtime ${runtime}`);
  for (const w of flags.workers) if (!Number.isInteger(w) || w < 1) throw new Error(`--workers: expected whole numbers, got ${w}`);
  if (!(flags.duration >= 1) || !Number.isInteger(flags.duration)) throw new Error('--duration: whole seconds ≥ 1');
  return flags;
}

/**
 * Thousands of connections need file descriptors on every side; children inherit this
 * process's soft limit, and Node cannot raise its own, so re-run under `ulimit -n` once.
 */
function ensureNofile(flags) {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const m = /Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/.exec(limits);
  const soft = m?.[1] === 'unlimited' ? Infinity : Number(m?.[1]);
  const hard = m?.[2] === 'unlimited' ? Infinity : Number(m?.[2]);
  if (soft >= NOFILE_NEEDED) return { soft, skipped: [] };
  if (hard >= NOFILE_NEEDED && !process.env.GRAYGATE_SUITE_REEXEC) {
    const target = Math.min(hard, 65_536);
    const result = spawnSync('sh', ['-c', `ulimit -n ${target} && exec "$@"`, 'sh', process.execPath, ...process.execArgv, process.argv[1], ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, GRAYGATE_SUITE_REEXEC: '1' },
    });
    process.exit(result.status ?? 1);
  }
  const skipped = flags.shapes.filter((s) => s === 'c5000' || s === 'idle5000' || (soft < 2_500 && (s === 'c1000' || s === 'idle1000')));
  if (skipped.length > 0) {
    process.stderr.write(`ulimit -n is ${soft} (hard ${hard}); ${NOFILE_NEEDED} are needed for 5,000 connections: skipping ${skipped.join(', ')}. Raise it (ulimit -n ${NOFILE_NEEDED}) and run again.\n`);
  }
  return { soft, skipped };
}

// ---- shapes --------------------------------------------------------------------------------

/** Each shape: which routing config, and the load (or the idle hold) it is measured with. */
function shapeSpec(name, conns) {
  const seed = { config: 'seed', ...CALLERS.seed };
  switch (name) {
    case 'none':
      return { config: 'none', ...CALLERS.none, conns, path: '/', baseline: 'plain' };
    case 'seed':
      return { ...seed, conns, path: '/', baseline: 'plain', vsNone: true };
    case 'typical':
    case 'large':
      return { config: name, ...CALLERS[name], conns, path: '/', baseline: 'plain', vsNone: true };
    case '1mb':
      return { ...seed, conns, path: '/1mb', baseline: '1mb' };
    case 'c1000':
      return { ...seed, conns: 1000, path: '/', baseline: 'c1000' };
    case 'c5000':
      return { ...seed, conns: 5000, path: '/', baseline: 'c5000' };
    case 'idle1000':
      return { ...seed, idle: 1000 };
    case 'idle5000':
      return { ...seed, idle: 5000 };
  }
  throw new Error(name);
}

// ---- processes -----------------------------------------------------------------------------

async function startNginxProxy(run, backends) {
  const port = await freePort();
  const conf = path.join(run.dir, 'proxy.conf');
  writeFileSync(
    conf,
    `worker_processes 1; pid ${run.dir}/proxy.pid; error_log ${run.dir}/proxy-error.log; worker_rlimit_nofile 40000;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000;
  upstream prod { server 127.0.0.1:${backends.stablePort}; keepalive 64; }
  server { listen 127.0.0.1:${port} backlog=8192;
    location / { proxy_pass http://prod; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
`,
  );
  const child = run.start('nginx-proxy', 'nginx', ['-p', `${run.dir}/`, '-c', conf, '-g', 'daemon off;']);
  await waitPort(port);
  return { port, pgid: child.pid };
}

/** Memory of each process of a group: the leader is the primary when there are workers. */
function groupMemory(pgid, workers) {
  const pids = groupPids(pgid);
  return pids.map((pid, i) => ({ pid, role: workers > 1 ? (i === 0 ? 'primary' : 'worker') : 'single', ...processMemory(pid) }));
}

/**
 * Seconds of one load run: opening thousands of connections takes wrk a while on a small box,
 * so those shapes run at least 2 s (1,000) or 5 s (5,000) even under --quick.
 */
const durationFor = (spec, flags) => Math.max(flags.duration, spec.conns >= 5_000 ? 5 : spec.conns >= 1_000 ? 2 : 1);

/** One bounded load run with the gateway's CPU time and peak RSS over it. */
function measure(target, spec, flags) {
  const pids = target.pgid ? groupPids(target.pgid) : [];
  if (flags.warmup > 0) runLoad(target.port, spec.headers, { duration: flags.warmup, conns: spec.conns, path: spec.path });
  for (const pid of pids) resetPeakRss(pid);
  const cpuBefore = target.pgid ? groupCpuSeconds(target.pgid) : NaN;
  const r = runLoad(target.port, spec.headers, { duration: durationFor(spec, flags), conns: spec.conns, path: spec.path });
  if (!(r.requests > 0)) r.errors = `no request completed in ${durationFor(spec, flags)} s`;
  const cpu = target.pgid ? groupCpuSeconds(target.pgid) - cpuBefore : NaN;
  r.cpuUsPerReq = (cpu * 1e6) / r.requests;
  r.memory = target.pgid ? groupMemory(target.pgid, target.workers ?? 1) : [];
  return r;
}

/**
 * Opens `count` keep-alive connections (in batches, so the accept queue never overflows), sends
 * one request on each and reads its answer, then holds them all idle and reads every process's
 * RSS. Bounded: 60 s for the opening, 2 s of idling.
 */
async function holdIdle(target, spec, count) {
  for (const pid of groupPids(target.pgid)) resetPeakRss(pid);
  const before = groupMemory(target.pgid, target.workers);
  const sockets = [];
  const head = `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(spec.headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
  const deadline = Date.now() + 60_000;
  let failed = 0;
  const reasons = new Map();
  const openOne = () =>
    new Promise((resolve) => {
      const socket = net.connect(target.port, '127.0.0.1');
      let seen = '';
      const timer = setTimeout(() => done(false, 'no answer within 15 s'), 15_000);
      const done = (ok, reason) => {
        clearTimeout(timer);
        socket.removeAllListeners('data');
        if (!ok) {
          failed++;
          reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
          socket.destroy();
        } else sockets.push(socket);
        resolve();
      };
      socket.on('error', (error) => done(false, error.code ?? error.message));
      socket.on('connect', () => socket.write(head));
      socket.on('data', (chunk) => {
        seen += chunk;
        // The backends answer 5 bytes; the whole answer is in once the body follows the head.
        const end = seen.indexOf('\r\n\r\n');
        if (end >= 0 && seen.length >= end + 4 + 5) done(/^HTTP\/1\.1 200/.test(seen), seen.slice(0, 12));
      });
    });
  for (let opened = 0; opened < count && Date.now() < deadline; opened += 250) {
    await Promise.all(Array.from({ length: Math.min(250, count - opened) }, openOne));
  }
  await sleep(2_000);
  const open = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
  const held = groupMemory(target.pgid, target.workers);
  for (const s of sockets) s.destroy();
  return { count, open, failed, reasons: Object.fromEntries(reasons), before, held };
}

// ---- table ---------------------------------------------------------------------------------

const mb = (kb) => (Number.isFinite(kb) ? (kb / 1024).toFixed(0) : '–');
const fix = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–');

function rssCell(memory) {
  if (memory.length === 0) return '–';
  const workers = memory.filter((m) => m.role !== 'primary');
  const primary = memory.find((m) => m.role === 'primary');
  return workers.map((m) => mb(m.hwmKb)).join('/') + (primary ? ` (p ${mb(primary.hwmKb)})` : '');
}

function render(rows, idleRows, context) {
  const base = (kind, baseline) => rows.find((r) => r.target === kind && r.baseline === baseline);
  const lines = [
    '| shape | target | load | req/s | MB/s | × direct | × nginx | × no-release | p50 ms | p99 ms | p99 × nginx | CPU µs/req | peak RSS MB | errors |',
    '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of rows) {
    const direct = base('direct', r.baseline);
    const nginx = base('nginx', r.baseline);
    const none = r.vsNone ? rows.find((o) => o.shape === 'none' && o.runtime === r.runtime && o.workers === r.workers) : undefined;
    const big = r.baseline === '1mb';
    const ratio = (other) => (other ? (big ? r.bytesPerSec / other.bytesPerSec : r.rps / other.rps) : NaN);
    lines.push(
      `| ${r.shape} | ${r.label} | ${r.load} | ${Math.round(r.rps)} | ${big ? fix(r.bytesPerSec / 2 ** 20, 0) : ''} | ${fix(ratio(direct))} | ${fix(ratio(nginx))} | ${none ? fix(r.rps / none.rps) : ''} | ${fix(r.p50)} | ${fix(r.p99)} | ${nginx && r.target === 'graygate' ? fix(r.p99 / nginx.p99, 1) : ''} | ${fix(r.cpuUsPerReq, 0)} | ${rssCell(r.memory)} | ${typeof r.errors === 'string' ? r.errors : r.errors ? `${r.errors} (socket ${r.socketErrors})` : 0} |`,
    );
  }
  if (idleRows.length > 0) {
    lines.push('', '| idle keep-alive connections | target | held / asked | RSS MB per worker, before → held | max per worker | primary MB |', '|---|---|--:|---|--:|--:|');
    for (const r of idleRows) {
      const workers = (list) => list.filter((m) => m.role !== 'primary');
      const pairs = workers(r.held).map((m) => `${mb(workers(r.before).find((b) => b.pid === m.pid)?.rssKb)} → ${mb(m.rssKb)}`);
      const max = Math.max(...workers(r.held).map((m) => m.rssKb));
      const primary = r.held.find((m) => m.role === 'primary');
      lines.push(`| ${r.shape} | ${r.label} | ${r.open} / ${r.count}${r.failed ? ` (failed: ${Object.entries(r.reasons).map(([k, v]) => `${v} ${k}`).join(', ')})` : ''} | ${pairs.join(', ')} | ${mb(max)} | ${primary ? mb(primary.rssKb) : ''} |`);
    }
  }
  lines.push(
    '',
    `(${context.tool} -t1, ${context.duration} s per run (1,000 and 5,000 connections: at least 2 and 5 s)${context.warmup ? ` after ${context.warmup} s warm-up` : ', no warm-up'}; backends ${context.backendKind}; ` +
      `× direct / × nginx compare the same shape (1mb: MB/s); × no-release: same runtime and workers at -c${context.conns}; ` +
      `peak RSS: VmHWM per worker over the run (p = primary); ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} at the end; ` +
      `one run, no repetitions: compare only figures of the same run)`,
  );
  return lines.join('\n');
}

// ---- main ----------------------------------------------------------------------------------

async function main() {
  const flags = parseFlags(process.argv.slice(2));
  const { skipped } = ensureNofile(flags);
  if (!existsSync(cliPath)) throw new Error('run `npm run build` first (npm run bench:suite does)');
  if (flags.runtimes.includes('bun') && !existsSync(bunPath)) {
    process.stderr.write('bun is not installed (node_modules/.bin/bun): measuring Node only\n');
    flags.runtimes = flags.runtimes.filter((r) => r !== 'bun');
  }
  // Grouped by routing config (in order of first use), so each gateway is started once per
  // runtime and worker count.
  const specs = flags.shapes.filter((s) => !skipped.includes(s)).map((name) => ({ name, ...shapeSpec(name, flags.conns) }));
  const configs = [...new Set(specs.map((s) => s.config))];
  const shapes = configs.flatMap((config) => specs.filter((s) => s.config === config));
  const tool = loadTool();
  const started = Date.now();
  const run = createRun('graygate-suite');
  const backends = await startBackends(run, { workerConnections: 16_384 });
  const needsRedis = shapes.some((s) => s.config === 'seed');
  const redis = needsRedis ? await startRedis(run) : undefined;
  if (redis) seedRedis(redis);
  const loadLabel = (conns) => `${tool} -c${conns}`;
  const log = (text) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${text}\n`);
  log(`shapes ${shapes.map((s) => s.name).join(',')}; runtimes ${flags.runtimes.join(',')}; workers ${flags.workers.join(',')}; ${flags.duration} s runs; load ${tool}; backends ${backends.kind}`);

  const rows = [];
  const idleRows = [];
  // Baselines: the backend directly and nginx proxy_pass, for each load shape measured.
  if (flags.baselines) {
    const baselines = [...new Set(shapes.filter((s) => s.baseline).map((s) => s.baseline))];
    const targets = [{ target: 'direct', label: `direct to backend (${backends.kind})`, port: backends.stablePort, pgid: undefined }];
    if (has('nginx')) targets.push({ target: 'nginx', label: 'nginx proxy_pass', ...(await startNginxProxy(run, backends)) });
    for (const target of targets) {
      for (const baseline of baselines) {
        const spec = { headers: {}, conns: baseline === 'plain' || baseline === '1mb' ? flags.conns : Number(baseline.slice(1)), path: baseline === '1mb' ? '/1mb' : '/' };
        const r = measure(target, spec, flags);
        rows.push({ shape: baseline, target: target.target, label: target.label, baseline, load: loadLabel(spec.conns), ...r });
        log(`${target.label} ${baseline}: ${Math.round(r.rps)} req/s p99 ${fix(r.p99)} ms errors ${r.errors}`);
      }
    }
  }
  for (const runtime of flags.runtimes) {
    for (const workers of flags.workers) {
      const gateways = new Map();
      const label = `graygate ${runtime} -w${workers}`;
      for (const shape of shapes) {
        try {
          let gateway = gateways.get(shape.config);
          if (!gateway) {
            // One gateway at a time: stop the previous one so it holds no memory or CPU.
            for (const g of gateways.values()) await stopGateway(g);
            gateways.clear();
            gateway = await startGateway(run, { runtime, workers, kind: shape.config, backends, redis });
            gateways.set(shape.config, gateway);
            await probe(gateway.port, shape);
            // JIT, the token cache and the upstream pools: warm once per gateway. A fresh Node
            // process spends several times more CPU per request in its first seconds.
            runLoad(gateway.port, shape.headers, { duration: flags.quick ? 1 : 5, conns: flags.conns, path: '/' });
          }
          await probe(gateway.port, shape);
          if (shape.idle) {
            const r = await holdIdle(gateway, shape, shape.idle);
            idleRows.push({ shape: shape.name, runtime, workers, label, ...r });
            log(`${label} ${shape.name}: ${r.open}/${r.count} held`);
          } else {
            const r = measure(gateway, shape, flags);
            rows.push({ shape: shape.name, target: 'graygate', label, runtime, workers, baseline: shape.baseline, vsNone: shape.vsNone, load: loadLabel(shape.conns), ...r });
            log(`${label} ${shape.name}: ${Math.round(r.rps)} req/s p99 ${fix(r.p99)} ms errors ${r.errors}`);
          }
        } catch (error) {
          log(`${label} ${shape.name}: FAILED ${error.message}`);
          rows.push({ shape: shape.name, target: 'graygate', label, runtime, workers, load: 'failed', rps: NaN, memory: [], errors: String(error.message) });
        }
      }
      for (const g of gateways.values()) await stopGateway(g);
    }
  }
  const context = { tool, duration: flags.duration, warmup: flags.warmup, backendKind: backends.kind, conns: flags.conns };
  const table = render(rows, idleRows, context);
  process.stdout.write(`\n${table}\n`);
  const dir = path.join(root, 'bench/results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `suite-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify({ when: new Date().toISOString(), flags, context, host: { cpus: os.cpus().length, loadavg: os.loadavg(), node: process.version, commit: gitCommit() }, rows, idleRows }, null, 1),
  );
  process.stdout.write(`\nraw figures: ${path.relative(root, file)}; took ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
  run.stopAll();
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  process.exit(1);
});
