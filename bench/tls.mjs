// Question: what does TLS cost graygate, against what it costs nginx in the same run, and does
// HTTP/2 carry as much as HTTP/1.1?
//
//   npm run bench:tls                          # 5 s × 3 reps per measurement (~5 min)
//   npm run bench:tls -- --duration 3 --reps 1 --workers 2
//   npm run bench:tls -- --only handshakes --reps 5   # only the new-connection rows
//
// graygate on OpenResty (`start --data-plane openresty`, the seed rule, --nginx-workers workers)
// gets the keep-alive and handshake rows too when nginx's Lua module is installed.
//
// Measured, interleaved (every measurement once, then again for the next rep):
// - keep-alive, the seed rule (TOKEN → Redis → uid in Grayscale_Range): graygate over TLS and
//   plain, nginx proxy_pass over TLS and plain (wrk -t1 -c50; autocannon without wrk);
// - new TLS handshakes per second: the same with `Connection: close`, every request a new
//   connection (wrk does not resume sessions, so each is a full handshake), graygate, nginx and a
//   bare node:https server answering by itself (the ceiling: Node's own per-connection TLS cost);
//   each row also gives the CPU time its server processes spent per request (utime+stime of the
//   process group over the measured run), steadier than req/s on a shared box;
// - HTTP/2 with 100 concurrent streams over 10 connections against HTTP/1.1 with 50 keep-alive
//   connections, both over TLS to graygate and both driven by the same small node load client
//   (h2load is rarely installed; one tool for both keeps the comparison about the protocol).
// Before measuring, one TLS connection to each server prints what it negotiates (protocol, cipher,
// key exchange group, certificate key), so the rows compare like with like. `--workers N` gives
// graygate N workers, nginx N worker processes and the bare server N cluster workers.
// Certificates are made with openssl into the run's temp dir. Everything listens on 127.0.0.1 and
// stops when the bench ends; every load run is bounded by --duration.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createRun, freePort, groupCpuSeconds, has, loadTool, median, processesCpuSeconds, root, runLoad, startBackends, startRedis, waitPort } from './lib/harness.mjs';
import { probe, seedRedis, startGateway, TOKEN } from './lib/gateways.mjs';

const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    reps: { type: 'string', default: '3' },
    conns: { type: 'string', default: '50' },
    workers: { type: 'string', default: '1' },
    'nginx-workers': { type: 'string' },
    only: { type: 'string', default: 'all' },
    'warm-reps': { type: 'string', default: '1' },
    profile: { type: 'string' },
    baseline: { type: 'string' },
    'baseline-env': { type: 'string' },
    'baseline-tls': { type: 'string' },
    cli: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  console.log('usage: node bench/tls.mjs [--duration 5] [--warmup 1] [--reps 3] [--conns 50] [--workers 1] [--nginx-workers <--workers>] [--only all|handshakes] [--warm-reps 1] [--profile <dir>] [--baseline <dist/cli/main.js of another build>] [--baseline-env NAME=VALUE] [--baseline-tls <JSON merged into its tls settings>] [--cli <dist/cli/main.js of the build to measure>]');
  process.exit(0);
}
const duration = Number(flags.duration);
const warmup = Number(flags.warmup);
const reps = Number(flags.reps);
const conns = Number(flags.conns);
const workers = Number(flags.workers);
const nginxWorkers = Number(flags['nginx-workers'] ?? workers);
const warmReps = Number(flags['warm-reps']);
if (![duration, reps, conns, workers, nginxWorkers].every((n) => Number.isInteger(n) && n > 0) || !(warmup >= 0) || !(Number.isInteger(warmReps) && warmReps >= 0)) {
  console.error('--duration, --reps, --conns, --workers and --nginx-workers take whole numbers above 0; --warmup a number of seconds; --warm-reps a whole number');
  process.exit(2);
}
if (flags.only !== 'all' && flags.only !== 'handshakes') {
  console.error(`--only: expected all or handshakes, got ${JSON.stringify(flags.only)}`);
  process.exit(2);
}
const onlyHandshakes = flags.only === 'handshakes';
if (!existsSync(path.join(root, 'dist/cli/main.js'))) {
  console.error('bench:tls: run `npm run build` first (npm run bench:tls does)');
  process.exit(1);
}
if (!has('openssl')) {
  console.error('bench:tls: needs the openssl command to make its certificates');
  process.exit(1);
}

const run = createRun('graygate-tls');
const cert = path.join(run.dir, 'cert.pem');
const key = path.join(run.dir, 'key.pem');
// P-256: what a modern site serves; the handshake figure depends on the key type.
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });

const backends = await startBackends(run);
const redis = await startRedis(run);
seedRedis(redis);

// ---- graygate: plain and TLS listeners of one gateway -----------------------------------------
const ggTlsPort = await freePort();
const gateway = await startGateway(run, {
  workers,
  kind: 'seed',
  backends,
  redis,
  // --cli: measure another build as graygate (default: this checkout's dist/).
  ...(flags.cli ? { cli: path.resolve(flags.cli) } : {}),
  // --profile: a V8 CPU profile of each graygate process, written when the bench stops it.
  ...(flags.profile ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', path.resolve(flags.profile)] } : {}),
  settings: { tls: { listen: `127.0.0.1:${ggTlsPort}`, certificates: [{ cert, key }], http2: { maxConcurrentStreams: 128 } } },
});
await waitPort(ggTlsPort);

// --baseline: the same gateway from another build (e.g. a copy of dist/ before a change), or this
// build with another environment or TLS setting (--baseline-env, --baseline-tls), measured in the
// same run, so a change is judged by a ratio of one run rather than across runs.
let baseline;
if (flags.baseline) {
  const tlsPort = await freePort();
  // --baseline-env: an environment variable for the baseline only (e.g. NODE_CLUSTER_SCHED_POLICY=none).
  const [envName, ...envValue] = (flags['baseline-env'] ?? '').split('=');
  const saved = process.env[envName];
  if (envName) process.env[envName] = envValue.join('=');
  const started = await startGateway(run, { workers, kind: 'seed', backends, redis, cli: path.resolve(flags.baseline), settings: { tls: { listen: `127.0.0.1:${tlsPort}`, certificates: [{ cert, key }], http2: { maxConcurrentStreams: 128 }, ...JSON.parse(flags['baseline-tls'] ?? '{}') } } });
  if (envName) {
    if (saved === undefined) delete process.env[envName];
    else process.env[envName] = saved;
  }
  await waitPort(tlsPort);
  baseline = { tlsPort, pgid: started.pgid };
}

// ---- graygate on OpenResty: nginx terminates TLS with graygate's certificate (chosen in Lua) -----
// The seed rule in graygate's Lua data plane, `--workers` nginx worker processes; left out when
// nginx's Lua module is not installed.
let openresty;
if (has('nginx') && existsSync('/usr/lib/nginx/modules/ngx_http_lua_module.so')) {
  const tlsPort = await freePort();
  const started = await startGateway(run, {
    workers: nginxWorkers,
    kind: 'seed',
    backends,
    redis,
    ...(flags.cli ? { cli: path.resolve(flags.cli) } : {}),
    extraArgs: ['--data-plane', 'openresty'],
    settings: { tls: { listen: `127.0.0.1:${tlsPort}`, certificates: [{ cert, key }], http2: { maxConcurrentStreams: 128 } } },
  });
  await waitPort(tlsPort);
  openresty = { port: started.port, tlsPort, pgid: started.pgid };
} else {
  console.error('left out: graygate on OpenResty (nginx with libnginx-mod-http-lua not installed)');
}

// ---- nginx: proxy_pass on a plain and a TLS listener -------------------------------------------
let nginx;
if (has('nginx')) {
  const plain = await freePort();
  const secure = await freePort();
  const conf = path.join(run.dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes ${nginxWorkers}; pid ${run.dir}/nginx.pid; error_log ${run.dir}/nginx-error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream prod { server 127.0.0.1:${backends.stablePort}; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:${plain} backlog=4096;
    listen 127.0.0.1:${secure} ssl http2 backlog=4096;
    ssl_certificate ${cert}; ssl_certificate_key ${key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://prod; } } }
`,
  );
  const child = run.start('nginx', 'nginx', ['-p', `${run.dir}/`, '-c', conf, '-g', 'daemon off;']);
  await Promise.all([waitPort(plain), waitPort(secure)]);
  nginx = { plain, secure, pgid: child.pid };
} else {
  console.error('left out: nginx (not installed): graygate only');
}

// ---- bare node:https: the same certificate, answering by itself (N cluster workers) ------------
const barePort = await freePort();
const bareScript = `
const cluster = require('node:cluster'); const https = require('node:https'); const fs = require('node:fs');
if (cluster.isPrimary && ${workers} > 1) { for (let i = 0; i < ${workers}; i++) cluster.fork(); }
else https.createServer({ cert: fs.readFileSync(${JSON.stringify(cert)}), key: fs.readFileSync(${JSON.stringify(key)}) }, (req, res) => res.end('prod\\n')).listen(${barePort}, '127.0.0.1');`;
// A file, not `-e`: node:cluster forks the workers from the primary's script.
const bareFile = path.join(run.dir, 'bare-https.cjs');
writeFileSync(bareFile, bareScript);
const bare = { port: barePort, pgid: run.start('bare node https', process.execPath, [bareFile]).pid };
await waitPort(barePort);

/** What a client with OpenSSL's defaults (as wrk's) negotiates with the server on `port`. */
function negotiated(port) {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const key = socket.getEphemeralKeyInfo();
      const certificate = socket.getPeerCertificate();
      resolve(`${socket.getProtocol()} ${socket.getCipher().standardName} ${key.name ?? key.type} ${key.size ?? ''}-bit, certificate ${certificate.asn1Curve ?? `RSA ${certificate.bits}`}`);
      socket.destroy();
    });
    socket.on('error', (error) => resolve(`failed: ${error.message}`));
  });
}
for (const [name, port] of [['graygate', ggTlsPort], ...(openresty ? [['gg openresty', openresty.tlsPort]] : []), ...(baseline ? [['baseline', baseline.tlsPort]] : []), ...(nginx ? [['nginx', nginx.secure]] : []), ['bare node https', barePort]]) console.error(`negotiated with ${name.padEnd(15)}: ${await negotiated(port)}`);

await probe(gateway.port, { headers: { TOKEN }, expect: 'gray' });
if (openresty) await probe(openresty.port, { headers: { TOKEN }, expect: 'gray' });


/**
 * A node client opening `conns` connections at a time, one request each (`Connection: close`),
 * each loop offering the newest session ticket it got when `resume` (else none: full handshakes,
 * the same client, for comparison). Reports `{ rps, requests, errors, resumed }`: `resumed` is
 * the share of connections the server resumed (under --workers they land on any worker).
 */
function reconnectLoad(port, { conns: loops, seconds, resume }) {
  const script = `
const tls = require('node:tls');
const end = Date.now() + ${seconds * 1000}; let done = 0, errors = 0, resumed = 0, open = 0;
const request = 'GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nTOKEN: ${TOKEN}\\r\\nConnection: close\\r\\n\\r\\n';
const loop = (session) => {
  if (Date.now() >= end) { if (--open === 0) { console.log(JSON.stringify({ requests: done, errors, resumed: resumed / Math.max(1, done), rps: done / ${seconds} })); process.exit(0); } return; }
  let next = session, text = '';
  const socket = tls.connect({ port: ${port}, host: '127.0.0.1', rejectUnauthorized: false, ...(${resume} && session ? { session } : {}) }, () => { if (socket.isSessionReused()) resumed++; socket.write(request); });
  socket.on('session', (ticket) => (next = ticket));
  socket.on('data', (chunk) => (text += chunk));
  socket.on('error', () => {});
  socket.on('close', () => { if (text.startsWith('HTTP/1.1 200')) done++; else errors++; loop(next); });
};
for (let i = 0; i < ${loops}; i++) { open++; loop(undefined); }`;
  const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: (seconds + 60) * 1000 });
  if (out.status !== 0) throw new Error(`reconnect client failed: ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split('\n').pop());
}

/** The node load client: `protocol` h2 (sessions × streams each) or h1 (keep-alive connections). */
function nodeLoad(port, protocol, { sessions, streams, seconds = duration }) {
  const script = `
const http2 = require('node:http2'); const https = require('node:https');
const url = 'https://127.0.0.1:${port}/'; const headers = ${JSON.stringify({ TOKEN })};
const end = Date.now() + ${seconds * 1000}; let done = 0, errors = 0, open = 0;
const finish = () => { if (--open === 0) { console.log(JSON.stringify({ requests: done, errors, rps: done / ${seconds} })); process.exit(0); } };
if (${JSON.stringify(protocol)} === 'h2') {
  for (let s = 0; s < ${sessions}; s++) {
    const session = http2.connect(url, { rejectUnauthorized: false }); open++;
    session.on('error', () => errors++);
    let active = 0;
    const one = () => {
      if (Date.now() >= end) { if (active === 0) { session.close(); finish(); } return; }
      active++;
      const req = session.request({ ':path': '/', ...headers });
      req.on('response', (h) => { if (h[':status'] !== 200) errors++; });
      req.on('data', () => {}); req.on('error', () => { errors++; });
      req.on('close', () => { active--; done++; one(); });
      req.end();
    };
    for (let i = 0; i < ${streams}; i++) one();
  }
} else {
  const agent = new https.Agent({ keepAlive: true, maxSockets: ${sessions}, rejectUnauthorized: false });
  for (let c = 0; c < ${sessions}; c++) {
    open++;
    const one = () => {
      if (Date.now() >= end) return finish();
      https.get(url, { agent, headers }, (res) => { if (res.statusCode !== 200) errors++; res.resume(); res.on('end', () => { done++; one(); }); }).on('error', () => { errors++; one(); });
    };
    one();
  }
}`;
  const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: (seconds + 60) * 1000 });
  if (out.status !== 0) throw new Error(`load client failed: ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split('\n').pop());
}

const all = [
  { id: 'gg-plain', label: 'graygate plain, keep-alive', run: (seconds) => runLoad(gateway.port, { TOKEN }, { duration: seconds, conns }) },
  { id: 'gg-tls', label: 'graygate TLS, keep-alive', run: (seconds) => runLoad(ggTlsPort, { TOKEN }, { duration: seconds, conns, scheme: 'https' }) },
  ...(nginx
    ? [
        { id: 'nginx-plain', label: 'nginx plain, keep-alive', run: (seconds) => runLoad(nginx.plain, { TOKEN }, { duration: seconds, conns }) },
        { id: 'nginx-tls', label: 'nginx TLS, keep-alive', run: (seconds) => runLoad(nginx.secure, { TOKEN }, { duration: seconds, conns, scheme: 'https' }) },
      ]
    : []),
  ...(openresty
    ? [
        { id: 'or-plain', pgid: openresty.pgid, label: 'graygate on OpenResty plain, keep-alive', run: (seconds) => runLoad(openresty.port, { TOKEN }, { duration: seconds, conns }) },
        { id: 'or-tls', pgid: openresty.pgid, label: 'graygate on OpenResty TLS, keep-alive', run: (seconds) => runLoad(openresty.tlsPort, { TOKEN }, { duration: seconds, conns, scheme: 'https' }) },
        { id: 'or-handshakes', handshakes: true, pgid: openresty.pgid, label: 'graygate on OpenResty TLS, new connection per request', run: (seconds) => runLoad(openresty.tlsPort, { TOKEN, Connection: 'close' }, { duration: seconds, conns, scheme: 'https' }) },
      ]
    : []),
  { id: 'gg-handshakes', handshakes: true, pgid: gateway.pgid, label: 'graygate TLS, new connection per request', run: (seconds) => runLoad(ggTlsPort, { TOKEN, Connection: 'close' }, { duration: seconds, conns, scheme: 'https' }) },
  ...(nginx ? [{ id: 'nginx-handshakes', handshakes: true, pgid: nginx.pgid, label: 'nginx TLS, new connection per request', run: (seconds) => runLoad(nginx.secure, { TOKEN, Connection: 'close' }, { duration: seconds, conns, scheme: 'https' }) }] : []),
  ...(baseline ? [{ id: 'base-handshakes', handshakes: true, pgid: baseline.pgid, label: 'graygate TLS (--baseline build), new connection per request', run: (seconds) => runLoad(baseline.tlsPort, { TOKEN, Connection: 'close' }, { duration: seconds, conns, scheme: 'https' }) }] : []),
  { id: 'bare-handshakes', handshakes: true, pgid: bare.pgid, label: 'bare node:https (no proxying), new connection per request', run: (seconds) => runLoad(barePort, { TOKEN, Connection: 'close' }, { duration: seconds, conns, scheme: 'https' }) },
  // Resumption, which wrk does not do: the same node client with and without offering its ticket.
  { id: 'gg-resumed', handshakes: true, pgid: gateway.pgid, label: 'graygate TLS, new connection per request, session resumed (node client, 10 at a time)', run: (seconds) => reconnectLoad(ggTlsPort, { conns: 10, seconds, resume: true }) },
  { id: 'gg-full-node', handshakes: true, pgid: gateway.pgid, label: 'graygate TLS, new connection per request, full handshake (node client, 10 at a time)', run: (seconds) => reconnectLoad(ggTlsPort, { conns: 10, seconds, resume: false }) },
  { id: 'gg-h2', label: 'graygate HTTP/2, 10 conns × 10 streams (node client)', run: (seconds) => nodeLoad(ggTlsPort, 'h2', { sessions: 10, streams: 10, seconds }) },
  { id: 'gg-h1-node', label: 'graygate HTTP/1.1 over TLS, 50 conns (node client)', run: (seconds) => nodeLoad(ggTlsPort, 'h1', { sessions: 50, streams: 1, seconds }) },
];
for (const m of all) if (m.pgid === undefined) m.pgid = m.id.startsWith('nginx') ? nginx.pgid : gateway.pgid;
const measurements = onlyHandshakes ? all.filter((m) => m.handshakes) : all;

const results = [];
console.error(`load: ${loadTool()} -t1 -c${conns} and a node client; ${duration} s × ${reps}; graygate --workers ${workers}, nginx ${nginxWorkers} worker(s)`);
// Node servers keep getting cheaper per connection for tens of seconds (JIT, heap sizing): whole
// reps that are not counted come first, or the first counted rep measures the warm-up.
for (let rep = 0; rep < warmReps; rep++) for (const m of measurements) m.run(duration);
if (warmReps > 0) console.error(`  (${warmReps} warm-up rep(s) of every measurement done, not counted)`);
for (let rep = 0; rep < reps; rep++) {
  for (const m of measurements) {
    // Warm-up: the JIT, the pools and the token cache settle before the figure is taken.
    if (warmup > 0) m.run(warmup);
    const cpuBefore = groupCpuSeconds(m.pgid);
    const leaderBefore = processesCpuSeconds([m.pgid]);
    const r = m.run(duration);
    // The server's CPU per request: for the handshake rows, mostly the handshake itself.
    const cpuMs = ((groupCpuSeconds(m.pgid) - cpuBefore) * 1000) / r.requests;
    // With workers, the part of it the primary (node:cluster's accepting process) spent.
    const leaderMs = ((processesCpuSeconds([m.pgid]) - leaderBefore) * 1000) / r.requests;
    results.push({ rep, id: m.id, ...r, cpuMs, leaderMs });
    console.error(`  ${m.id.padEnd(17)} ${Math.round(r.rps)} req/s, ${cpuMs.toFixed(3)} CPU ms/request${r.resumed !== undefined ? `, ${(100 * r.resumed).toFixed(0)} % resumed` : ''}${workers > 1 ? ` (${leaderMs.toFixed(3)} of it in the primary/master)` : ''}${r.errors ? `, ${r.errors} errors` : ''}`);
  }
}

const rps = (id) => median(results.filter((r) => r.id === id).map((r) => r.rps));
const cpu = (id) => median(results.filter((r) => r.id === id).map((r) => r.cpuMs));
const fix = (n) => (Number.isFinite(n) ? n.toFixed(2) : 'n/a');
const lines = ['| measurement | req/s (median) | server CPU ms/request (median) | errors |', '|---|--:|--:|--:|'];
for (const m of measurements) lines.push(`| ${m.label} | ${Math.round(rps(m.id))} | ${cpu(m.id).toFixed(3)} | ${results.filter((r) => r.id === m.id).reduce((sum, r) => sum + (r.errors ?? 0), 0)} |`);
const ran = new Set(measurements.map((m) => m.id));
const ratio = (label, a, b, target) => ran.has(a) && ran.has(b) && lines.push(`| ${label} | ${fix(rps(a) / rps(b))} | ${target} |`);
lines.push('', '| ratio (of medians) | value | target |', '|---|--:|---|');
ratio('graygate TLS / graygate plain (keep-alive)', 'gg-tls', 'gg-plain', '≥ 0.85');
ratio('nginx TLS / nginx plain (keep-alive)', 'nginx-tls', 'nginx-plain', '(reference)');
ratio('graygate / nginx, new TLS connections per second', 'gg-handshakes', 'nginx-handshakes', '≥ 0.5');
ratio('graygate on OpenResty TLS / plain (keep-alive)', 'or-tls', 'or-plain', '≥ 0.85');
ratio('graygate on OpenResty / nginx, new TLS connections per second', 'or-handshakes', 'nginx-handshakes', '≥ 0.5');
ratio('bare node:https / nginx, new TLS connections per second', 'bare-handshakes', 'nginx-handshakes', '(the ceiling)');
ratio('graygate / bare node:https, new TLS connections per second', 'gg-handshakes', 'bare-handshakes', '(reference)');
ratio('graygate / --baseline build, new TLS connections per second', 'gg-handshakes', 'base-handshakes', '(the change)');
if (ran.has('gg-resumed') && ran.has('gg-full-node')) {
  lines.push(`| graygate CPU per resumed / per full handshake (node client) | ${fix(cpu('gg-resumed') / cpu('gg-full-node'))} | (resumption) |`);
  lines.push(`| share of connections resumed (node client offering its ticket) | ${fix(median(results.filter((r) => r.id === 'gg-resumed').map((r) => r.resumed)))} | 1 |`);
}
ratio('HTTP/2 100 streams / HTTP/1.1 50 conns (graygate)', 'gg-h2', 'gg-h1-node', '≥ 1');
// Per-rep ratios: how far one rep's figure can be trusted on this box.
if (ran.has('nginx-handshakes')) {
  const perRep = Array.from({ length: reps }, (_, rep) => results.find((r) => r.rep === rep && r.id === 'gg-handshakes').rps / results.find((r) => r.rep === rep && r.id === 'nginx-handshakes').rps);
  lines.push('', `graygate / nginx handshakes per rep: ${perRep.map(fix).join(', ')} (median ${fix(median(perRep))})`);
  if (ran.has('or-handshakes')) {
    const orPerRep = Array.from({ length: reps }, (_, rep) => results.find((r) => r.rep === rep && r.id === 'or-handshakes').rps / results.find((r) => r.rep === rep && r.id === 'nginx-handshakes').rps);
    lines.push(`graygate on OpenResty / nginx handshakes per rep: ${orPerRep.map(fix).join(', ')} (median ${fix(median(orPerRep))})`);
  }
}
console.log(lines.join('\n'));
console.log(`\ngraygate --workers ${workers}, nginx worker_processes ${nginxWorkers}, bare node ${workers} process(es). Medians of ${reps} interleaved run(s) of ${duration} s. The load tools, backends, Redis, nginx and graygate share this machine's cores: compare ratios of one run only.`);
process.exit(0);
