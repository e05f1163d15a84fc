// What metrics.lua costs per request inside nginx: its access-phase and log-phase calls
// (metrics.started + metrics.log_vars, the usual request) run in a loop inside one nginx worker,
// timed there, with the rollout figures on (graygate's latency bounds given, as the conf graygate
// writes does) and off (no bounds: the four other increments only). Alternating runs of both in one
// invocation, so the ratio is read on the same box at the same moment; absolute figures are noisy.
//
//   npm run build && node bench/openresty-metrics-cost.mjs [--iterations 200000] [--reps 5]
//
// Needs nginx with the Lua module (Debian: nginx libnginx-mod-http-lua lua-resty-core lua-cjson).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, has, median, root, waitPort } from './lib/harness.mjs';

const { values: flags } = parseArgs({ options: { iterations: { type: 'string', default: '200000' }, reps: { type: 'string', default: '5' } } });
const iterations = Number(flags.iterations);
const reps = Number(flags.reps);
if (!has('nginx') || !existsSync('/usr/lib/nginx/modules/ngx_http_lua_module.so')) {
  console.error('needs nginx with the Lua module (apt-get install nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson)');
  process.exit(2);
}
const { latencyBoundsInitArgs } = await import(path.join(root, 'dist/openresty/metrics.js'));

async function startNginx(withFigures) {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-metrics-cost-'));
  mkdirSync(path.join(dir, 'logs'));
  const port = await freePort();
  const init = `require("graygate.metrics").init({ dict = "graygate_metrics"${withFigures ? `, ${latencyBoundsInitArgs()}` : ''} })`;
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    `load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  lua_package_path "${root}openresty/?.lua;/usr/share/lua/5.1/?.lua;;";
  lua_shared_dict graygate_metrics 4m;
  init_worker_by_lua_block { ${init} }
  server {
    listen 127.0.0.1:${port};
    location = /cost {
      set $gg_inflight "";
      content_by_lua_block {
        local metrics = require "graygate.metrics"
        local d = { service = "app", version = "candidate", upstream = "app-v2", reason = "r" }
        local n = tonumber(ngx.var.arg_n)
        ngx.update_time()
        local t0 = ngx.now()
        for _ = 1, n do
          local g = {}
          metrics.started("app-v2", g, d)
          metrics.log_vars(g)
        end
        ngx.update_time()
        ngx.say((ngx.now() - t0) * 1e9 / n)
      }
    }
  }
}
`,
  );
  const child = spawn('nginx', ['-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-e', 'stderr'], { stdio: ['ignore', 'ignore', 'inherit'], detached: true });
  await waitPort(port);
  return {
    async run(n) {
      const response = await fetch(`http://127.0.0.1:${port}/cost?n=${n}`);
      return Number((await response.text()).trim());
    },
    stop() {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const withFigures = await startNginx(true);
const without = await startNginx(false);
try {
  // Warm-up: LuaJIT compiles the loop, the keys are made.
  await withFigures.run(iterations);
  await without.run(iterations);
  const a = [];
  const b = [];
  for (let i = 0; i < reps; i++) {
    a.push(await withFigures.run(iterations));
    b.push(await without.run(iterations));
  }
  const ma = median(a);
  const mb = median(b);
  console.log(`metrics.lua per request (started + log_vars), ${iterations} iterations × ${reps} reps, median:`);
  console.log(`  with the rollout figures:    ${ma.toFixed(0)} ns   (${a.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`  without (no latency bounds): ${mb.toFixed(0)} ns   (${b.map((x) => x.toFixed(0)).join(', ')})`);
  console.log(`  ratio: ${(ma / mb).toFixed(2)}×, difference ${(ma - mb).toFixed(0)} ns`);
} finally {
  withFigures.stop();
  without.stop();
}
