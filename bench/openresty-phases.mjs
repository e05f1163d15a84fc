// Question: where does the nginx worker of graygate's OpenResty data plane spend its CPU per
// request (seed rule: TOKEN → Redis uid, cache warm; range from Grayscale_Range), next to nginx
// proxy_pass and the recipe tuned in the same run?
//
//   npm run build && node bench/openresty-phases.mjs                  # 3 × 5 s per row, interleaved
//   node bench/openresty-phases.mjs --rows nginx,openresty --perf 5   # + `perf record` of each row's worker
//   node bench/openresty-phases.mjs --rows nginx,part:full,part:no-log,part:no-header-filter,part:no-balancer,part:access-only
//        # what each phase costs: graygate's conf with that phase's hook taken out
//   BASE_LUA=/tmp/base/openresty node bench/openresty-phases.mjs --rows nginx,part:base,part:full
//        # part:base: graygate's conf with another checkout's Lua (before/after a Lua change in one run)
//   node bench/openresty-phases.mjs --rows part:full --reps 1 --jit 5 [--jit-mode Fl|vFl|fl|…]
//        # + LuaJIT's own sampling profiler (jit.p) in each part row's worker under the same load:
//        # where the Lua time goes by function and line (F/l), and in which VM state (v: N compiled,
//        # I interpreted, C in C code, G garbage collector, J the JIT compiler); `--jit-mode v` alone
//        # answers "is the hot path compiled?". Also writes jit.v's trace log (aborts, NYI) per row.
//   node bench/openresty-phases.mjs --rows nginx,openresty-none,openresty-typical,openresty-large
//        # the release shapes of bench/lib/gateways.mjs (no release, identity + 3 rules, 100k-id list +
//        # 50 CIDRs + 10 header rules), each measured with its caller (CALLERS there); their routing
//        # is kept in this run's Redis so that part rows can read it too
//   node bench/openresty-phases.mjs --rows part:full@large --reps 1 --jit 5
//        # a part row of a shape (part:<part>@<shape>, default the seed): graygate's conf for that
//        # shape's config, with --jit's profiler and trace log
//
// The signal is CPU µs per request of the nginx worker processes alone (utime+stime from
// /proc/<pid>/stat before and after a bounded wrk run), not req/s: the load tool, the backends and
// the other engineers' work share the cores. To measure one part's cost, change that part and run
// the same command again (the figures of one run are comparable; across runs compare the nginx row).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRun, freePort, has, median, nginxWorkerPids, processesCpuSeconds, root, runLoad, startBackends, startRedis, waitPort } from './lib/harness.mjs';
import { CALLERS, probe, seedRedis, startGateway, TOKEN } from './lib/gateways.mjs';

const { values: flags } = parseArgs({
  options: {
    rows: { type: 'string', default: 'nginx,recipe-tuned,openresty' },
    duration: { type: 'string', default: '5' },
    reps: { type: 'string', default: '3' },
    conns: { type: 'string', default: '50' },
    perf: { type: 'string' },
    settings: { type: 'string', default: '{}' },
    strace: { type: 'string' },
    jit: { type: 'string' },
    'jit-mode': { type: 'string', default: 'Fl' },
    'jit-keep': { type: 'string' },
    vs: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log('usage: node bench/openresty-phases.mjs [--rows nginx,recipe-tuned,openresty,openresty-none,openresty-typical,openresty-large,part:full,part:base,part:no-log,part:no-header-filter,part:no-balancer,part:static-scheme,part:no-upgrade-headers,part:access-only; a part row of another shape: part:full@large] [--duration 5] [--reps 3] [--conns 50] [--perf SECONDS] [--strace SECONDS] [--jit SECONDS [--jit-mode Fl|v|…] [--jit-keep DIR: copy the profiles and trace logs there]] [--vs ROW: the row every other row is compared with in each repetition, default nginx or the first row] [--settings JSON added to the gateway config, e.g. {"log":{"access":{"enabled":false}}}]; part:base needs BASE_LUA (see the head of this file)');
  process.exit(0);
}
const duration = Number(flags.duration);
const reps = Number(flags.reps);
const conns = Number(flags.conns);
if (![duration, reps, conns].every((n) => Number.isInteger(n) && n > 0)) {
  console.error('--duration, --reps and --conns take whole numbers above 0');
  process.exit(2);
}
if (!has('nginx') || !has('wrk')) {
  console.error('needs nginx (with libnginx-mod-http-lua) and wrk');
  process.exit(1);
}

const LUA_MODULES = ['/usr/lib/nginx/modules/ndk_http_module.so', '/usr/lib/nginx/modules/ngx_http_lua_module.so'];
const run = createRun('graygate-phases');
const backends = await startBackends(run);
const redis = await startRedis(run);
seedRedis(redis);

async function startNginx(name, access) {
  const port = await freePort();
  const conf = path.join(run.dir, `${name}.conf`);
  const lua = access !== undefined;
  writeFileSync(
    conf,
    `${lua ? LUA_MODULES.map((file) => `load_module ${file};`).join('\n') : ''}
worker_processes 1; pid ${run.dir}/${name}.pid; error_log ${run.dir}/${name}-error.log warn;
${lua ? 'env BENCH_REDIS_PORT;' : ''}
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  ${lua ? `lua_package_path "${root}bench/recipe/?.lua;/usr/share/lua/5.1/?.lua;;";` : ''}
  upstream prod { server 127.0.0.1:${backends.stablePort}; keepalive 64; keepalive_requests 1000000; }
  upstream gray { server 127.0.0.1:${backends.candidatePort}; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:${port} backlog=4096 reuseport;
    location / { set $target prod; ${access ?? ''}
      proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://$target; } } }
`,
  );
  const child = run.start(name, 'env', [`BENCH_REDIS_PORT=${redis.port}`, 'nginx', '-p', `${run.dir}/`, '-c', conf, '-g', 'daemon off;']);
  await waitPort(port);
  return { port, pgid: child.pid };
}

// The parts rows: graygate's own conf (`graygate openresty conf`, the seed's config, reading the
// routing the openresty row's gateway writes to Redis) in an nginx of their own, with one phase
// hook taken out, to measure what that phase costs. Every part answers the gray caller as the full
// plane does: without the balancer, the proxied location goes straight to the candidate's server.
const PARTS = {
  full: (conf) => conf,
  'no-log': (conf) => conf.replace(/^\s*log_by_lua_block .*$/m, ''),
  'no-header-filter': (conf) => conf.replace(/^\s*header_filter_by_lua_block .*$/m, ''),
  'no-balancer': (conf) => conf.replace('proxy_pass $gg_scheme://graygate_upstream;', 'proxy_pass http://bench_candidate;'),
  // What the proxied location's own directives cost: proxy_pass through a variable (the scheme),
  // and the headers for WebSocket upgrades (Upgrade, and Connection through a map).
  'static-scheme': (conf) => conf.replace('proxy_pass $gg_scheme://graygate_upstream;', 'proxy_pass http://graygate_upstream;'),
  'no-upgrade-headers': (conf) => conf.replace(/^\s*proxy_set_header Connection \$graygate_connection;$/m, '    proxy_set_header Connection "";').replace(/^\s*proxy_set_header Upgrade \$http_upgrade;$/m, ''),
  // graygate's conf as part:full, but its Lua from BASE_LUA (another checkout's openresty/ directory,
  // e.g. `git archive <commit> openresty | tar -x -C /tmp/base`): a change's before and after in one run.
  base: (conf) => conf,
  'access-only': (conf) => PARTS['no-balancer'](PARTS['no-header-filter'](PARTS['no-log'](conf))),
};
// One graygate gateway per shape (`graygate start --data-plane openresty`), started on first use.
// Every shape keeps its routing in this run's Redis (the seed's must; the others' would otherwise be
// on the file store, pushed to that gateway's own nginx only), so a part row's nginx reads it too.
const shapeGateways = new Map();
async function openrestyShape(kind) {
  if (!shapeGateways.has(kind)) {
    const store = kind === 'seed' ? {} : { store: { kind: 'redis', url: redis.url, namespace: `bench-${kind}-${Math.random().toString(36).slice(2, 8)}` } };
    shapeGateways.set(kind, await startGateway(run, { workers: 1, kind, backends, redis, extraArgs: ['--data-plane', 'openresty'], settings: { ...store, ...JSON.parse(flags.settings) } }));
  }
  return shapeGateways.get(kind);
}
async function startPart(part, kind) {
  const edit = PARTS[part];
  if (!edit) {
    console.error(`unknown part ${part} (${Object.keys(PARTS).join(', ')})`);
    process.exit(2);
  }
  const gateway = await openrestyShape(kind);
  const config = path.join(run.dir, `gw-node-1-${kind}-${gateway.port}.json`);
  const out = path.join(run.dir, kind === 'seed' ? `part-${part}` : `part-${part}@${kind}`);
  execFileSync(process.execPath, [path.join(root, 'dist/cli/main.js'), 'openresty', 'conf', '--config', config, '--out', out], { encoding: 'utf8' });
  if (part === 'base') {
    if (!process.env.BASE_LUA || !existsSync(path.join(process.env.BASE_LUA, 'graygate', 'access.lua'))) {
      console.error('part:base needs BASE_LUA: an openresty/ directory holding graygate/*.lua (readable by nginx workers)');
      process.exit(2);
    }
    const http = path.join(out, 'graygate-http.conf');
    writeFileSync(http, readFileSync(http, 'utf8').replace(/lua_package_path "[^?]*\?\.lua;/, `lua_package_path "${process.env.BASE_LUA}/?.lua;`));
  }
  const server = edit(readFileSync(path.join(out, 'graygate-server.conf'), 'utf8'));
  writeFileSync(path.join(out, 'server-part.conf'), server);
  const port = await freePort();
  const conf = path.join(out, 'nginx.conf');
  writeFileSync(
    conf,
    `${LUA_MODULES.map((file) => `load_module ${file};`).join('\n')}
worker_processes 1; pid ${out}/nginx.pid; error_log ${out}/error.log warn;
events { worker_connections 4096; }
http { keepalive_timeout 120s; keepalive_requests 1000000; lua_malloc_trim 0;
  include ${out}/graygate-http.conf;
  access_log ${out}/access.log graygate buffer=64k flush=1s;
  upstream bench_candidate { server 127.0.0.1:${backends.candidatePort}; keepalive 64; }
  server { listen 127.0.0.1:${port} backlog=4096; include ${out}/server-part.conf;
    # Bench only: LuaJIT's profiler and trace log in this worker (started and stopped by --jit).
    location = /__jit/start { allow 127.0.0.1; deny all; content_by_lua_block {
      package.path = package.path .. ";/usr/share/luajit-2.1.0-beta3/?.lua"
      local u = ngx.unescape_uri
      require("jit.v").on(u(ngx.var.arg_v)) require("jit.p").start(u(ngx.var.arg_mode), u(ngx.var.arg_out)) ngx.say("started") } }
    location = /__jit/stop { allow 127.0.0.1; deny all; content_by_lua_block { require("jit.p").stop() require("jit.v").off() ngx.say("stopped") } } } }
`,
  );
  const child = run.start(`part ${part}`, 'nginx', ['-p', `${out}/`, '-c', conf, '-g', 'daemon off;']);
  await waitPort(port);
  return { port, pgid: child.pid };
}


const rows = [];
for (const id of flags.rows.split(',').map((s) => s.trim()).filter(Boolean)) {
  if (id === 'nginx') rows.push({ id, ...(await startNginx('nginx')), headers: { TOKEN }, expect: 'prod' });
  else if (id === 'recipe-tuned') rows.push({ id, ...(await startNginx('tuned', 'access_by_lua_block { require("tuned").route() }')), headers: { TOKEN }, expect: 'gray' });
  else if (/^openresty(-none|-typical|-large)?$/.test(id)) {
    const kind = id === 'openresty' ? 'seed' : id.slice('openresty-'.length);
    const gateway = await openrestyShape(kind);
    rows.push({ id, port: gateway.port, pgid: gateway.pgid, ...CALLERS[kind] });
  } else if (id.startsWith('part:')) {
    const [part, kind = 'seed'] = id.slice(5).split('@');
    if (!CALLERS[kind]) {
      console.error(`unknown shape ${kind} in ${id} (${Object.keys(CALLERS).join(', ')})`);
      process.exit(2);
    }
    rows.push({ id, ...(await startPart(part, kind)), ...CALLERS[kind] });
  } else {
    console.error(`unknown row ${id} (nginx, recipe-tuned, openresty, openresty-none|typical|large, part:${Object.keys(PARTS).join('|part:')}[@none|typical|large])`);
    process.exit(2);
  }
}

const results = [];
for (let rep = 0; rep < reps; rep++) {
  for (const row of rows) {
    const headers = row.headers;
    await probe(row.port, { headers, expect: row.expect });
    runLoad(row.port, headers, { duration: 1, conns });
    const pids = nginxWorkerPids(row.pgid);
    const before = processesCpuSeconds(pids);
    const r = runLoad(row.port, headers, { duration, conns });
    const cpu = processesCpuSeconds(pids) - before;
    results.push({ rep, row: row.id, rps: r.rps, p99: r.p99, errors: r.errors, us: (cpu * 1e6) / r.requests });
    console.error(`  ${row.id.padEnd(17)} ${Math.round(r.rps)} req/s, p99 ${r.p99} ms, worker CPU ${((cpu * 1e6) / r.requests).toFixed(1)} µs/req${r.errors ? `, ${r.errors} errors` : ''}`);
  }
}

const med = (id, key) => median(results.filter((r) => r.row === id).map((r) => r[key]));
// The box's speed drifts within a run: a row's CPU is also compared with the --vs row of the same
// repetition (measured seconds apart), and the median of those ratios is reported.
const vs = flags.vs ?? (rows.some((r) => r.id === 'nginx') ? 'nginx' : rows[0].id);
const pairedRatio = (id) =>
  median(
    results
      .filter((r) => r.row === id)
      .map((r) => r.us / (results.find((o) => o.row === vs && o.rep === r.rep)?.us ?? NaN)),
  );
console.log(`| row | req/s | p99 ms | nginx worker CPU µs/req | CPU × ${vs} (median of each repetition's ratio) |`);
console.log('|---|--:|--:|--:|--:|');
for (const row of rows) {
  console.log(`| ${row.id} | ${Math.round(med(row.id, 'rps'))} | ${med(row.id, 'p99').toFixed(2)} | ${med(row.id, 'us').toFixed(1)} | ${pairedRatio(row.id).toFixed(3)} |`);
}

/** A row's caller as wrk's -H arguments (the shapes' header values need no shell quoting). */
const wrkHeaders = (headers) => Object.entries(headers).map(([name, value]) => `-H '${name}: ${value}'`).join(' ');

if (flags.strace && has('strace')) {
  // System calls per request of each row's worker: what the kernel side of the CPU figure is made of.
  for (const row of rows) {
    const pid = nginxWorkerPids(row.pgid)[0];
    const seconds = Number(flags.strace);
    const out = execFileSync('bash', ['-c', `strace -c -f -p ${pid} -o ${run.dir}/strace-${row.id}.txt & sleep 0.5; wrk -t1 -c${conns} -d${seconds}s ${wrkHeaders(row.headers)} http://127.0.0.1:${row.port}/ | grep 'requests in'; kill -INT %1; wait; cat ${run.dir}/strace-${row.id}.txt`], { encoding: 'utf8', timeout: 120_000 });
    const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
    console.log(`\nsystem calls per request, ${row.id} (${requests} requests):`);
    for (const line of out.split('\n')) {
      const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/.exec(line);
      if (m && Number(m[1]) / requests >= 0.01) console.log(`  ${m[2].padEnd(16)} ${(Number(m[1]) / requests).toFixed(2)}`);
    }
  }
}

if (flags.perf && has('perf')) {
  // Where each row's worker spends its time, by binary (kernel, nginx, libc, LuaJIT, the Lua module)
  // and by symbol (self time): the same load as the measurement, sampled for --perf seconds.
  const seconds = Number(flags.perf);
  for (const row of rows) {
    const pid = nginxWorkerPids(row.pgid)[0];
    const data = path.join(run.dir, `perf-${row.id}.data`);
    const out = execFileSync('bash', ['-c', `perf record -F 2000 -p ${pid} -o ${data} -- sleep ${seconds} >/dev/null 2>&1 & wrk -t1 -c${conns} -d${seconds}s ${wrkHeaders(row.headers)} http://127.0.0.1:${row.port}/ | grep 'requests in'; wait; perf report -i ${data} --sort dso --stdio 2>/dev/null | grep '%' | head -12; perf report -i ${data} --sort dso,symbol --stdio 2>/dev/null | grep '%' | head -40`], { encoding: 'utf8', timeout: 120_000 });
    console.log(`\nperf, ${row.id} worker:\n${out}`);
  }
}
if (flags.jit) {
  const seconds = Number(flags.jit);
  for (const row of rows.filter((r) => r.id.startsWith('part:'))) {
    // nginx's worker runs as another user: it writes into a directory of its own.
    const dir = path.join(run.dir, 'jit');
    mkdirSync(dir, { recursive: true });
    chmodSync(run.dir, 0o711);
    chmodSync(dir, 0o777);
    const out = path.join(dir, `profile-${row.id.slice(5)}.txt`);
    const trace = path.join(dir, `traces-${row.id.slice(5)}.txt`);
    const q = `mode=${encodeURIComponent(flags['jit-mode'])}&out=${encodeURIComponent(out)}&v=${encodeURIComponent(trace)}`;
    execFileSync('curl', ['-sf', `http://127.0.0.1:${row.port}/__jit/start?${q}`]);
    runLoad(row.port, row.headers, { duration: seconds, conns });
    execFileSync('curl', ['-sf', `http://127.0.0.1:${row.port}/__jit/stop`]);
    if (!existsSync(out)) {
      console.error(`no profile written; the worker's error log:\n${readFileSync(path.join(run.dir, `part-${row.id.slice(5)}`, 'error.log'), 'utf8').slice(-2000)}`);
      continue;
    }
    console.log(`\nLuaJIT profile (jit.p ${flags['jit-mode']}), ${row.id} worker, ${seconds} s of load:\n${readFileSync(out, 'utf8').split('\n').slice(0, 60).join('\n')}`);
    const aborts = readFileSync(trace, 'utf8').split('\n').filter((line) => /abort|NYI|blacklist/i.test(line));
    // The run's directory is removed at exit: keep the files where asked.
    if (flags['jit-keep']) {
      mkdirSync(flags['jit-keep'], { recursive: true });
      for (const file of [out, trace]) copyFileSync(file, path.join(flags['jit-keep'], path.basename(file)));
    }
    console.log(`jit.v, ${row.id}: ${aborts.length} abort lines (all in ${flags['jit-keep'] ? path.join(flags['jit-keep'], path.basename(trace)) : trace})\n${[...new Set(aborts.map((l) => l.replace(/^\[TRACE\s+(--|\d+)\s*/, '')))].slice(0, 25).join('\n')}`);
  }
}
process.exit(0);
