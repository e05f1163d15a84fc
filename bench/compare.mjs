// Question: how does graygate (the seed rule: TOKEN header → Redis TOKEN_<token> = uid, range from
// the Grayscale_Range key) compare, in one run on this machine, with the backend direct, nginx
// proxy_pass, and the OpenResty + Lua + Redis recipe it replaces, as published (a new Redis
// connection per request) and tuned (a Redis pool and a 1 s per-worker cache)?
//
//   npm run bench:compare                                   # every row, 5 s × 2 reps (~4 min)
//   npm run bench:compare -- --rows nginx,recipe,node:1 --duration 3 --reps 1
//   npm run bench:compare -- --rows nginx,node:1,base:1 --baseline ../graygate-before   # this build against another
//
// Rows: direct, nginx, recipe, recipe-tuned, node:N, bun:N (graygate on that runtime with N
// workers), openresty[:N] (graygate's Lua data plane: `graygate start --data-plane openresty`, N nginx
// workers, default --nginx-workers) with the seed rule, openresty-none / openresty-typical /
// openresty-large[:N] (no release, identity + 3 rules, 100k-id list + 50 CIDRs + 10 header rules,
// each measured with its own caller, mode = the shape), lua-parts (nginx + graygate's token.lua
// and metrics.lua with the seed rule hand-wired: what those parts cost alone), base:N (graygate on Node from the checkout --baseline names, built: a change
// measured against the build before it, in the same run). Each (row, mode) is measured --reps times, interleaved (all rows, then all rows
// again), with wrk -t1 (autocannon without wrk); mode gray sends the token of user 1234 (inside
// the range: the candidate), mode prod sends no token. Before each measurement one request must
// get the expected backend. Ratios are medians of the same run. nginx, its Lua module, lua-cjson
// and lua-resty-lrucache come from Debian (apt-get install nginx libnginx-mod-http-lua
// lua-resty-core lua-resty-lrucache lua-cjson); rows whose parts are missing are left out with a
// line saying why. Everything listens on 127.0.0.1 and stops when the bench ends.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { createRun, gitCommit, groupCpuSeconds, has, loadTool, median, root, runLoad, startBackends, startRedis, freePort, waitPort } from './lib/harness.mjs';
import { CALLERS, probe, seedRedis, startGateway, TOKEN } from './lib/gateways.mjs';

const { values: flags } = parseArgs({
  options: {
    rows: { type: 'string', default: 'direct,nginx,recipe,recipe-tuned,node:1,node:2,bun:1,bun:2,lua-parts,openresty,openresty-none,openresty-typical,openresty-large' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    reps: { type: 'string', default: '2' },
    conns: { type: 'string', default: '50' },
    'nginx-workers': { type: 'string', default: '1' },
    baseline: { type: 'string' },
    pin: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log('usage: node bench/compare.mjs [--rows direct,nginx,recipe,recipe-tuned,node:1,node:2,bun:1,bun:2,lua-parts,openresty[:N],openresty-none,openresty-typical,openresty-large,base:1] [--duration 5] [--warmup 1] [--reps 2] [--conns 50] [--nginx-workers 1] [--baseline DIR] [--pin]');
  console.log('  --pin: the proxy under test on the last core, everything else (wrk, the backends, Redis, this script) on the others, so a row is bound by its own CPU and the ratios are its CPU per request (needs taskset and 2+ cores)');
  process.exit(0);
}
const duration = Number(flags.duration);
const warmup = Number(flags.warmup);
const reps = Number(flags.reps);
const conns = Number(flags.conns);
const nginxWorkers = Number(flags['nginx-workers']);
if (![duration, reps, conns, nginxWorkers].every((n) => Number.isInteger(n) && n > 0) || !(warmup >= 0)) {
  console.error('--duration, --reps, --conns and --nginx-workers take whole numbers above 0; --warmup a number of seconds');
  process.exit(2);
}
if (!existsSync(path.join(root, 'dist/cli/main.js'))) {
  console.error('bench:compare: run `npm run build` first (npm run bench:compare does)');
  process.exit(1);
}

const LUA_MODULES = ['/usr/lib/nginx/modules/ndk_http_module.so', '/usr/lib/nginx/modules/ngx_http_lua_module.so'];
const hasLua = () => LUA_MODULES.every((file) => existsSync(file)) && existsSync('/usr/share/lua/5.1/resty/lrucache.lua');

const readLoad = () => (existsSync('/proc/loadavg') ? readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') : 'unknown');

// --pin: on a small box the load tool, the backends and the proxy share the cores, so a slower proxy
// also slows its load and the ratios compress towards 1 (they moved between 0.7 and 1.0 from run to
// run). Pinned, each proxy row has a core of its own that nothing else uses, and its throughput is
// set by its own CPU per request.
const cores = availableParallelism();
const pin = flags.pin ? { proxy: String(cores - 1), rest: `0-${String(cores - 2)}` } : undefined;
if (pin) {
  if (cores < 2 || !has('taskset')) {
    console.error('--pin needs taskset (util-linux) and at least 2 cores');
    process.exit(2);
  }
  // Every thread of this process, so wrk, the backends and Redis (started from here) inherit it.
  execFileSync('taskset', ['-a', '-p', '-c', pin.rest, String(process.pid)], { stdio: 'ignore' });
}

const run = createRun('graygate-compare');
const backends = await startBackends(run);
const redis = await startRedis(run);
seedRedis(redis);

/**
 * nginx in front of the two backends: `access` is a Lua access phase, or none for proxy_pass;
 * `extra.http` and `extra.location` add directives (graygate's Lua modules: shared dicts, init, log phase).
 */
async function startNginx(name, access, extra = {}) {
  const port = await freePort();
  const conf = path.join(run.dir, `${name}.conf`);
  const lua = access !== undefined;
  writeFileSync(
    conf,
    `${lua ? LUA_MODULES.map((file) => `load_module ${file};`).join('\n') : ''}
worker_processes ${nginxWorkers}; pid ${run.dir}/${name}.pid; error_log ${run.dir}/${name}-error.log warn;
${lua ? 'env BENCH_REDIS_PORT;' : ''}
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  ${lua ? `lua_package_path "${root}bench/recipe/?.lua;${root}openresty/?.lua;/usr/share/lua/5.1/?.lua;;";` : ''}
  ${extra.http ?? ''}
  upstream prod { server 127.0.0.1:${backends.stablePort}; keepalive 64; keepalive_requests 1000000; }
  upstream gray { server 127.0.0.1:${backends.candidatePort}; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:${port} backlog=4096 reuseport;
    location / { set $target prod; ${access ?? ''} ${extra.location ?? ''}
      proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://$target; } } }
`,
  );
  const command = ['env', `BENCH_REDIS_PORT=${redis.port}`, 'nginx', '-p', `${run.dir}/`, '-c', conf, '-g', 'daemon off;'];
  const child = pin ? run.start(name, 'taskset', ['-c', pin.proxy, ...command]) : run.start(name, command[0], command.slice(1));
  await waitPort(port);
  return { port, pgid: child.pid };
}

/** Why graygate's OpenResty data plane cannot run here, or undefined when it can. */
function openrestyMissing() {
  if (!has('nginx') || !hasLua()) return 'needs nginx with the Lua module (apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson)';
  const decide = path.join(root, 'openresty/graygate/decide.lua');
  if (!existsSync(decide) || readFileSync(decide, 'utf8').includes('not implemented yet')) return 'openresty/graygate/decide.lua is not implemented in this build';
  const help = spawnSync(process.execPath, [path.join(root, 'dist/cli/main.js'), 'start', '--help'], { encoding: 'utf8' });
  if (!`${help.stdout}${help.stderr}`.includes('--data-plane')) return 'this build has no `graygate start --data-plane openresty`';
  return undefined;
}

const MODES = {
  gray: { headers: { TOKEN }, expect: 'gray' },
  prod: { headers: {}, expect: 'prod' },
};

// ---- start every row -------------------------------------------------------------------------
const rows = [];
const skipped = [];
for (const id of flags.rows.split(',').map((s) => s.trim()).filter(Boolean)) {
  if (id === 'direct') {
    rows.push({ id, label: `backend direct (${backends.kind})`, portFor: (mode) => (mode === 'gray' ? backends.candidatePort : backends.stablePort) });
  } else if (id === 'nginx') {
    if (!has('nginx')) skipped.push('nginx: not installed (apt-get install nginx)');
    else rows.push({ id, label: `nginx proxy_pass, ${nginxWorkers} worker(s)`, ...(await startNginx('nginx', undefined)), nginxOnlyProd: true });
  } else if (id === 'recipe' || id === 'recipe-tuned') {
    if (!has('nginx') || !hasLua()) skipped.push(`${id}: needs nginx with the Lua module (apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson)`);
    else {
      const access = id === 'recipe' ? `access_by_lua_file ${root}bench/recipe/published.lua;` : 'access_by_lua_block { require("tuned").route() }';
      const desc = id === 'recipe' ? 'the recipe as published (new Redis connection per request)' : 'the recipe tuned (Redis pool + 1 s cache)';
      rows.push({ id, label: `${desc}, ${nginxWorkers} worker(s)`, ...(await startNginx(id, access)) });
    }
  } else if (id === 'lua-parts') {
    if (!has('nginx') || !hasLua()) skipped.push(`${id}: needs nginx with the Lua module (apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson)`);
    else {
      const { latencyBoundsInitArgs } = await import(path.join(root, 'dist/openresty/metrics.js'));
      const extra = {
        http: `lua_shared_dict graygate_tokens 16m; lua_shared_dict graygate_metrics 4m; lua_socket_log_errors off; init_worker_by_lua_block { require("observe-parts").init({ ${latencyBoundsInitArgs()} }) }`,
        location: 'set $gg_inflight ""; log_by_lua_block { require("observe-parts").log() }',
      };
      rows.push({ id, label: `nginx + graygate's token.lua and metrics.lua, seed rule hand-wired, ${nginxWorkers} worker(s)`, ...(await startNginx(id, 'access_by_lua_block { require("observe-parts").access() }', extra)) });
    }
  } else if (/^openresty(-none|-typical|-large)?(:\d+)?$/.test(id)) {
    const [name, n] = id.split(':');
    const kind = { openresty: 'seed', 'openresty-none': 'none', 'openresty-typical': 'typical', 'openresty-large': 'large' }[name];
    const workers = n === undefined ? nginxWorkers : Number(n);
    const missing = openrestyMissing();
    if (missing) {
      skipped.push(`${id}: ${missing}`);
      continue;
    }
    const gateway = await startGateway(run, { cpus: pin?.proxy, workers, kind, backends, redis, extraArgs: ['--data-plane', 'openresty'] });
    rows.push({
      id,
      kind,
      label: `graygate on OpenResty (${kind === 'seed' ? 'seed rule' : kind === 'none' ? 'no release' : `${kind} release`}), ${workers} nginx worker(s)`,
      port: gateway.port,
      pgid: gateway.pgid,
      // The shapes are measured with their own caller; the seed row with the gray and prod modes.
      modes: kind === 'seed' ? undefined : { [kind]: CALLERS[kind] },
    });
  } else if (/^base:\d+$/.test(id)) {
    const cli = flags.baseline && path.resolve(flags.baseline, 'dist/cli/main.js');
    if (!cli || !existsSync(cli)) {
      console.error(`${id}: --baseline must name a checkout of graygate with dist/ built (npm run build there)`);
      process.exit(2);
    }
    const gateway = await startGateway(run, { cpus: pin?.proxy, workers: Number(id.split(':')[1]), kind: 'seed', backends, redis, cli });
    rows.push({ id, label: `graygate at ${path.basename(path.resolve(flags.baseline))}, Node, --workers ${id.split(':')[1]}`, port: gateway.port, pgid: gateway.pgid });
  } else if (/^(node|bun):\d+$/.test(id)) {
    const [runtime, n] = id.split(':');
    if (runtime === 'bun' && !existsSync(path.join(root, 'node_modules/.bin/bun'))) {
      skipped.push(`${id}: no node_modules/.bin/bun (the optional dependency bun is not installed)`);
      continue;
    }
    const gateway = await startGateway(run, { cpus: pin?.proxy, runtime, workers: Number(n), kind: 'seed', backends, redis });
    rows.push({ id, label: `graygate on ${runtime === 'bun' ? 'Bun' : 'Node'}, --workers ${n}`, port: gateway.port, pgid: gateway.pgid });
  } else {
    console.error(`unknown row ${id}`);
    process.exit(2);
  }
}
for (const line of skipped) console.error(`left out: ${line}`);

// ---- measure, interleaved --------------------------------------------------------------------
const results = [];
const startedAt = new Date().toISOString();
console.error(`load: ${loadTool()} -c${conns}, ${duration} s × ${reps} per row and mode (+${warmup} s warm-up); load average ${readLoad()}${pin ? `; proxies pinned to core ${pin.proxy}, the rest to ${pin.rest}` : ''}`);
for (let rep = 0; rep < reps; rep++) {
  for (const row of rows) {
    for (const [mode, spec] of Object.entries(row.modes ?? MODES)) {
      const port = row.portFor ? row.portFor(mode) : row.port;
      const expect = row.nginxOnlyProd ? 'prod' : spec.expect;
      await probe(port, { headers: spec.headers, expect });
      if (warmup > 0) runLoad(port, spec.headers, { duration: warmup, conns });
      const cpuBefore = row.pgid ? groupCpuSeconds(row.pgid) : NaN;
      const r = runLoad(port, spec.headers, { duration, conns });
      const cpu = row.pgid ? groupCpuSeconds(row.pgid) - cpuBefore : NaN;
      results.push({ rep, row: row.id, mode, ...r, cpuUsPerReq: (cpu * 1e6) / r.requests });
      console.error(`  ${row.id.padEnd(13)} ${mode}: ${Math.round(r.rps)} req/s, p99 ${r.p99} ms${r.errors ? `, ${r.errors} errors` : ''}`);
    }
  }
}

// ---- report ----------------------------------------------------------------------------------
const med = (id, mode, key) => median(results.filter((r) => r.row === id && r.mode === mode).map((r) => r[key]));
const fix = (n, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '');
// Shape modes (none, typical, large) are compared with nginx's prod mode: nginx sends everything to prod.
const base = (mode) => (mode in MODES ? mode : 'prod');
const lines = [
  `| row | mode | req/s | p99 ms | CPU µs/req | × nginx | × recipe | × recipe tuned | p99 × nginx | × OpenResty no release | errors |`,
  '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
];
for (const row of rows) {
  for (const mode of Object.keys(row.modes ?? MODES)) {
    const rps = med(row.id, mode, 'rps');
    const p99 = med(row.id, mode, 'p99');
    const errors = results.filter((r) => r.row === row.id && r.mode === mode).reduce((sum, r) => sum + r.errors, 0);
    const vsNone = row.kind !== undefined && row.kind !== 'seed' ? fix(rps / med('openresty-none', 'none', 'rps'), 3) : '';
    lines.push(
      `| ${row.label} | ${mode} | ${Math.round(rps)} | ${fix(p99)} | ${fix(med(row.id, mode, 'cpuUsPerReq'), 0)} | ${fix(rps / med('nginx', base(mode), 'rps'))} | ${fix(rps / med('recipe', base(mode), 'rps'))} | ${fix(rps / med('recipe-tuned', base(mode), 'rps'))} | ${fix(p99 / med('nginx', base(mode), 'p99'), 1)} | ${vsNone} | ${errors} |`,
    );
  }
}
// The issue's targets for the OpenResty data plane, where this run has the rows to compute them.
const target = (label, value, ok) => (Number.isFinite(value) ? `- ${label}: ${value.toFixed(3)}${ok ? (ok(value) ? ' (met)' : ' (NOT met)') : ''}` : undefined);
const seedRow = rows.some((r) => r.id === 'openresty') ? 'openresty' : undefined;
const targets = seedRow
  ? [
      target('seed rule (gray) × nginx proxy_pass, target ≥ 0.9', med(seedRow, 'gray', 'rps') / med('nginx', 'gray', 'rps'), (v) => v >= 0.9),
      target('seed rule (gray) × the recipe tuned, target ≥ 0.95', med(seedRow, 'gray', 'rps') / med('recipe-tuned', 'gray', 'rps'), (v) => v >= 0.95),
      target('seed rule (gray) × the recipe as published, target ≥ 3.5', med(seedRow, 'gray', 'rps') / med('recipe', 'gray', 'rps'), (v) => v >= 3.5),
      target("seed rule (gray) p99 × nginx's, target ≤ 1.5", med(seedRow, 'gray', 'p99') / med('nginx', 'gray', 'p99'), (v) => v <= 1.5),
    ]
  : [];
targets.push(
  target('typical release × no release (OpenResty), target ≥ 0.97', med('openresty-typical', 'typical', 'rps') / med('openresty-none', 'none', 'rps'), (v) => v >= 0.97),
  target('large release × no release (OpenResty), target ≥ 0.95', med('openresty-large', 'large', 'rps') / med('openresty-none', 'none', 'rps'), (v) => v >= 0.95),
  target("lua-parts (gray) × nginx proxy_pass (token.lua + metrics.lua alone)", med('lua-parts', 'gray', 'rps') / med('nginx', 'gray', 'rps')),
);
if (targets.some(Boolean)) lines.push('', 'Targets (OpenResty data plane):', ...targets.filter(Boolean));
console.log(lines.join('\n'));
console.log(
  `\n${loadTool()} -t1 -c${conns}, ${duration} s × ${reps} interleaved, medians; load average after: ${readLoad()}${pin ? `; the proxy under test alone on core ${pin.proxy}, the load, backends and Redis on ${pin.rest}` : ''}. ` +
    'gray: the token of user 1234 (in the range); prod: no token. nginx proxy_pass sends both to prod. ' +
    'Compare ratios of one run only: on a small box the load tool, the backends and the gateways share the cores.',
);
const outDir = path.join(root, 'bench/results');
mkdirSync(outDir, { recursive: true });
const file = path.join(outDir, `compare-${startedAt.replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ startedAt, commit: gitCommit(), tool: loadTool(), conns, duration, reps, nginxWorkers, pinned: pin ?? null, rows: rows.map(({ id, label }) => ({ id, label })), skipped, results }, null, 2));
console.error(`raw figures: ${path.relative(process.cwd(), file)}`);
process.exit(0);

