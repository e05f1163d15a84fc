/**
 * Question: does deciding a request stay cheap as a release grows, and what does the token cache
 * cost in memory as it grows? (the aims: evaluation flat within 2× from 10 to 100k ids;
 * a token cache of 1M entries under 200 MB.)
 *
 *   npx tsx bench/cost-growth.ts              # or npm run bench:cost; 1–4 min (filling 1M tokens dominates)
 *   npx tsx bench/cost-growth.ts --eval-only  # only the evaluation table (~30 s, no Redis)
 *   npx tsx bench/cost-growth.ts --cache-only --cache-max 1000000
 *
 * Part 1, evaluation. For n = 1, 10, 100, 1k, 10k, 100k: a real routing document compiled with
 * `compileRouting`, evaluated as the data plane does (`resolveIdentity` then `decide`) on a pool of
 * 1024 prepared requests, rotated:
 *   - ids:   one uidList rule of n ids (i × 3); callers miss (uid ≡ 1 mod 3) or hit (in the list);
 *   - rules: n header rules, on one header with n values and on n headers; the caller matches
 *            none, so every rule runs (the worst case). Compiling a list of rules grew about n²
 *            when this was written (a 10k list on 10k headers took 67 s), so each series has a
 *            largest size (--max-rules-one, --max-rules-many) and stops once a compile passed
 *            --compile-budget-ms (5 s).
 * Reported: ns per evaluation (median of 5 rounds of 200 ms of wall time, and of CPU time), the
 * compile time, and the 10 → 100k ratio.
 *
 * Part 2, token cache memory. The real tokenLookup identity source (src/identity/token-lookup.ts:
 * its LRU cache, created through compileRouting with an identity context) backed by the real Redis
 * store (`createRedisStore`, its `readKey`) on a private redis-server filled with N
 * `TOKEN_<token>` → uid keys (32-character tokens, uids up to 8 digits). Tokens are resolved
 * through the resolver until the cache holds 10k, 100k, then 1M entries; at each step, after a
 * forced GC: RSS and V8 heap used, relative to before the cache existed, then the cost of a hit
 * (`resolveIdentity` on a cached token, tokens spread over the whole cache; wall and CPU time,
 * median of 3 rounds of 300 ms). cacheTtlMs is raised to 1 h so no entry expires while filling (the default is 5 s;
 * cacheMax is set to the largest step).
 *
 * What a real gateway would hold, and nothing more: each token is generated from its index as a
 * fresh flat string (as the HTTP parser makes header values), so only the cache keeps tokens
 * alive; not a slice of a longer digest, which would keep the digest alive with it. The RESP
 * that fills Redis (about 90 MB for 1M keys) is generated in a child process (`--write-resp`), so
 * the pages it leaves behind are not in this process's RSS for the cache to grow into unseen.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { RedisStoreSettings, RoutingDocument } from '../src/config/schema.js';
import { identityCompiler } from '../src/identity/request-identity.js';
import { compileRouting } from '../src/rules/compile.js';
import type { CompiledService } from '../src/rules/snapshot.js';
import type { RequestFacts } from '../src/rules/facts.js';
import type { IdentityContext } from '../src/identity/source.js';
import { tokenLookupStats } from '../src/identity/token-lookup.js';
import { createRedisStore } from '../src/store/redis/redis-store.js';
import { describedFacts } from '../src/rules/described-facts.js';
// @ts-expect-error: plain JS module shared by the bench scripts
import { createRun, startRedis } from './lib/harness.mjs';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined && !process.argv.includes('--write-resp')) {
  const self = fileURLToPath(import.meta.url);
  const result = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=4096', '--import', 'tsx', self, ...process.argv.slice(2)], { stdio: 'inherit', timeout: 600_000 });
  process.exit(result.status ?? 1);
}

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const option = (name: string, fallback: number) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const SIZES = [1, 10, 100, 1_000, 10_000, 100_000].filter((n) => n <= option('--max-size', 100_000));
const POOL = 1024;
const ROUNDS = 5;
const ROUND_MS = option('--round-ms', 200);
const COMPILE_BUDGET_MS = option('--compile-budget-ms', 5_000);
/** Two lists of n rules, none matching the caller (every rule runs): one header, or n headers. */
const RULE_SERIES = [
  { name: 'header rules, one header', maxN: option('--max-rules-one', 10_000), rule: (i: number) => ({ name: `value-${i}`, header: { name: 'x-flag', equals: `v${i}` } }) },
  { name: 'header rules, n headers', maxN: option('--max-rules-many', 1_000), rule: (i: number) => ({ name: `flag-${i}`, header: { name: `x-flag-${i}`, equals: 'on' } }) },
];
const CACHE_STEPS = [10_000, 100_000, 1_000_000].filter((n) => n <= option('--cache-max', 1_000_000));

const upstreams = { v1: { servers: ['http://127.0.0.1:9'] }, v2: { servers: ['http://127.0.0.1:10'] } };

function compileService(rules: unknown[], sources: unknown[], identityContext?: IdentityContext): { service: CompiledService; compileMs: number } {
  const document = RoutingDocument.parse({ upstreams, services: [{ name: 'app', stable: 'v1', release: { candidate: 'v2', rules } }], identity: { sources } });
  const started = process.hrtime.bigint();
  const snapshot = compileRouting(document, 1, { identity: identityCompiler(identityContext ? { context: identityContext } : {}) });
  const compileMs = Number(process.hrtime.bigint() - started) / 1e6;
  return { service: snapshot.matchService('', '/')!, compileMs };
}

type Facts = ReturnType<typeof describedFacts>;

function evaluate(service: CompiledService, facts: Facts): number {
  const pending = service.resolveIdentity(facts);
  if (pending !== undefined) throw new Error('identity went async in the steady state');
  return service.decide(facts).version === 'candidate' ? 1 : 0;
}

/** Median wall and CPU ns per evaluation over ROUNDS rounds of ROUND_MS, after a warm-up. */
function timeIt(service: CompiledService, pool: Facts[]): { ns: number; cpuNs: number; share: number } {
  let candidate = 0;
  const warmUntil = Date.now() + 150;
  for (let i = 0; Date.now() < warmUntil; i += 100) for (let j = 0; j < 100; j++) evaluate(service, pool[(i + j) & (POOL - 1)]!);
  const wall: number[] = [];
  const cpu: number[] = [];
  let total = 0;
  for (let round = 0; round < ROUNDS; round++) {
    let evals = 0;
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    const deadline = start + BigInt(ROUND_MS) * 1_000_000n;
    let now = start;
    // Batches of 100: one evaluation of 100k rules takes about a millisecond.
    while (now < deadline) {
      for (let i = 0; i < 100; i++) candidate += evaluate(service, pool[(evals + i) & (POOL - 1)]!);
      evals += 100;
      now = process.hrtime.bigint();
    }
    const used = process.cpuUsage(cpuStart);
    wall.push(Number(now - start) / evals);
    cpu.push(((used.user + used.system) * 1000) / evals);
    total += evals;
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  return { ns: median(wall), cpuNs: median(cpu), share: candidate / total };
}

function evaluationGrowth(): void {
  const rows: string[][] = [];
  const perKind = new Map<string, Map<number, number>>();
  const compileMsOf = new Map<string, number>();
  const perKindCpu = new Map<string, Map<number, number>>();
  const record = (kind: string, n: number, ns: number, cpuNs: number) => {
    if (!perKind.has(kind)) perKind.set(kind, new Map());
    if (!perKindCpu.has(kind)) perKindCpu.set(kind, new Map());
    perKind.get(kind)!.set(n, ns);
    perKindCpu.get(kind)!.set(n, cpuNs);
  };
  for (const n of SIZES) {
    process.stderr.write(`  n = ${n}…\n`);
    const ids = compileService([{ name: 'list', uidList: { ids: Array.from({ length: n }, (_, i) => i * 3) } }], [{ header: { name: 'x-user-id' } }]);
    // Callers spread over the id space: misses are ≡ 1 mod 3, hits are listed ids.
    const span = Math.max(1, n);
    const missPool = Array.from({ length: POOL }, (_, i) => describedFacts({ headers: { 'x-user-id': String(((i * 7919) % span) * 3 + 1) } }));
    const hitPool = Array.from({ length: POOL }, (_, i) => describedFacts({ headers: { 'x-user-id': String(((i * 7919) % span) * 3) } }));
    const miss = timeIt(ids.service, missPool);
    const hit = timeIt(ids.service, hitPool);
    if (miss.share !== 0 || hit.share !== 1) throw new Error(`uidList ${n}: expected all misses / all hits, got ${miss.share} / ${hit.share}`);
    record('ids (miss)', n, miss.ns, miss.cpuNs);
    record('ids (hit)', n, hit.ns, hit.cpuNs);
    rows.push([`uidList of ${n.toLocaleString('en')} ids, caller not listed`, ids.compileMs.toFixed(1), miss.ns.toFixed(0), miss.cpuNs.toFixed(0)]);
    rows.push([`uidList of ${n.toLocaleString('en')} ids, caller listed`, '', hit.ns.toFixed(0), hit.cpuNs.toFixed(0)]);

    // Rules: compiling a list of rules grew about n² when this was written (compile.ts computes
    // the Vary value of every rule from all inputs before it), so a series stops growing once
    // its previous size took more than COMPILE_BUDGET_MS to compile, instead of running for hours.
    for (const series of RULE_SERIES) {
      const previous = compileMsOf.get(series.name);
      if (n > series.maxN || (previous !== undefined && previous > COMPILE_BUDGET_MS)) {
        const why = n > series.maxN ? `above ${series.maxN.toLocaleString('en')}` : `${(n / 10).toLocaleString('en')}: ${(previous! / 1000).toFixed(1)} s`;
        rows.push([`${n.toLocaleString('en')} ${series.name}`, `skipped (${why})`, '', '']);
        continue;
      }
      const rules = compileService(Array.from({ length: n }, (_, i) => series.rule(i)), [{ header: { name: 'x-user-id' } }]);
      compileMsOf.set(series.name, rules.compileMs);
      const rulePool = Array.from({ length: POOL }, (_, i) => describedFacts({ headers: { 'x-user-id': String(i), 'x-flag': 'none', 'x-other': 'on' } }));
      const all = timeIt(rules.service, rulePool);
      if (all.share !== 0) throw new Error(`${series.name} ${n}: a rule matched`);
      record(series.name, n, all.ns, all.cpuNs);
      rows.push([`${n.toLocaleString('en')} ${series.name}`, rules.compileMs.toFixed(1), all.ns.toFixed(0), all.cpuNs.toFixed(0)]);
    }
  }
  const header = ['release', 'compile ms', 'ns/eval', 'CPU ns/eval'];
  printTable(header, rows);
  // Wall time and CPU time: on a busy box the loop is descheduled and wall time swells.
  const ratio = (kind: string) => `${ratioOf(perKind, kind)} wall, ${ratioOf(perKindCpu, kind)} CPU`;
  const ratioOf = (table: Map<string, Map<number, number>>, kind: string) => {
    const m = table.get(kind);
    const top = Math.max(...(m?.keys() ?? []));
    if (!m || !m.has(10) || top <= 10) return 'n/a';
    return `${(m.get(top)! / m.get(10)!).toFixed(2)}×${top === 100_000 ? '' : ` (to ${top.toLocaleString('en')})`}`;
  };
  console.log(
    `\n10 → 100k ratio (ns/eval): ids, caller not listed ${ratio('ids (miss)')}; ids, caller listed ${ratio('ids (hit)')}; ` +
      RULE_SERIES.map((series) => `${series.name} ${ratio(series.name)}`).join('; ') +
      ' ' +
      `(target for ids: ≤ 2×; a list of rules is checked in order, so its cost grows with its length)\n`,
  );
}

function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]) => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
}

// ---- part 2: token cache memory ---------------------------------------------------------------

/**
 * A 32-character token (base64url alphabet) derived from its index: same index, same token.
 * Encoded from 24 bytes rather than sliced from a longer string: a fresh flat string.
 */
function tokenOf(i: number): string {
  return createHash('sha256').update(`token-${i}`).digest().subarray(0, 24).toString('base64url');
}
const uidOf = (i: number) => String(10_000_000 + ((i * 7919) % 89_999_999));

/** Writes SET TOKEN_<token> uid for i in [0, count) to stdout as RESP (run in the child process). */
async function writeResp(count: number): Promise<void> {
  const resp = (key: string, value: string) => `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n${value}\r\n`;
  for (let start = 0; start < count; start += 10_000) {
    let chunk = '';
    for (let i = start; i < Math.min(count, start + 10_000); i++) chunk += resp(`TOKEN_${tokenOf(i)}`, uidOf(i));
    if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once('drain', resolve));
  }
  await new Promise<void>((resolve) => process.stdout.end(resolve));
}

/** Fills Redis through `redis-cli --pipe`, fed by a child process of this script (see the header). */
async function fillRedis(port: number, count: number): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const writer = spawn(process.execPath, ['--import', 'tsx', self, '--write-resp', String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const child = spawn(process.env.REDIS_CLI ?? 'redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--pipe'], { stdio: [writer.stdout, 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (chunk) => (out += chunk));
  const exited = (proc: ReturnType<typeof spawn>) => new Promise<number>((resolve) => proc.on('exit', (code) => resolve(code ?? 1)));
  const [writerCode, code] = await Promise.all([exited(writer), exited(child)]);
  if (writerCode !== 0 || code !== 0 || !/errors: 0/.test(out)) throw new Error(`redis-cli --pipe (writer exited ${writerCode}): ${out}`);
}

/**
 * A request as the data plane hands it to the identity chain, reduced to its token header: the
 * pool of requests timed below must not itself be what a hit waits on (a DescribedFacts holds
 * three Maps; 16k of them are 16 MB of memory to miss in the CPU caches).
 */
class TokenFacts implements RequestFacts {
  readonly method = 'GET';
  readonly host = '';
  readonly path = '/';
  readonly clientIp = '127.0.0.1';
  readonly isFromTrustedProxy = false;
  userId: string | undefined = undefined;
  numericUserId: number | undefined = undefined;
  identitySource: string | undefined = undefined;
  constructor(private readonly token: string) {}
  header(name: string): string | undefined {
    return name === 'token' ? this.token : undefined;
  }
  cookie(): undefined {
    return undefined;
  }
  query(): undefined {
    return undefined;
  }
}

/**
 * ns per hit: `resolveIdentity` on cached tokens, a pool of 16k spread over the first `filled`
 * tokens (every hit checked against its uid first), median of 3 rounds of 300 ms after a warm-up.
 */
function hitCost(service: CompiledService, filled: number): { ns: number; cpuNs: number } {
  const size = Math.min(filled, 16_384);
  const stride = Math.floor(filled / size);
  const pool = Array.from({ length: size }, (_, i) => new TokenFacts(tokenOf(i * stride)));
  pool.forEach((facts, i) => {
    if (service.resolveIdentity(facts) !== undefined || facts.userId !== uidOf(i * stride)) throw new Error(`token ${i * stride}: not a cache hit with its uid`);
  });
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let round = -1; round < 3; round++) {
    let hits = 0;
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    const deadline = start + 300_000_000n;
    let now = start;
    while (now < deadline) {
      for (let i = 0; i < 1_000; i++) service.resolveIdentity(pool[(hits + i) % size]!);
      hits += 1_000;
      now = process.hrtime.bigint();
    }
    const used = process.cpuUsage(cpuStart);
    if (round < 0) continue;
    wall.push(Number(now - start) / hits);
    cpu.push(((used.user + used.system) * 1000) / hits);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[1]!;
  return { ns: median(wall), cpuNs: median(cpu) };
}

function memory(): { rss: number; heap: number } {
  for (let i = 0; i < 3; i++) gc!();
  const usage = process.memoryUsage();
  return { rss: usage.rss, heap: usage.heapUsed };
}

async function tokenCacheGrowth(): Promise<void> {
  const run = createRun('graygate-cost-growth');
  const largest = CACHE_STEPS[CACHE_STEPS.length - 1]!;
  const redis = await startRedis(run);
  const fillStart = Date.now();
  await fillRedis(redis.port, largest);
  console.log(`redis-server filled with ${largest.toLocaleString('en')} TOKEN_<token> keys in ${((Date.now() - fillStart) / 1000).toFixed(1)} s`);

  const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url, namespace: 'cost-growth' }), { validate: (x: unknown) => x as never });
  // The lookup connection must be ready before the first readKey.
  for (let tries = 0; ; tries++) {
    try {
      await store.keyReader.readKey('TOKEN_none', 1_000);
      break;
    } catch (error) {
      if (tries > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  // A gateway under load has its young generation grown and its Redis connection's buffers in
  // use, cache or no cache: the same work once before the baseline (lookups of absent keys,
  // straight to the store, as many and as concurrent as filling the cache sends), so the RSS
  // figures are the cache's and not the process's first busy second.
  for (let start = 0; start < Math.min(largest, 20_000); start += 2_000) {
    await Promise.all(Array.from({ length: 2_000 }, (_, i) => store.keyReader.readKey(`TOKEN_absent-${start + i}`, 5_000)));
  }
  const base = memory();
  const context: IdentityContext = { readKey: (key: string, deadlineMs: number) => store.keyReader.readKey(key, deadlineMs) };
  // deadlineMs raised from 50 ms: filling sends thousands of lookups at once on a shared box.
  const { service } = compileService(
    [{ name: 'range', uidRange: { from: 1, to: 50_000_000 } }],
    [{ tokenLookup: { cacheMax: largest, cacheTtlMs: 3_600_000, deadlineMs: 5_000 } }],
    context,
  );
  const empty = memory();
  const rows: string[][] = [['cache created, empty', '0', mb(empty.rss - base.rss), mb(empty.heap - base.heap), '', '', '', '']];
  let filled = 0;
  let fillMs = 0;
  for (const step of CACHE_STEPS) {
    const started = Date.now();
    // Misses go to Redis (one GET each, through the resolver); 2,000 in flight at a time.
    while (filled < step) {
      const batch: Promise<unknown>[] = [];
      for (let i = filled; i < Math.min(step, filled + 2_000); i++) {
        const pending = service.resolveIdentity(describedFacts({ headers: { token: tokenOf(i) } }));
        if (pending !== undefined) batch.push(pending);
      }
      await Promise.all(batch);
      filled = Math.min(step, filled + 2_000);
    }
    fillMs += Date.now() - started;
    const stats = tokenLookupStats(context);
    if (stats.failures + stats.unknown + stats.garbage + stats.shed > 0) throw new Error(`token lookups that did not fill the cache: ${JSON.stringify(stats)}`);
    // Every token is now a cache hit: check a sample resolves synchronously.
    for (let i = 0; i < step; i += Math.max(1, Math.floor(step / 100))) {
      const facts = describedFacts({ headers: { token: tokenOf(i) } });
      if (service.resolveIdentity(facts) !== undefined) throw new Error(`token ${i}: not cached after filling`);
    }
    const now = memory();
    const hit = hitCost(service, step);
    rows.push([
      `${step.toLocaleString('en')} entries`,
      step.toLocaleString('en'),
      mb(now.rss - base.rss),
      mb(now.heap - base.heap),
      (((now.rss - base.rss) / step) | 0).toString(),
      (((now.heap - base.heap) / step) | 0).toString(),
      hit.ns.toFixed(0),
      hit.cpuNs.toFixed(0),
    ]);
  }
  const took = fillMs / 1000;
  printTable(['token cache', 'entries', 'RSS MB', 'heap MB', 'RSS B/entry', 'heap B/entry', 'ns/hit', 'CPU ns/hit'], rows);
  console.log(
    `\n(relative to the process before the cache existed: RSS ${mb(base.rss)} MB, heap ${mb(base.heap)} MB; filled through Redis in ${took.toFixed(1)} s; ` +
      `LRU of cacheMax ${largest.toLocaleString('en')}, which preallocates its index arrays when created; target: 1M entries under 200 MB)\n`,
  );
  await store.close();
  run.stopAll();
}

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

if (flag('--write-resp')) {
  await writeResp(option('--write-resp', 0));
  process.exit(0);
}
console.log(`node ${process.version}`);
if (!flag('--cache-only')) evaluationGrowth();
if (!flag('--eval-only')) await tokenCacheGrowth();
process.exit(0);
