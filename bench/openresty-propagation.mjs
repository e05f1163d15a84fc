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
// workers) on the redis store. A background load (LOAD_CONNS keep-alive clients per gateway, in a
// worker thread) runs the whole time and counts every failed request. Then CHANGES times: write
// the next version with the store's compare-and-set (the admin path's call), flipping a uid range
// so the probe's answer flips, and wait until every nginx holds it and every worker of each has
// swapped to it: each nginx's control socket status names the version its shared dict holds and,
// per worker, the version that worker swapped to and when (nginx's clock). "The write" is when
// Redis applied it: a MONITOR client reads Redis's own timestamp of the write's PUBLISH (the box's
// wall clock, as nginx's), which a loaded box cannot delay the way it delays a client's view of
// its acknowledgement. Each gateway is also probed in rounds of PROBE_CONNS requests on new
// connections until a whole round answers the new way (that its answers are right; its resolution
// is one round). graygate's own timings (debug log `openresty-delivered`) give the breakdown.
// nginx's worker pids are compared before and after: a reload would replace them.
// Everything listens on 127.0.0.1; each change is bounded by CHANGE_TIMEOUT_MS and the run by
// MAX_SECONDS; every process started here is stopped at the end. A bench, not a test: it prints
// figures and asserts nothing about speed.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
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
// The background load runs in a worker thread (this same file): its requests then never delay the
// main thread's timestamps (the write, its acknowledgement, the store's notification).
const run = isMainThread ? createRun('graygate-openresty-propagation') : undefined;

function routing(backends, to) {
  return {
    upstreams: { prod: { servers: [backends.stable] }, gray: { servers: [backends.candidate] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ name: 'probe', uidRange: { from: 1, to } }] } }],
  };
}

/** Per gateway, per version: graygate's delivery timings (its debug log line `openresty-delivered`). */
const traces = [];

async function startGateway(i, redisUrl, backends) {
  const port = await freePort();
  const config = path.join(run.dir, `gateway-${i}.json`);
  writeFileSync(
    config,
    JSON.stringify({ listen: `127.0.0.1:${port}`, log: { level: 'debug', access: { enabled: false } }, store: { kind: 'redis', url: redisUrl, namespace: 'bench', pollMs: 2_000 }, ...routing(backends, 5000) }),
  );
  const prefix = path.join(run.dir, `nginx-${i}`);
  traces[i] = new Map();
  const onLine = (line) => {
    if (!line.includes('"openresty-delivered"')) return;
    try {
      const entry = JSON.parse(line);
      traces[i].set(entry.version, entry);
    } catch {}
  };
  const child = run.start(`openresty-gateway-${i}`, process.execPath, [cliPath, 'start', '--config', config, '--data-plane', 'openresty', '--workers', String(NGINX_WORKERS), '--openresty-dir', prefix], onLine);
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

/**
 * When (wall clock, ms; nginx's clock) nginx's shared dict accepted `version` (from then on every
 * worker routes by it from its next request), from where (`push` or `redis`), and when each
 * worker did swap to it: every worker is asked (through the dict, where each one records the
 * version it swapped to), not whichever worker answers a probe. A worker swaps on its next
 * request or by its own timer (every 5 ms), whichever comes first. undefined when not all within
 * the deadline.
 */
async function holds(socketPath, version, deadline) {
  for (;;) {
    const status = await nginxStatus(socketPath).catch(() => ({}));
    // A graygate before per-worker status (BASE comparisons): the dict's time stands for every worker.
    const workers = status.workers ?? [{ version: status.version, at: status.accepted_at }];
    if (status.version >= version && (status.workers === undefined || workers.length === NGINX_WORKERS) && workers.every((w) => w.version >= version)) {
      return { acceptedAt: status.accepted_at, source: status.source, workersAt: workers.map((w) => w.at) };
    }
    if (performance.now() > deadline) return undefined;
    await pause(2);
  }
}

/**
 * When Redis executed each write, on Redis's own clock (the box's wall clock, as nginx's): a
 * MONITOR client sees the PUBLISH the store's write script makes (the moment the write is
 * applied) with the server's timestamp, and the first PUBLISH of the fleet's OpenResty routing
 * (the first graygate that wrote the envelope). Nothing this bench or graygate does later can
 * delay those timestamps, unlike a client's own clock on a loaded box.
 */
async function monitorStore(redisUrl, storeChannel, openrestyChannel) {
  // A plain socket: MONITOR's output is one status line per command, `+<seconds.micros> [db
  // client] "PUBLISH" "<channel>" "<message>"`, with the message's quotes escaped.
  const { hostname, port } = new URL(redisUrl);
  const socket = net.connect(Number(port), hostname);
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write('MONITOR\r\n');
  const written = new Map();
  const published = new Map();
  const publish = /^\+(\d+\.\d+) \[[^\]]*\] "PUBLISH" "([^"]*)" "(.*)"$/i;
  let pending = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    const lines = (pending + chunk).split('\r\n');
    pending = lines.pop();
    for (const line of lines) {
      const match = publish.exec(line);
      if (!match) continue;
      const at = Number(match[1]) * 1000;
      if (match[2] === storeChannel) written.set(Number(match[3]), at);
      else if (match[2] === openrestyChannel) {
        const version = Number(/^\d+$/.test(match[3]) ? match[3] : /\\"version\\":(\d+)/.exec(match[3])?.[1]);
        if (!published.has(version)) published.set(version, at);
      }
    }
  });
  socket.on('error', () => {});
  return { written, published, close: () => socket.destroy() };
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

/** The background load, in this thread: keep-alive clients sending requests back to back; counts failures. */
function runLoad(urls, conns) {
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: conns * urls.length });
  const counts = { sent: 0, failed: 0, failures: [] };
  let running = true;
  const loops = urls.flatMap((url) =>
    Array.from({ length: conns }, async () => {
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
  return async () => {
    running = false;
    await Promise.all(loops);
    await agent.close();
    return counts;
  };
}

/** Starts the background load in a worker thread; `stop()` resolves with its counts. */
function startLoad(urls) {
  const worker = new Worker(new URL(import.meta.url), { workerData: { urls, conns: LOAD_CONNS } });
  const counts = new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    counts: { sent: 0, failed: 0, failures: [] },
    async stop() {
      worker.postMessage('stop');
      Object.assign(this.counts, await counts);
      await worker.terminate();
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
  const storeChannel = (await import(path.join(root, 'dist/store/redis/names.js'))).redisStoreKeys('bench').channel;
  const monitor = await monitorStore(redis.url, storeChannel, `${storeChannel}:openresty`);
  const runDeadline = performance.now() + MAX_SECONDS * 1_000;
  const propagation = [];
  const perGateway = gateways.map(() => []);
  // Each figure, per change (ms); the per-gateway ones once per gateway and change.
  const f = {
    ack: [], firstPublished: [], setSnapshot: [], normalize: [], toSend: [], pushed: [], published: [], accepted: [], acceptedPush: [], acceptedRedis: [], fromPublished: [], swap: [],
    allAccepted: [], allAcceptedFromAck: [], allWorkers: [], allWorkersFromAck: [], allAcceptedFromRedis: [], allWorkersFromRedis: [],
  };
  /** Changes whose graygate-side timings and Redis times are read at the end (a log line may come after the change is seen). */
  const delivered = [];
  const redisTimed = [];
  let missed = 0;
  for (let i = 0; i < CHANGES && performance.now() < runDeadline; i++) {
    const to = version % 2 === 1 ? 100 : 5000; // odd versions → 1..100 (1234 to prod), even → 1..5000 (gray)
    const expected = to === 100 ? 'prod' : 'gray';
    const document = parseRoutingDocument(routing(backends, to), 'bench');
    const startedAt = performance.now();
    const wallAt = Date.now();
    // Nothing else runs on this thread while the write is under way (the probes and the status
    // polls start once it is acknowledged), so its acknowledgement is not delayed by the bench.
    version = (await store.write(document, { expectedVersion: version, actor: 'bench', reason: `change ${i + 1}` })).version;
    const ackAt = Date.now();
    const seen = gateways.map(({ url }) => whenAnswers(url, expected, startedAt + CHANGE_TIMEOUT_MS));
    f.ack.push(ackAt - wallAt);
    const held = await Promise.all(gateways.map(({ socket }) => holds(socket, version, startedAt + CHANGE_TIMEOUT_MS)));
    const times = await Promise.all(seen);
    if (times.some((t) => t === undefined) || held.some((h) => h === undefined)) {
      missed++;
    } else {
      times.forEach((t, g) => perGateway[g].push(t - startedAt));
      propagation.push(Math.max(...times) - startedAt);
      const lastAccepted = Math.max(...held.map((h) => h.acceptedAt));
      const lastWorker = Math.max(...held.flatMap((h) => h.workersAt));
      f.allAccepted.push(lastAccepted - wallAt);
      f.allAcceptedFromAck.push(lastAccepted - ackAt);
      f.allWorkers.push(lastWorker - wallAt);
      f.allWorkersFromAck.push(lastWorker - ackAt);
      held.forEach((h, g) => {
        for (const at of h.workersAt) f.swap.push(at - h.acceptedAt);
        delivered.push({ g, version, acceptedAt: h.acceptedAt, source: h.source });
      });
      redisTimed.push({ version, lastAccepted, lastWorker });
    }
    await pause(GAP_MS);
  }
  await load.stop();
  await pause(200);
  monitor.close();
  for (const { version: v, lastAccepted, lastWorker } of redisTimed) {
    const writtenAt = monitor.written.get(v);
    if (writtenAt === undefined) continue;
    f.allAcceptedFromRedis.push(lastAccepted - writtenAt);
    f.allWorkersFromRedis.push(lastWorker - writtenAt);
    const publishedAt = monitor.published.get(v);
    if (publishedAt !== undefined) f.firstPublished.push(publishedAt - writtenAt);
  }
  for (const { g, version: v, acceptedAt, source } of delivered) {
    const writtenAt = monitor.written.get(v);
    if (writtenAt !== undefined) {
      f.accepted.push(acceptedAt - writtenAt);
      (source === 'push' ? f.acceptedPush : f.acceptedRedis).push(acceptedAt - writtenAt);
    }
    const publishedAt = monitor.published.get(v);
    if (publishedAt !== undefined && source === 'redis') f.fromPublished.push(acceptedAt - publishedAt);
    const trace = traces[g].get(v);
    if (trace === undefined) continue;
    if (writtenAt !== undefined) f.setSnapshot.push(trace.setAt - writtenAt);
    f.normalize.push(trace.normalizeMs);
    f.toSend.push(trace.sentAt - trace.stamp);
    f.pushed.push(trace.pushedAt - trace.sentAt);
    if (trace.publishedAt !== undefined) f.published.push(trace.publishedAt - trace.sentAt);
  }
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
    '| measured (ms) | n | p50 | p90 | p99 | max |',
    '|---|--:|--:|--:|--:|--:|',
    row(`**write (Redis applied it) → all ${GATEWAYS} nginx hold it** (shared dict: every worker routes by it from its next request)`, f.allAcceptedFromRedis),
    row(`**write (Redis applied it) → every worker of all ${GATEWAYS} gateways has swapped to it** (each worker asked)`, f.allWorkersFromRedis),
    row(`write acknowledged to this bench → all ${GATEWAYS} nginx hold it`, f.allAcceptedFromAck),
    row(`write sent by this bench → all ${GATEWAYS} nginx hold it`, f.allAccepted),
    row(`write sent → every nginx worker of all ${GATEWAYS} gateways answers by it (probed on new connections)`, propagation),
    ...perGateway.map((values, g) => row(`write sent → gateway ${g + 1} (probed)`, values)),
    row(`one probing round (${PROBE_CONNS} new connections): the probed figures' resolution`, roundMs),
    '| *breakdown, per change (per gateway where it applies); "write" = Redis applied it (its clock)* | | | | | |',
    row('write sent → acknowledged, as this bench sees it', f.ack),
    row('write → graygate has the new snapshot (hear, reread, validate, compile)', f.setSnapshot),
    row('normalize', f.normalize),
    row('normalized → envelope sent', f.toSend),
    row('sent → nginx acknowledged the push (control socket)', f.pushed),
    row('sent → written to Redis and published', f.published),
    row('write → the first graygate published the envelope in Redis', f.firstPublished),
    row('write → this nginx\'s dict holds it', f.accepted),
    row('… of which first by the push', f.acceptedPush),
    row('… of which first from Redis', f.acceptedRedis),
    row('published in Redis → an nginx that took it from Redis holds it (subscriber)', f.fromPublished),
    row('dict holds it → a worker has swapped (its next request or its timer; decode, compile)', f.swap),
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

if (isMainThread) {
  main().catch((error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    run.stopAll();
    process.exit(1);
  });
} else {
  const stop = runLoad(workerData.urls, workerData.conns);
  parentPort.once('message', async () => parentPort.postMessage(await stop()));
}
