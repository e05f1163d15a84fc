/**
 * Question: what does the recent-identity sample cost a request, and does it allocate? Run:
 * `npx tsx bench/identity-sample.ts` (a few seconds; re-runs itself with --expose-gc, each case in
 * a process of its own).
 *
 * Measures decideOrStable (the rules' decision, where the data plane offers the caller to the
 * sample) for a percentage rule, over a rotation of callers, with and without the sample:
 * - `no sample`: the decision alone (the baseline);
 * - `sample, known callers`: 5,000 callers, all already in the sample (the steady state: a
 *   returning caller refreshes a number);
 * - `sample, full, new callers`: a bounded sample (1,000) offered ever new ids (a flood of fresh
 *   ids: the reservoir draws a random number and mostly says no).
 * Allocation as in bench/metrics-recording.ts: full GC, heapUsed, N calls, heapUsed again, kept
 * only when no GC ran in between, so (after - before) / N is bytes per call. Caller ids are made
 * before the timed loops, so making them is not counted.
 */
import { spawnSync } from 'node:child_process';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseRoutingDocument } from '../src/config/load.js';
import { decideOrStable, type RouteHost } from '../src/dataplane/route.js';
import { IdentitySample } from '../src/observe/identity-sample.js';
import { compileForImpact } from '../src/observe/impact.js';
import { NO_OBSERVER } from '../src/observe/request-observer.js';
import { DescribedFacts } from '../src/rules/described-facts.js';

if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
  const run = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url)], { stdio: 'inherit' });
  process.exit(run.status ?? 1);
}
const gc = (globalThis as unknown as { gc: () => void }).gc;

const document = parseRoutingDocument({
  upstreams: { v1: { servers: ['http://127.0.0.1:1'] }, v2: { servers: ['http://127.0.0.1:2'] } },
  identity: { sources: [{ header: { name: 'x-user-id' } }] },
  services: [{ name: 'shop', stable: 'v1', release: { candidate: 'v2', state: 'canary', rules: [{ name: 'percentage', percentage: { percent: 10 } }] } }],
});
const snapshot = compileForImpact({ document, version: 1, values: [] });
const service = snapshot.matchService('', '/')!;

/** Caller ids, made up front (the data plane's identity exists before deciding). */
function callers(count: number, prefix: string): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}${100_000 + i}`);
}
/** One request's facts, its id set per call as identity resolution sets it. */
const facts = new DescribedFacts({ path: '/' });

let gcs = 0;
new PerformanceObserver((list) => (gcs += list.getEntries().length)).observe({ entryTypes: ['gc'] });

function measure(name: string, host: RouteHost, ids: string[], warm: number, timed: number, allocN: number): void {
  let i = 0;
  const step = () => {
    facts.userId = ids[i]!;
    decideOrStable(host, service, facts);
    i = i + 1 === ids.length ? 0 : i + 1;
  };
  for (let n = 0; n < warm; n++) step();
  const t0 = performance.now();
  for (let n = 0; n < timed; n++) step();
  const nsPerOp = ((performance.now() - t0) * 1e6) / timed;
  let bytesPerOp = NaN;
  for (let attempt = 0; attempt < 10 && Number.isNaN(bytesPerOp); attempt++) {
    gc();
    const before = process.memoryUsage().heapUsed;
    const gcsBefore = gcs;
    for (let n = 0; n < allocN; n++) step();
    const after = process.memoryUsage().heapUsed;
    if (gcs === gcsBefore) bytesPerOp = (after - before) / allocN;
  }
  console.log(`| ${name} | ${nsPerOp.toFixed(0)} | ${Number.isNaN(bytesPerOp) ? 'n/a (GC ran)' : bytesPerOp.toFixed(1)} |`);
}

const hostWith = (identitySample: IdentitySample | undefined): RouteHost => ({ observer: NO_OBSERVER, identitySample, fault() {} });

const cases: Record<string, () => void> = {
  'no sample (decision alone)': () => measure('no sample (decision alone)', hostWith(undefined), callers(5_000, 'u'), 200_000, 2_000_000, 20_000),
  'no sample, every caller new': () => measure('no sample, every caller new', hostWith(undefined), callers(2_700_000, 'n'), 200_000, 2_000_000, 20_000),
  'sample, known callers (steady state)': () => {
    const sample = new IdentitySample({ enabled: true, windowMs: 15 * 60_000, maxPerService: 10_000 });
    measure('sample, known callers (steady state)', hostWith(sample), callers(5_000, 'u'), 200_000, 2_000_000, 20_000);
    sample.close();
  },
  'sample, full, every caller new': () => {
    const sample = new IdentitySample({ enabled: true, windowMs: 15 * 60_000, maxPerService: 1_000 });
    // Ever new ids: more callers than the loops offer, each offered once.
    const fresh = callers(2_700_000, 'n');
    measure('sample, full, every caller new', hostWith(sample), fresh, 200_000, 2_000_000, 20_000);
    sample.close();
  },
};
const only = process.env.GG_BENCH_CASE;
if (only !== undefined) cases[only]!();
else {
  console.log('| case | ns/request | bytes/request |\n| --- | ---: | ---: |');
  for (const name of Object.keys(cases)) {
    spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url)], { stdio: 'inherit', env: { ...process.env, GG_BENCH_CASE: name } });
  }
}
