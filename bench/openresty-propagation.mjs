#!/usr/bin/env node
// Question: how long from a routing change written to Redis until every nginx worker of a fleet
// of OpenResty gateways routes by it, under load, and does any request fail or nginx reload?
// (the aim: p99 ≤ 50 ms from the write, 0 failed requests, no reload)
//
//   npm run build && node bench/openresty-propagation.mjs
//   CHANGES=200 GATEWAYS=3 NGINX_WORKERS=2 node bench/openresty-propagation.mjs
//
// Starts a private redis-server, two backends answering "prod" and "gray", and GATEWAYS
// `graygate start --data-plane openresty` processes (each runs its own nginx with NGINX_WORKERS
// workers) on the redis store. A background load (LOAD_CONNS keep-alive clients per gateway)
// runs the whole time and counts every failed request. Then CHANGES times: write the next
// version with the store's compare-and-set (the admin path's call), flipping a uid range so the
// probe's answer flips, and probe each gateway in rounds of PROBE_CONNS requests on new
// connections (the kernel spreads new connections over nginx's workers) until a whole round
// answers the new way. Propagation = time from just before the write until the last gateway's
// round did; its resolution is one round, so the time at which each nginx's shared dict accepted
// the version (nginx's clock, read from the control socket) is reported too: from then on every
// worker serves it, from its next request. nginx's worker pids are compared before and after: a reload would replace them.
// Everything listens on 127.0.0.1; each change is bounded by CHANGE_TIMEOUT_MS and the run by
// MAX_SECONDS; every process started here is stopped at the end. A bench, not a test: it prints
// figures and asserts nothing about speed.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { cliPath, createRun, freePort, groupPids, root, startBackends, startRedis, waitPort } from './lib/harness.mjs';

const CHANGES = Number(process.env.CHANGES ?? 100);
const GATEWAYS = Number(process.env.GATEWAYS ?? 3);
const NGINX_WORKERS = Number(process.env.NGINX_WORKERS ?? 2);
const PROBE_CONNS = Number(process.env.PROBE_CONNS ?? 3 * NGINX_WORKERS);
const LOAD_CONNS = Number(process.env.LOAD_CONNS ?? 2);
const CHANGE_TIMEOUT_MS = Number(process.env.CHANGE_TIMEOUT_MS ?? 3_000);
const MAX_SECONDS = Number(process.env.MAX_SECONDS ?? 120);
const GAP_MS = Number(process.env.GAP_MS ?? 20);
const run = createRun('graygate-openresty-propagation');

function routing(backends, to) {
  return {
    upstreams: { prod: { servers: [backends.stable] }, gray: { servers: [backends.candidate] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ name: 'probe', uidRange: { from: 1, to } }] } }],
  };
}

async function startGateway(i, redisUrl, backends) {
  const port = await freePort();
  const config = path.join(run.dir, `gateway-${i}.json`);
  writeFileSync(
    config,
    JSON.stringify({ listen: `127.0.0.1:${port}`, log: { level: 'warn', access: { enabled: false } }, store: { kind: 'redis', url: redisUrl, namespace: 'bench', pollMs: 2_000 }, ...routing(backends, 5000) }),
  );
  const prefix = path.join(run.dir, `nginx-${i}`);
  const child = run.start(`openresty-gateway-${i}`, process.execPath, [cliPath, 'start', '--config', config, '--data-plane', 'openresty', '--workers', String(NGINX_WORKERS), '--openresty-dir', prefix]);
  await waitPort(port, 60_000);
  return { url: `http://127.0.0.1:${port}/`, pgid: child.pid, socket: path.join(prefix, 'graygate-control.sock') };
}

/** What nginx's shared dict holds (the control socket's status): the version and when it was accepted (nginx's clock, ms). */
function nginxStatus(socketPath) {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/graygate/status', timeout: 2_000 }, (res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve(JSON.parse(text)));
    });
    req.on('error', reject);
    req.end();
  });
}

/** When (wall clock, ms) nginx accepted `version`: from then on every worker serves it on its next request. */
async function acceptedAt(socketPath, version, deadline) {
  for (;;) {
    const status = await nginxStatus(socketPath).catch(() => ({}));
    if (status.version >= version) return status.accepted_at;
    if (performance.now() > deadline) return undefined;
    await pause(2);
  }
}

/** nginx's worker pids in a gateway's process group. */
function nginxWorkers(pgid) {
  return groupPids(pgid)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('worker process');
      } catch {
        return false;
      }
    })
    .sort((a, b) => a - b);
}

const fresh = new Agent({ pipelining: 0 });
async function answerOnNewConnection(url) {
  const response = await request(url, { dispatcher: fresh, headers: { 'x-user-id': '1234', connection: 'close' } });
  return (await response.body.text()).trim();
}

/** One round: PROBE_CONNS requests, each on a new connection; true when all answer `expected`. */
async function roundAnswers(url, expected) {
  const answers = await Promise.all(Array.from({ length: PROBE_CONNS }, () => answerOnNewConnection(url).catch(() => 'error')));
  return answers.every((text) => text === expected);
}

/** How long one probing round took (ms): the resolution of every figure. */
const roundMs = [];

async function whenAnswers(url, expected, deadline) {
  for (;;) {
    const began = performance.now();
    const ok = await roundAnswers(url, expected);
    const now = performance.now();
    roundMs.push(now - began);
    if (ok) return now;
    if (now > deadline) return undefined;
  }
}

/** The background load: keep-alive clients sending requests back to back; counts failures. */
function startLoad(urls) {
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: LOAD_CONNS * urls.length });
  const counts = { sent: 0, failed: 0, failures: [] };
  let running = true;
  const loops = urls.flatMap((url) =>
    Array.from({ length: LOAD_CONNS }, async () => {
      while (running) {
        counts.sent++;
        try {
          const response = await request(url, { dispatcher: agent, headers: { 'x-user-id': String(counts.sent % 9000) } });
          const text = (await response.body.text()).trim();
          if (response.statusCode !== 200 || (text !== 'prod' && text !== 'gray')) throw new Error(`status ${response.statusCode}: ${text.slice(0, 80)}`);
        } catch (error) {
          counts.failed++;
          if (counts.failures.length < 5) counts.failures.push(`${url}: ${error.message}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }),
  );
  return {
    counts,
    async stop() {
      running = false;
      await Promise.all(loops);
      await agent.close();
    },
  };
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  if (!existsSync(cliPath)) throw new Error('run `npm run build` first');
  const { createRedisStore } = await import(path.join(root, 'dist/store/redis/redis-store.js'));
  const { parseRoutingDocument } = await import(path.join(root, 'dist/config/load.js'));
  const { RedisStoreSettings } = await import(path.join(root, 'dist/config/schema.js'));

  const [backends, redis] = await Promise.all([startBackends(run), startRedis(run)]);
  const gateways = [await startGateway(0, redis.url, backends)];
  for (let i = 1; i < GATEWAYS; i++) gateways.push(await startGateway(i, redis.url, backends));
  for (const { url } of gateways) {
    const deadline = performance.now() + 15_000;
    if ((await whenAnswers(url, 'gray', deadline)) === undefined) throw new Error(`${url} does not route by version 1`);
  }
  const workersBefore = gateways.map(({ pgid }) => nginxWorkers(pgid));
  const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redis.url, namespace: 'bench', pollMs: 60_000 }), { validate: parseRoutingDocument });
  let version = (await store.current()).version;
  process.stderr.write(`${GATEWAYS} OpenResty gateways × ${NGINX_WORKERS} nginx workers, redis store; ${CHANGES} changes under load\n`);

  const load = startLoad(gateways.map(({ url }) => url));
  const runDeadline = performance.now() + MAX_SECONDS * 1_000;
  const propagation = [];
  const accepted = [];
  const perGateway = gateways.map(() => []);
  let missed = 0;
  for (let i = 0; i < CHANGES && performance.now() < runDeadline; i++) {
    const to = version % 2 === 1 ? 100 : 5000; // odd versions → 1..100 (1234 to prod), even → 1..5000 (gray)
    const expected = to === 100 ? 'prod' : 'gray';
    const document = parseRoutingDocument(routing(backends, to), 'bench');
    const startedAt = performance.now();
    const wallAt = Date.now();
    const written = store.write(document, { expectedVersion: version, actor: 'bench', reason: `change ${i + 1}` });
    const seen = gateways.map(({ url }) => whenAnswers(url, expected, startedAt + CHANGE_TIMEOUT_MS));
    version = (await written).version;
    const acceptedTimes = await Promise.all(gateways.map(({ socket }) => acceptedAt(socket, version, startedAt + CHANGE_TIMEOUT_MS)));
    if (acceptedTimes.every((t) => t !== undefined)) accepted.push(Math.max(...acceptedTimes) - wallAt);
    const times = await Promise.all(seen);
    if (times.some((t) => t === undefined)) missed++;
    else {
      times.forEach((t, g) => perGateway[g].push(t - startedAt));
      propagation.push(Math.max(...times) - startedAt);
    }
    await pause(GAP_MS);
  }
  await load.stop();
  await store.close();
  await fresh.close();
  const workersAfter = gateways.map(({ pgid }) => nginxWorkers(pgid));
  const reloaded = workersBefore.filter((before, g) => before.join(',') !== workersAfter[g].join(',')).length;

  const row = (name, values) => {
    const sorted = [...values].sort((a, b) => a - b);
    if (sorted.length === 0) return `| ${name} | 0 | – | – | – | – |`;
    return `| ${name} | ${sorted.length} | ${percentile(sorted, 50).toFixed(2)} | ${percentile(sorted, 90).toFixed(2)} | ${percentile(sorted, 99).toFixed(2)} | ${sorted[sorted.length - 1].toFixed(2)} |`;
  };
  const lines = [
    '| measured (ms) | changes | p50 | p90 | p99 | max |',
    '|---|--:|--:|--:|--:|--:|',
    row(`write → all ${GATEWAYS} nginx hold it (shared dict; every worker serves it from its next request; nginx's clock, 1 ms)`, accepted),
    row(`write → every nginx worker of all ${GATEWAYS} gateways answers by it (probed)`, propagation),
    ...perGateway.map((values, g) => row(`write → gateway ${g + 1}`, values)),
    row(`one probing round (${PROBE_CONNS} new connections): the figures' resolution`, roundMs),
  ];
  process.stdout.write(
    `\n${lines.join('\n')}\n\n` +
      `background load: ${load.counts.sent} requests, ${load.counts.failed} failed${load.counts.failures.length ? ` (${load.counts.failures.join('; ')})` : ''}; ` +
      `nginx reloads (worker pids replaced): ${reloaded} of ${GATEWAYS}; missed (not seen within ${CHANGE_TIMEOUT_MS} ms): ${missed}; ` +
      `a round is ${PROBE_CONNS} requests on new connections; ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} ` +
      '(the prober and the load share the box)\n',
  );
  run.stopAll();
  if (missed > 0 || load.counts.failed > 0 || reloaded > 0) process.exitCode = 1;
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  run.stopAll();
  process.exit(1);
});
