// What every bench script needs: free ports, processes started in their own process group and
// all stopped at exit, loopback backends, a bounded load run (wrk when installed, else
// autocannon), CPU time of a process group, and medians. Nothing here listens beyond 127.0.0.1.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../..', import.meta.url));
export const cliPath = path.join(root, 'dist/cli/main.js');

export function has(command) {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function waitPort(port, withinMs = 15_000) {
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
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * A scratch directory and a process starter for one bench run. Each process runs in its own
 * process group (so its children, e.g. nginx or cluster workers, stop with it); all are stopped
 * and the directory removed when the bench exits. Gateways run one process each unless
 * WORKERS says otherwise (graygate itself defaults to one per core).
 */
export function createRun(prefix) {
  const dir = mkdtempSync(path.join(tmpdir(), `${prefix}-`));
  const children = [];
  const workers = process.env.WORKERS ?? '1';
  const stopAll = () => {
    for (const child of children) {
      child.stopping = true;
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {}
    }
    children.length = 0;
  };
  process.on('exit', () => {
    stopAll();
    rmSync(dir, { recursive: true, force: true });
  });
  // Signals end the bench through process.exit, so the 'exit' handler stops every group
  // (without a handler, SIGTERM, e.g. from `timeout`, would leave them running).
  process.on('SIGINT', () => process.exit(130));
  process.on('SIGTERM', () => process.exit(143));
  process.on('SIGHUP', () => process.exit(129));
  /** Starts `command`; `onStdout` gets its stdout line by line when given. */
  const start = (name, command, args, onStdout) => {
    const child = spawn(command, args, {
      env: { ...process.env, GRAYGATE_WORKERS: workers },
      stdio: ['ignore', onStdout ? 'pipe' : 'ignore', 'pipe'],
      detached: true,
    });
    if (onStdout) {
      let pending = '';
      child.stdout.on('data', (chunk) => {
        const lines = (pending + chunk).split('\n');
        pending = lines.pop();
        for (const line of lines) onStdout(line);
      });
    }
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr = (stderr + chunk).slice(-4_000)));
    child.on('exit', (code) => {
      if (code && !child.stopping) process.stderr.write(`${name} exited ${code}: ${stderr}\n`);
    });
    children.push(child);
    return child;
  };
  /** Process-group ids of every process started here and still running. */
  const groups = () => children.filter((child) => child.exitCode === null).map((child) => child.pid);
  return { dir, workers, start, stopAll, groups };
}

/** CPU seconds (user+system) used so far by these processes; one that is gone counts 0. */
export function processesCpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {}
  }
  return ticks / 100;
}

/** CPU seconds (user+system) used so far by the processes of a process group. */
export function groupCpuSeconds(pgid) {
  let pids = [];
  try {
    pids = execFileSync('pgrep', ['-g', String(pgid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {}
  return processesCpuSeconds(pids);
}

/** The pids of the nginx worker processes in a process group (not its master). */
export function nginxWorkerPids(pgid) {
  const out = spawnSync('pgrep', ['-g', String(pgid), '-f', 'nginx: worker process'], { encoding: 'utf8' }).stdout;
  return out.trim().split('\n').filter(Boolean).map(Number);
}

/**
 * CPU seconds (user+system, all cores) the whole machine has spent busy so far, from /proc/stat;
 * with groupCpuSeconds of one's own processes, what everything else on the box used meanwhile.
 */
export function machineBusySeconds() {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = fields;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / 100;
}

/** CPU seconds used so far by this process and by the children it has waited for (wrk, curl…). */
export function ownCpuSeconds() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / 100;
}

/**
 * Two loopback backends answering `prod` and `gray` (nginx when installed: fast, so the proxy
 * is what is measured; else node:http in a process of its own). Both also serve `/1mb`: a body
 * of `bigBytes` bytes (default 1 MiB). `workerConnections` bounds nginx's connections (load with
 * thousands of connections straight at the backend needs more than the default).
 */
export async function startBackends(run, { bigBytes = 1 << 20, workerConnections = 4096 } = {}) {
  const stablePort = await freePort();
  const candidatePort = await freePort();
  // nginx workers may run as another user (nobody, when started as root): let them read /1mb.
  chmodSync(run.dir, 0o755);
  mkdirSync(path.join(run.dir, 'www'), { recursive: true, mode: 0o755 });
  writeFileSync(path.join(run.dir, 'www', '1mb'), Buffer.alloc(bigBytes, 'x'));
  if (has('nginx')) {
    const conf = path.join(run.dir, 'backends.conf');
    writeFileSync(
      conf,
      `worker_processes 1; pid ${run.dir}/backends.pid; error_log ${run.dir}/backends-error.log; worker_rlimit_nofile ${workerConnections * 2};
events { worker_connections ${workerConnections}; }
http { access_log off; keepalive_requests 1000000; sendfile on; default_type application/octet-stream;
  server { listen 127.0.0.1:${stablePort}; location = /1mb { root ${run.dir}/www; } location / { return 200 "prod\\n"; } }
  server { listen 127.0.0.1:${candidatePort}; location = /1mb { root ${run.dir}/www; } location / { return 200 "gray\\n"; } } }
`,
    );
    run.start('backends', 'nginx', ['-p', `${run.dir}/`, '-c', conf, '-g', 'daemon off;']);
  } else {
    const script = `const http=require('http');const big=Buffer.alloc(${bigBytes},'x');for(const [p,b] of [[${stablePort},'prod\\n'],[${candidatePort},'gray\\n']])http.createServer((q,s)=>{const body=q.url==='/1mb'?big:b;s.writeHead(200,{'content-length':body.length});s.end(body)}).listen(p,'127.0.0.1')`;
    run.start('backends', process.execPath, ['-e', script]);
  }
  await Promise.all([waitPort(stablePort), waitPort(candidatePort)]);
  return {
    stablePort,
    candidatePort,
    stable: `http://127.0.0.1:${stablePort}`,
    candidate: `http://127.0.0.1:${candidatePort}`,
    kind: has('nginx') ? 'nginx' : 'node:http',
  };
}

/** A private redis-server on a free loopback port, with no persistence; `cli(...)` runs redis-cli. */
export async function startRedis(run) {
  const port = await freePort();
  run.start('redis-server', process.env.REDIS_SERVER ?? 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', run.dir, '--save', '', '--appendonly', 'no']);
  await waitPort(port);
  const cli = (...args) => execFileSync(process.env.REDIS_CLI ?? 'redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' });
  return { port, url: `redis://127.0.0.1:${port}`, cli };
}

const SIZE_UNITS = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };

/**
 * One bounded load run against 127.0.0.1:port: `{ rps, p50, p99, errors, requests, bytesPerSec,
 * socketErrors }` (latencies in ms). `path` defaults to `/`; wrk's own timeout is raised to 10 s
 * so thousands of connections on a small box show up as latency, not as timeouts.
 */
export function runLoad(port, headers, { duration, conns, path: urlPath = '/', scheme = 'http' }) {
  const url = `${scheme}://127.0.0.1:${port}${urlPath}`;
  if (has('wrk')) {
    const args = ['-t1', `-c${conns}`, `-d${duration}s`, '--timeout', '10s', '--latency'];
    for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
    const out = execFileSync('wrk', [...args, url], { encoding: 'utf8', timeout: (duration + 60) * 1000 });
    const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
    const ms = (label) => {
      const m = new RegExp(`${label}%\\s+([\\d.]+)(us|ms|s)`).exec(out);
      if (!m) return NaN;
      return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
    };
    const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const socketErrors = socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0;
    const errors = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) + (socket ? 1 : 0);
    const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
    const transfer = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB|TB)/.exec(out);
    const bytesPerSec = transfer ? Number(transfer[1]) * SIZE_UNITS[transfer[2]] : NaN;
    return { rps, p50: ms(' 50'), p99: ms(' 99'), errors, requests, bytesPerSec, socketErrors };
  }
  const script = `import('autocannon').then(async ({default: a}) => { process.env.NODE_TLS_REJECT_UNAUTHORIZED='0'; const r = await a({url:${JSON.stringify(url)}, connections:${conns}, duration:${duration}, timeout:10, headers:${JSON.stringify(headers)}}); console.log(JSON.stringify({rps:r.requests.average,p50:r.latency.p50,p99:r.latency.p99,errors:r.non2xx+r.errors+r.timeouts,requests:r.requests.total,bytesPerSec:r.throughput.average,socketErrors:r.errors+r.timeouts})) })`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: root, timeout: (duration + 60) * 1000 });
  return JSON.parse(out.trim().split('\n').pop());
}

/** Pids of a process group (the leader first). */
export function groupPids(pgid) {
  let pids = [];
  try {
    pids = execFileSync('pgrep', ['-g', String(pgid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
  } catch {}
  return [pgid, ...pids.filter((pid) => pid !== pgid)].filter((pid) => pids.includes(pid));
}

/** `{ rssKb, hwmKb }` of a process from /proc/<pid>/status (VmRSS, VmHWM), or undefined. */
export function processMemory(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return { rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]), hwmKb: Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]) };
  } catch {
    return undefined;
  }
}

/** Resets a process's peak RSS (VmHWM) to its current RSS (Linux: `5` into clear_refs). */
export function resetPeakRss(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

// An even count takes the mean of the two middle values: picking the upper one biased every row
// of a two-rep run upward.
export const median = (values) => {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

/** Which load tool runLoad uses. */
export const loadTool = () => (has('wrk') ? 'wrk' : 'autocannon');

/** The short commit the figures were measured at, for the raw results; undefined outside a git checkout. */
export function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}
