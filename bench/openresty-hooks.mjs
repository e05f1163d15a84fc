// Question: what does each lua-nginx-module hook cost at its floor, next to plain nginx proxy_pass
// in the same run? The floor is the price any Lua data plane pays per request for using a phase at
// all, before doing anything in it; graygate's OpenResty data plane is judged against it.
//
//   node bench/openresty-hooks.mjs [--rows nginx,access,header-filter,log,balancer,all] [--reps 5] [--duration 4]
//
// Rows: nginx (proxy_pass to a named upstream), then the same with an empty access_by_lua_block,
// an empty header_filter_by_lua_block, an empty log_by_lua_block, a balancer_by_lua_block that sets
// the peer (keepalive pool as graygate's), every hook together, and `vars` (an access hook writing
// four nginx variables, as a decision's log fields) and `ctx` (an access hook creating ngx.ctx).
// The signal is CPU µs per request of the nginx worker (utime+stime from /proc), not req/s.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRun, freePort, has, median, nginxWorkerPids, processesCpuSeconds, runLoad, startBackends, waitPort } from './lib/harness.mjs';

const { values: flags } = parseArgs({
  options: {
    rows: { type: 'string', default: 'nginx,access,header-filter,log,balancer,all,vars,ctx' },
    duration: { type: 'string', default: '4' },
    reps: { type: 'string', default: '5' },
    conns: { type: 'string', default: '50' },
  },
});
const duration = Number(flags.duration);
const reps = Number(flags.reps);
const conns = Number(flags.conns);
if (!has('nginx') || !has('wrk')) {
  console.error('needs nginx (with libnginx-mod-http-lua) and wrk');
  process.exit(1);
}
const LUA_MODULES = ['/usr/lib/nginx/modules/ndk_http_module.so', '/usr/lib/nginx/modules/ngx_http_lua_module.so'];
const run = createRun('graygate-hooks');
const backends = await startBackends(run);

const ACCESS = 'access_by_lua_block { }';
const HEADER = 'header_filter_by_lua_block { }';
const LOG = 'log_by_lua_block { }';
const ROWS = {
  nginx: { location: '' },
  access: { location: ACCESS },
  'header-filter': { location: HEADER },
  log: { location: LOG },
  balancer: { location: '', balancer: true },
  all: { location: `${ACCESS} ${HEADER} ${LOG}`, balancer: true },
  vars: { location: 'access_by_lua_block { local v = ngx.var; v.a = "svc"; v.b = "candidate"; v.c = "range"; v.d = "gray" }', vars: true },
  ctx: { location: 'access_by_lua_block { ngx.ctx.g = 1 }' },
};

async function startRow(id) {
  const row = ROWS[id];
  if (!row) {
    console.error(`unknown row ${id} (${Object.keys(ROWS).join(', ')})`);
    process.exit(2);
  }
  const port = await freePort();
  const conf = path.join(run.dir, `${id}.conf`);
  const upstream = row.balancer
    ? `upstream target { server 0.0.0.1; balancer_by_lua_block { require("ngx.balancer").set_current_peer("127.0.0.1", ${backends.stablePort}) } keepalive 64; keepalive_requests 1000000; }`
    : `upstream target { server 127.0.0.1:${backends.stablePort}; keepalive 64; keepalive_requests 1000000; }`;
  writeFileSync(
    conf,
    `${LUA_MODULES.map((file) => `load_module ${file};`).join('\n')}
worker_processes 1; pid ${run.dir}/${id}.pid; error_log ${run.dir}/${id}-error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; lua_malloc_trim 0;
  ${upstream}
  server { listen 127.0.0.1:${port} backlog=4096;
    ${row.vars ? 'set $a ""; set $b ""; set $c ""; set $d "";' : ''}
    location / { ${row.location}
      proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://target; } } }
`,
  );
  const child = run.start(id, 'nginx', ['-p', `${run.dir}/`, '-c', conf, '-g', 'daemon off;']);
  await waitPort(port);
  return { id, port, pgid: child.pid };
}


const rows = [];
for (const id of flags.rows.split(',').map((s) => s.trim()).filter(Boolean)) rows.push(await startRow(id));
const results = [];
for (let rep = 0; rep < reps; rep++) {
  for (const row of rows) {
    runLoad(row.port, {}, { duration: 1, conns });
    const pids = nginxWorkerPids(row.pgid);
    const before = processesCpuSeconds(pids);
    const r = runLoad(row.port, {}, { duration, conns });
    const us = ((processesCpuSeconds(pids) - before) * 1e6) / r.requests;
    // Per rep, against the nginx row of the same rep: the box's drift cancels out.
    results.push({ row: row.id, rep, rps: r.rps, us });
    console.error(`  ${row.id.padEnd(14)} ${Math.round(r.rps)} req/s, worker CPU ${us.toFixed(1)} µs/req${r.errors ? `, ${r.errors} errors` : ''}`);
  }
}
const base = (rep) => results.find((r) => r.row === 'nginx' && r.rep === rep)?.us;
const med = (id, key) => median(results.filter((r) => r.row === id).map((r) => r[key]));
console.log('| row | req/s | worker CPU µs/req | µs over nginx (median of per-rep differences) |');
console.log('|---|--:|--:|--:|');
for (const row of rows) {
  const over = results.filter((r) => r.row === row.id && base(r.rep) !== undefined).map((r) => r.us - base(r.rep));
  console.log(`| ${row.id} | ${Math.round(med(row.id, 'rps'))} | ${med(row.id, 'us').toFixed(1)} | ${over.length ? median(over).toFixed(1) : '–'} |`);
}

process.exit(0);
