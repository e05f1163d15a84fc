#!/usr/bin/env node
// Question: what does the seed's identity scheme (TOKEN header → TOKEN_<token> in Redis → user
// id, range from the Grayscale_Range key) cost per request once the token cache is warm,
// compared with the same range rule on a trusted header? (the aim: within 10 %)
//
//   npm run build && node bench/token-vs-header.mjs
//   DURATION=5 REPS=3 CONNS=50 node bench/token-vs-header.mjs
//
// Same run, same box: one redis-server, nginx backends (node:http when nginx is missing), two
// gateway processes that differ only in identity and rule: "token" (tokenLookup with its
// defaults, uidRange.fromKey Grayscale_Range) and "header" (x-user-id, uidRange 1..5000). Both
// send the probe caller to the candidate. Load: wrk -t1 when installed, else autocannon; runs
// alternate between the two, each after a discarded warm-up, median of REPS. Everything listens
// on 127.0.0.1, every run is bounded by DURATION, every process started here is stopped.
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { cliPath, createRun, freePort, groupCpuSeconds, loadTool, median, runLoad as load, startBackends, startRedis as startRedisServer, waitPort } from './lib/harness.mjs';

const DURATION = Number(process.env.DURATION ?? 5);
const REPS = Number(process.env.REPS ?? 3);
const CONNS = Number(process.env.CONNS ?? 50);
const TOKEN = 'HGdsakGDKSFGkgcshalGF';
const run = createRun('graygate-token-bench');
const { dir, start, stopAll, workers: WORKERS } = run;
const runLoad = (port, headers) => load(port, headers, { duration: DURATION, conns: CONNS });

/** Redis with the seed's keys: the range 1..5000 and the token of user 1234. */
async function startRedis() {
  const redis = await startRedisServer(run);
  redis.cli('SET', 'Grayscale_Range', '{"idStart":1,"idEnd":5000}');
  redis.cli('SET', `TOKEN_${TOKEN}`, '1234');
  return redis;
}

async function startGraygate(name, redisUrl, backends, identity, rule) {
  const port = await freePort();
  const config = path.join(dir, `${name}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      listen: `127.0.0.1:${port}`,
      log: { level: 'warn' },
      store: { kind: 'redis', url: redisUrl, namespace: name },
      upstreams: { prod: { servers: [backends.stable] }, gray: { servers: [backends.candidate] } },
      identity: { sources: [identity] },
      services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', rules: [rule] } }],
    }),
  );
  const child = start(`graygate-${name}`, process.execPath, [cliPath, 'start', '--config', config]);
  await waitPort(port);
  return { port, pgid: child.pid };
}

async function main() {
  if (!existsSync(cliPath)) throw new Error('run `npm run build` first');
  const tool = loadTool();
  const [backends, redis] = await Promise.all([startBackends(run), startRedis()]);
  const modes = [
    {
      name: 'token (TOKEN → TOKEN_<token>, range from Grayscale_Range)',
      short: 'token',
      headers: { TOKEN },
      ...(await startGraygate('token', redis.url, backends, { tokenLookup: {} }, { name: 'gray-range', uidRange: { fromKey: 'Grayscale_Range' } })),
    },
    {
      name: 'header (x-user-id, range 1..5000 in the rule)',
      short: 'header',
      headers: { 'x-user-id': '1234' },
      ...(await startGraygate('header', redis.url, backends, { header: { name: 'x-user-id' } }, { name: 'gray-range', uidRange: { from: 1, to: 5000 } })),
    },
  ];
  for (const mode of modes) {
    const response = await request(`http://127.0.0.1:${mode.port}/`, { headers: mode.headers });
    const text = (await response.body.text()).trim();
    if (text !== 'gray') throw new Error(`${mode.short}: the probe caller got ${text}, not the candidate`);
  }
  const getsBefore = Number(/cmdstat_get:calls=(\d+)/.exec(redis.cli('INFO', 'commandstats'))?.[1] ?? 0);
  process.stderr.write(`load: ${tool} -c${CONNS} ${DURATION}s x ${REPS} reps, alternating; backends ${backends.kind}\n`);
  const results = new Map(modes.map((mode) => [mode.short, []]));
  for (let rep = 0; rep < REPS; rep++) {
    // Alternate the order each rep, so drift on a shared box does not favour one mode.
    for (const mode of rep % 2 === 0 ? modes : [...modes].reverse()) {
      runLoad(mode.port, mode.headers); // warm-up (and the token cache), discarded
      const cpuBefore = groupCpuSeconds(mode.pgid);
      const r = runLoad(mode.port, mode.headers);
      r.cpuUsPerReq = ((groupCpuSeconds(mode.pgid) - cpuBefore) * 1e6) / (r.rps * DURATION);
      results.get(mode.short).push(r);
      process.stderr.write(`  ${mode.short}: ${Math.round(r.rps)} req/s p99 ${r.p99.toFixed(2)} ms errors ${r.errors}\n`);
    }
  }
  const getsAfter = Number(/cmdstat_get:calls=(\d+)/.exec(redis.cli('INFO', 'commandstats'))?.[1] ?? 0);
  const summary = (short) => {
    const runs = results.get(short);
    return {
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      cpu: median(runs.map((r) => r.cpuUsPerReq)),
      errors: runs.reduce((sum, r) => sum + r.errors, 0),
      requests: runs.reduce((sum, r) => sum + r.rps * DURATION, 0),
    };
  };
  const header = summary('header');
  const lines = ['| identity + rule | req/s | × header | p50 ms | p99 ms | CPU µs/req | errors |', '|---|--:|--:|--:|--:|--:|--:|'];
  for (const mode of modes) {
    const s = summary(mode.short);
    lines.push(
      `| ${mode.name} | ${Math.round(s.rps)} | ${(s.rps / header.rps).toFixed(3)} | ${s.p50.toFixed(2)} | ${s.p99.toFixed(2)} | ${Number.isFinite(s.cpu) ? s.cpu.toFixed(0) : '–'} | ${s.errors} |`,
    );
  }
  const token = summary('token');
  process.stdout.write(
    `\n${lines.join('\n')}\n\ntoken/header throughput ratio: ${(token.rps / header.rps).toFixed(3)} (target ≥ 0.90; on a shared box ` +
      `runs swing by tens of percent: see bench/token-vs-header-eval.ts for the per-request cost alone); ` +
      `Redis GETs during all runs (polls of both gateways included): ${getsAfter - getsBefore}, for ~${Math.round(token.requests * 2)} token requests (measured + warm-up; cache TTL 5 s)\n` +
      `(${tool} -t1 -c${CONNS}, ${DURATION}s runs, median of ${REPS}, alternating; ${WORKERS} worker(s) per gateway; ${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')})\n`,
  );
  stopAll();
}

main().catch((error) => {
  process.stderr.write(`${error.stack ?? error}\n`);
  stopAll();
  process.exit(1);
});
