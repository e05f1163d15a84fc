#!/usr/bin/env node
// Question: how long from a routing change written to Redis until every gateway of a fleet
// routes by it? (the aim: p99 under 50 ms, with pub/sub)
//
//   npm run build && node bench/propagation.mjs
//   CHANGES=200 GATEWAYS=3 POLL_MS=2000 node bench/propagation.mjs
//
// Starts a private redis-server, two backends (nginx when installed, else node:http) answering
// "prod" and "gray", and GATEWAYS real gateway processes on the redis store. Then CHANGES times:
// write the next version with the store's compare-and-set (the same call the admin path makes),
// flipping a uid range so that the probe request's answer flips; poll every gateway with that
// request (keep-alive, back to back) until it answers the new way. Propagation = time from just
// before the write until the last gateway answered the new way. Everything listens on 127.0.0.1;
// each change is bounded by CHANGE_TIMEOUT_MS and the whole run by MAX_SECONDS; every process
// started here is stopped at the end.
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { cliPath, createRun, freePort, root, startBackends, startRedis as startRedisServer, waitPort } from './lib/harness.mjs';

const CHANGES = Number(process.env.CHANGES ?? 120);
const GATEWAYS = Number(process.env.GATEWAYS ?? 3);
const POLL_MS = Number(process.env.POLL_MS ?? 2_000);
const CHANGE_TIMEOUT_MS = Number(process.env.CHANGE_TIMEOUT_MS ?? 3_000);
const MAX_SECONDS = Number(process.env.MAX_SECONDS ?? 120);
const PROBE_GAP_MS = Number(process.env.PROBE_GAP_MS ?? 1);
const run = createRun('graygate-propagation');
const { dir, start, stopAll, workers: WORKERS } = run;

async function startRedis() {
  return (await startRedisServer(run)).url;
}

function routing(backends, to) {
  return {
    upstreams: { prod: { servers: [backends.stable] }, gray: { servers: [backends.candidate] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [{ name: 'probe', uidRange: { from: 1, to } }] } }],
  };
}

/** Per gateway: version → wall-clock ms at which it logged "applied routing version N". */
const appliedAt = [];

async function startGateway(i, redisUrl, backends) {
  const port = await freePort();
  const config = path.join(dir, `gateway-${i}.json`);
  writeFileSync(
    config,
    JSON.stringify({ listen: `127.0.0.1:${port}`, log: { level: 'info' }, store: { kind: 'redis', url: redisUrl, namespace: 'bench', pollMs: POLL_MS }, ...routing(backends, 5000) }),
  );
  const applied = new Map();
  appliedAt[i] = applied;
  start(`gateway-${i}`, process.execPath, [cliPath, 'start', '--config', config], (line) => {
    if (!line.includes('applied routing version')) return;
    try {
      const entry = JSON.parse(line);
      applied.set(entry.version, Date.parse(entry.time));
    } catch {}
  });
  await waitPort(port);
  return `http://127.0.0.1:${port}/`;
}

const agent = new Agent({ keepAliveTimeout: 30_000, connections: 2 });

async function answer(url) {
  const response = await request(url, { dispatcher: agent, headers: { 'x-user-id': '1234' } });
  return (await response.body.text()).trim();
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `url` until it answers `expected`; resolves with the time it did, or undefined at
 * `deadline`. PROBE_GAP_MS between probes (default 1) keeps the prober from taking the CPU the
 * gateways need on a small box; it bounds the resolution of each figure.
 */
async function whenAnswers(url, expected, deadline) {
  for (;;) {
    const text = await answer(url);
    const now = performance.now();
    if (text === expected) return now;
    if (now > deadline) return undefined;
    if (PROBE_GAP_MS > 0) await pause(PROBE_GAP_MS);
  }
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

async function main() {
  if (!existsSync(cliPath)) throw new Error('run `npm run build` first');
  const { createRedisStore } = await import(path.join(root, 'dist/store/redis/redis-store.js'));
  const { parseRoutingDocument } = await import(path.join(root, 'dist/config/load.js'));
  const { RedisStoreSettings } = await import(path.join(root, 'dist/config/schema.js'));

  const [backends, redisUrl] = await Promise.all([startBackends(run), startRedis()]);
  // The first gateway seeds version 1 from its file; the others then find it in Redis.
  const gateways = [await startGateway(0, redisUrl, backends)];
  for (let i = 1; i < GATEWAYS; i++) gateways.push(await startGateway(i, redisUrl, backends));
  for (const url of gateways) {
    if ((await answer(url)) !== 'gray') throw new Error(`${url} does not route by version 1`);
  }
  const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: redisUrl, namespace: 'bench', pollMs: 60_000 }), { validate: parseRoutingDocument });
  let version = (await store.current()).version;
  process.stderr.write(`${GATEWAYS} gateways, redis store (pollMs ${POLL_MS}), backends ${backends.kind}; ${CHANGES} changes\n`);

  const runDeadline = performance.now() + MAX_SECONDS * 1_000;
  const propagation = [];
  const writeMs = [];
  const writeStartedAt = new Map(); // version → wall-clock ms just before its write
  const perGateway = gateways.map(() => []);
  let missed = 0;
  for (let i = 0; i < CHANGES && performance.now() < runDeadline; i++) {
    const to = version % 2 === 1 ? 100 : 5000; // odd versions → 1..100 (1234 to prod), even → 1..5000 (gray)
    const expected = to === 100 ? 'prod' : 'gray';
    const document = parseRoutingDocument(routing(backends, to), 'bench');
    const startedAt = performance.now();
    writeStartedAt.set(version + 1, Date.now());
    const written = store.write(document, { expectedVersion: version, actor: 'bench', reason: `change ${i + 1}` });
    // Polling starts with the write: a gateway that answers the new way before the write's own
    // reply is back is counted at the time it did.
    const seen = gateways.map((url) => whenAnswers(url, expected, startedAt + CHANGE_TIMEOUT_MS));
    version = (await written).version;
    writeMs.push(performance.now() - startedAt);
    const times = await Promise.all(seen);
    if (times.some((t) => t === undefined)) {
      missed++;
      continue;
    }
    times.forEach((t, g) => perGateway[g].push(t - startedAt));
    propagation.push(Math.max(...times) - startedAt);
  }
  await store.close();
  await agent.close();
  // The gateways' own clock (ms resolution): write → "applied" logged, without the prober.
  const appliedMs = [];
  for (const [v, at] of writeStartedAt) {
    const times = appliedAt.map((applied) => applied.get(v));
    if (times.every((t) => t !== undefined)) appliedMs.push(Math.max(...times) - at);
  }

  const row = (name, values) => {
    const sorted = [...values].sort((a, b) => a - b);
    if (sorted.length === 0) return `| ${name} | 0 | – | – | – | – |`;
    return `| ${name} | ${sorted.length} | ${percentile(sorted, 50).toFixed(2)} | ${percentile(sorted, 90).toFixed(2)} | ${percentile(sorted, 99).toFixed(2)} | ${sorted[sorted.length - 1].toFixed(2)} |`;
  };
  const lines = [
    '| measured (ms) | changes | p50 | p90 | p99 | max |',
    '|---|--:|--:|--:|--:|--:|',
    row(`write → all ${GATEWAYS} gateways route by it`, propagation),
    ...perGateway.map((values, g) => row(`write → gateway ${g + 1}`, values)),
    row(`write → all ${GATEWAYS} logged "applied" (their clock, 1 ms)`, appliedMs),
    row('compare-and-set write (reply)', writeMs),
  ];
  process.stdout.write(
    `\n${lines.join('\n')}\n\nmissed (not seen within ${CHANGE_TIMEOUT_MS} ms on every gateway): ${missed}; ` +
      `pub/sub with a ${POLL_MS} ms poll as backstop; ${WORKERS} worker(s) per gateway; probes every ${PROBE_GAP_MS} ms; ` +
      `${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} (the prober shares the box)\n`,
  );
  stopAll();
  if (missed > 0) process.exitCode = 1;
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  stopAll();
  process.exit(1);
});
