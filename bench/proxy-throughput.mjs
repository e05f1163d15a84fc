#!/usr/bin/env node
// Question: how much throughput and latency does graygate cost compared with calling the
// backend directly and (when nginx is installed) with nginx proxy_pass, in the same run?
//
//   npm run bench                        # build, then ~3 min: 4 targets x 2 modes x REPS runs
//   DURATION=3 REPS=1 node bench/proxy-throughput.mjs
//
// Load: wrk -t1 -c$CONNS when installed (as in ../shared/bench-anchors), else autocannon.
// Backend: nginx returning 5 bytes when installed (fast, so the proxy is what is measured),
// else a node:http process. Modes: "rule" sends a header that makes graygate evaluate its rules
// and pick the candidate; "plain" sends none (stable). Everything listens on 127.0.0.1, every
// run is bounded by DURATION, and every process started here is stopped at the end.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const DURATION = Number(process.env.DURATION ?? 5);
const REPS = Number(process.env.REPS ?? 2);
const CONNS = Number(process.env.CONNS ?? 50);
const dir = mkdtempSync(path.join(tmpdir(), 'graygate-bench-'));
const children = [];

function has(command) {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitPort(port, withinMs = 15_000) {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function start(name, command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  child.on('exit', (code) => {
    if (code && !child.stopping) process.stderr.write(`${name} exited ${code}: ${stderr}\n`);
  });
  children.push(child);
  return child;
}

function stopAll() {
  for (const child of children) {
    child.stopping = true;
    try {
      process.kill(-child.pid, 'SIGTERM');
    } catch {}
  }
}
process.on('exit', stopAll);
process.on('SIGINT', () => process.exit(130));

/** CPU seconds (user+system) used so far by a process and its children in its group. */
function groupCpuSeconds(pgid) {
  let ticks = 0;
  let pids = [];
  try {
    pids = execFileSync('pgrep', ['-g', String(pgid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {}
  for (const pid of pids) {
    try {
      const stat = execFileSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' });
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {}
  }
  return ticks / 100;
}

async function startBackends() {
  const stablePort = await freePort();
  const candidatePort = await freePort();
  if (has('nginx')) {
    const conf = path.join(dir, 'backends.conf');
    writeFileSync(
      conf,
      `worker_processes 1; pid ${dir}/backends.pid; error_log ${dir}/backends-error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:${stablePort}; location / { return 200 "prod\\n"; } }
  server { listen 127.0.0.1:${candidatePort}; location / { return 200 "gray\\n"; } } }
`,
    );
    start('backends', 'nginx', ['-p', `${dir}/`, '-c', conf, '-g', 'daemon off;']);
    await Promise.all([waitPort(stablePort), waitPort(candidatePort)]);
    return { stablePort, candidatePort, kind: 'nginx' };
  }
  const script = `const http=require('http');for(const [p,b] of [[${stablePort},'prod\\n'],[${candidatePort},'gray\\n']])http.createServer((q,s)=>{s.writeHead(200,{'content-length':b.length});s.end(b)}).listen(p,'127.0.0.1')`;
  start('backends', process.execPath, ['-e', script]);
  await Promise.all([waitPort(stablePort), waitPort(candidatePort)]);
  return { stablePort, candidatePort, kind: 'node:http' };
}

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
  const child = start('graygate', process.execPath, [path.join(root, 'dist/cli/main.js'), 'start', '--config', config, '--workers', String(workers)]);
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

function runLoad(port, headers) {
  if (has('wrk')) {
    const args = ['-t1', `-c${CONNS}`, `-d${DURATION}s`, '--latency'];
    for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
    const out = execFileSync('wrk', [...args, `http://127.0.0.1:${port}/`], { encoding: 'utf8' });
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
    const ms = (label) => {
      const m = new RegExp(`${label}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
      if (!m) return NaN;
      return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
    };
    const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? '0';
    const socketErrors = /Socket errors: ([^\n]+)/.exec(out)?.[1];
    return { rps, p50: ms(' 50'), p99: ms(' 99'), errors: Number(errors) + (socketErrors ? 1 : 0) };
  }
  const script = `import('autocannon').then(async ({default: a}) => { const r = await a({url:'http://127.0.0.1:${port}/', connections:${CONNS}, duration:${DURATION}, headers:${JSON.stringify(headers)}}); console.log(JSON.stringify({rps:r.requests.average,p50:r.latency.p50,p99:r.latency.p99,errors:r.non2xx+r.errors})) })`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: root });
  return JSON.parse(out.trim().split('\n').pop());
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

async function main() {
  if (!existsSync(path.join(root, 'dist/cli/main.js'))) throw new Error('run `npm run build` first (npm run bench does)');
  const tool = has('wrk') ? 'wrk' : 'autocannon';
  const backends = await startBackends();
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
