#!/usr/bin/env node
// Question: how much throughput and latency does graygate cost compared with calling the
// backend directly and (when nginx is installed) with nginx proxy_pass, in the same run?
//
//   npm run bench                        # build, then ~3 min: 4 targets x 2 modes x REPS runs
//   DURATION=3 REPS=1 node bench/proxy-throughput.mjs
//
// Load: wrk -t1 -c$CONNS when installed, else autocannon.
// Backend: nginx returning 5 bytes when installed (fast, so the proxy is what is measured),
// else a node:http process. Modes: "rule" sends a header that makes graygate evaluate its rules
// and pick the candidate; "plain" sends none (stable). Everything listens on 127.0.0.1, every
// run is bounded by DURATION, and every process started here is stopped at the end.
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cliPath, createRun, groupCpuSeconds, has, freePort, loadTool, median, runLoad as load, startBackends, waitPort } from './lib/harness.mjs';

const DURATION = Number(process.env.DURATION ?? 5);
const REPS = Number(process.env.REPS ?? 2);
const CONNS = Number(process.env.CONNS ?? 50);
const run = createRun('graygate-bench');
const { dir, start, stopAll } = run;
const runLoad = (port, headers) => load(port, headers, { duration: DURATION, conns: CONNS });

async function startGraygate(backends, workers) {
  const port = await freePort();
  const config = path.join(dir, `graygate-${workers}.yaml`);
  writeFileSync(
    config,
    `listen: 127.0.0.1:${port}
log: { level: warn }
upstreams:
  stable: { servers: ["http://127.0.0.1:${backends.stablePort}"] }
  candidate: { servers: ["http://127.0.0.1:${backends.candidatePort}"] }
identity:
  sources: [ { header: { name: x-user-id } } ]
services:
  - name: bench
    stable: stable
    release:
      candidate: candidate
      rules:
        - { name: testers, header: { name: x-canary, equals: "1" } }
        - { name: first-users, uidRange: { from: 1, to: 5000 } }
`,
  );
  const child = start('graygate', process.execPath, [cliPath, 'start', '--config', config, '--workers', String(workers)]);
  await waitPort(port);
  return { port, pgid: child.pid };
}

async function startNginxProxy(backends) {
  const port = await freePort();
  const conf = path.join(dir, 'proxy.conf');
  writeFileSync(
    conf,
    `worker_processes 1; pid ${dir}/proxy.pid; error_log ${dir}/proxy-error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream prod { server 127.0.0.1:${backends.stablePort}; keepalive 64; }
  upstream gray { server 127.0.0.1:${backends.candidatePort}; keepalive 64; }
  map $http_x_user_id $pool { default prod; "1234" gray; }
  server { listen 127.0.0.1:${port};
    location / { proxy_pass http://$pool; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
`,
  );
  const child = start('nginx-proxy', 'nginx', ['-p', `${dir}/`, '-c', conf, '-g', 'daemon off;']);
  await waitPort(port);
  return { port, pgid: child.pid };
}

async function main() {
  if (!existsSync(cliPath)) throw new Error('run `npm run build` first (npm run bench does)');
  const tool = loadTool();
  const backends = await startBackends(run);
  const targets = [{ name: 'direct to backend', port: backends.stablePort, candidatePort: backends.candidatePort }];
  if (has('nginx')) targets.push({ name: 'nginx proxy_pass', ...(await startNginxProxy(backends)) });
  targets.push({ name: 'graygate --workers 1', ...(await startGraygate(backends, 1)) });
  targets.push({ name: 'graygate --workers 2', ...(await startGraygate(backends, 2)) });
  const modes = [
    { name: 'plain', headers: {} },
    { name: 'rule', headers: { 'x-user-id': '1234' } },
  ];
  process.stderr.write(`load: ${tool} -c${CONNS} ${DURATION}s x ${REPS} reps; backend: ${backends.kind}; ${targets.length} targets\n`);
  const results = new Map();
  for (let rep = 0; rep < REPS; rep++) {
    for (const target of targets) {
      for (const mode of modes) {
        // Direct runs hit the backend the rule would have chosen, so both modes are comparable.
        const port = target.candidatePort && mode.name === 'rule' ? target.candidatePort : target.port;
        runLoad(port, mode.headers); // warm-up, discarded
        const cpuBefore = target.pgid ? groupCpuSeconds(target.pgid) : 0;
        const r = runLoad(port, mode.headers);
        const cpu = target.pgid ? groupCpuSeconds(target.pgid) - cpuBefore : NaN;
        r.cpuUsPerReq = (cpu * 1e6) / (r.rps * DURATION);
        const key = `${target.name}|${mode.name}`;
        results.set(key, [...(results.get(key) ?? []), r]);
        process.stderr.write(`  ${key}: ${Math.round(r.rps)} req/s p99 ${r.p99.toFixed(2)} ms errors ${r.errors}\n`);
      }
    }
  }
  const summary = (key) => {
    const runs = results.get(key);
    return {
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      cpu: median(runs.map((r) => r.cpuUsPerReq)),
      errors: runs.reduce((sum, r) => sum + r.errors, 0),
    };
  };
  const lines = [
    `| target | mode | req/s | × direct | × nginx | p50 ms | p99 ms | CPU µs/req | errors |`,
    `|---|---|--:|--:|--:|--:|--:|--:|--:|`,
  ];
  for (const target of targets) {
    for (const mode of modes) {
      const s = summary(`${target.name}|${mode.name}`);
      const direct = summary(`direct to backend|${mode.name}`);
      const nginx = results.has(`nginx proxy_pass|${mode.name}`) ? summary(`nginx proxy_pass|${mode.name}`) : undefined;
      lines.push(
        `| ${target.name} | ${mode.name} | ${Math.round(s.rps)} | ${(s.rps / direct.rps).toFixed(2)} | ${nginx ? (s.rps / nginx.rps).toFixed(2) : '–'} | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${Number.isFinite(s.cpu) ? s.cpu.toFixed(0) : '–'} | ${s.errors} |`,
      );
    }
  }
  process.stdout.write(`\n${lines.join('\n')}\n\n(${tool} -t1 -c${CONNS}, ${DURATION}s runs, median of ${REPS}; same machine, same run; ratios are what carries over)\n`);
  stopAll();
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  stopAll();
  process.exit(1);
});
