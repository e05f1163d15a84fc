/**
 * Question: what does observing one request cost the data plane (metrics, access log), and does
 * it allocate? Run: `npx tsx bench/metrics-recording.ts` (a few seconds; re-runs itself with
 * --expose-gc).
 *
 * Measures RequestObserver.requestClosed as the data plane calls it once per request, over a
 * rotation of decisions (stable, candidate, a fail-safe served by stable) and statuses, with the
 * allocation check of bench/rules-eval.ts: full GC, heapUsed, N calls, heapUsed again, kept only
 * when no GC ran in between, so (after - before) / N is bytes per call.
 */
import { spawnSync } from 'node:child_process';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { createAccessLog } from '../src/observe/access-log.js';
import { Registry, RequestMetrics } from '../src/observe/metrics.js';
import type { ExchangeRecord, RequestObserver } from '../src/observe/request-observer.js';
import type { Decision } from '../src/rules/snapshot.js';

if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
  const run = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url)], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}
const gc = (globalThis as unknown as { gc: () => void }).gc;

const decision = (version: 'stable' | 'candidate', upstream: string, reason: string): Decision =>
  Object.freeze({ service: 'shop', version, upstream, candidate: version === 'candidate' ? upstream : undefined, reason, dependsOnCaller: true, vary: undefined, cachePrivate: false });
const decisions = [decision('stable', 'shop-v1', 'no rule matched'), decision('candidate', 'shop-v2', 'first-users'), decision('candidate', 'shop-v2', 'testers')];

/** One mutable record reused, as Node's Exchange is the record itself (no allocation to report). */
const record = {
  method: 'GET',
  path: '/orders/1',
  identitySource: 'tokenLookup' as string | undefined,
  decision: decisions[0] as Decision | undefined,
  upstreamName: 'shop-v1' as string | undefined,
  serverOrigin: 'http://10.0.0.5:8080' as string | undefined,
  status: 200,
  bytesSent: 1234,
  durationMs: 3.2,
  aborted: false,
} satisfies ExchangeRecord;
const statuses = [200, 200, 200, 304, 404, 503];

function step(observer: RequestObserver, i: number): void {
  const d = decisions[i % 3]!;
  record.decision = d;
  // One in seven candidate requests failed safe to stable.
  record.upstreamName = d.version === 'candidate' && i % 7 === 0 ? 'shop-v1' : d.upstream;
  record.status = statuses[i % 6]!;
  record.durationMs = (i % 50) * 0.7;
  observer.requestClosed(record);
}

let gcs = 0;
new PerformanceObserver((list) => (gcs += list.getEntries().length)).observe({ entryTypes: ['gc'] });

function measure(name: string, observer: RequestObserver): { name: string; nsPerOp: number; bytesPerOp: number } {
  for (let i = 0; i < 200_000; i++) step(observer, i); // warm up, resolve label children
  const timed = 2_000_000;
  const t0 = performance.now();
  for (let i = 0; i < timed; i++) step(observer, i);
  const nsPerOp = ((performance.now() - t0) * 1e6) / timed;
  let bytesPerOp = NaN;
  for (let attempt = 0; attempt < 10 && Number.isNaN(bytesPerOp); attempt++) {
    const n = 20_000;
    gc();
    const before = process.memoryUsage().heapUsed;
    const gcsBefore = gcs;
    for (let i = 0; i < n; i++) step(observer, i);
    const after = process.memoryUsage().heapUsed;
    if (gcs === gcsBefore) bytesPerOp = (after - before) / n;
  }
  return { name, nsPerOp, bytesPerOp };
}

// A sink that drops each line: measures building the line (pino's serializing), not the disk or
// a pipe, which in a tight loop only measures how fast an async buffer can grow.
const sink = { write(_line: string): boolean { return true; } };
const logger = pino({ level: 'info', base: { name: 'graygate' }, timestamp: pino.stdTimeFunctions.isoTime }, sink);
const observers: Record<string, () => RequestObserver> = {
  'metrics (RequestMetrics)': () => new RequestMetrics(new Registry()),
  'access log, sampled out (sample 1e-9)': () => createAccessLog(logger, { enabled: true, sample: 1e-9, level: 'info' }),
  'access log, every request (pino, line built and dropped)': () => createAccessLog(logger, { enabled: true, sample: 1, level: 'info' }),
};
// Each observer in a process of its own: one call site seeing several observer shapes goes
// polymorphic and allocates in ways the data plane (one observer for life) never does.
const only = process.env.GG_BENCH_OBSERVER;
if (only !== undefined) {
  const row = measure(only, observers[only]!());
  console.log(`| ${row.name} | ${row.nsPerOp.toFixed(0)} | ${Number.isNaN(row.bytesPerOp) ? 'n/a (GC ran)' : row.bytesPerOp.toFixed(1)} |`);
} else {
  console.log('| observer | ns/request | bytes/request |\n| --- | ---: | ---: |');
  for (const name of Object.keys(observers)) {
    spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url)], { stdio: 'inherit', env: { ...process.env, GG_BENCH_OBSERVER: name } });
  }
}
