#!/usr/bin/env node
// Question: does a gateway's memory settle under routing churn, with one process and with
// --workers? (a write through the admin API every 100 ms, keep-alive load beside it)
//
//   npm run build && node bench/soak.mjs
//   SOAK_SECONDS=180 WORKERS_LIST=1,2 CHURN_MS=100 CONNS=8 node bench/soak.mjs
//
// For each worker count: starts a private redis-server, two backends and one gateway on the
// Redis store with its admin API; then for SOAK_SECONDS keeps CONNS keep-alive clients busy (each
// request alternates a user inside and outside the candidate's range) and writes a new routing
// document every CHURN_MS through PUT /v1/config (every fifth one invalid, refused with 400).
// Every SAMPLE_MS it reads the RSS of each process of the gateway (primary and workers) from
// /proc. It reports RSS over time per process and the slope (least squares, MB/min) over the
// whole run and over its second half (after warm-up). Everything listens on 127.0.0.1; the run
// is bounded by SOAK_SECONDS per worker count; every process started here is stopped at the end.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { cliPath, createRun, freePort, gitCommit, groupPids, processMemory, startBackends, startRedis, waitPort } from './lib/harness.mjs';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 120);
const WORKERS_LIST = (process.env.WORKERS_LIST ?? '1,2').split(',').map(Number);
const CHURN_MS = Number(process.env.CHURN_MS ?? 100);
const CONNS = Number(process.env.CONNS ?? 8);
const SAMPLE_MS = Number(process.env.SAMPLE_MS ?? 2_000);
if (SECONDS > 600) throw new Error('SOAK_SECONDS: at most 600 (the soak is bounded)');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function routing(backends, to) {
  return {
    upstreams: { prod: { servers: [backends.stable] }, gray: { servers: [backends.candidate] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'prod', release: { candidate: 'gray', state: 'canary', rules: [{ name: 'range', uidRange: { from: 1, to } }] } }],
  };
}

/** Least-squares slope of `points` ({t seconds, kb}) in MB per minute. */
function slopeMbPerMin(points) {
  const n = points.length;
  if (n < 2) return NaN;
  const mt = points.reduce((s, p) => s + p.t, 0) / n;
  const mk = points.reduce((s, p) => s + p.kb, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.kb - mk);
    den += (p.t - mt) ** 2;
  }
  return den === 0 ? NaN : ((num / den) * 60) / 1024;
}

async function soak(workers) {
  const run = createRun(`graygate-soak-${workers}`);
  try {
    const backends = await startBackends(run);
    const redis = await startRedis(run);
    const port = await freePort();
    const adminPort = await freePort();
    const config = path.join(run.dir, 'graygate.json');
    writeFileSync(
      config,
      JSON.stringify({
        listen: `127.0.0.1:${port}`,
        log: { level: 'warn' },
        admin: { listen: `127.0.0.1:${adminPort}` },
        store: { kind: 'redis', url: redis.url, namespace: 'soak' },
        ...routing(backends, 5_000),
      }),
    );
    const gateway = run.start('gateway', process.execPath, [cliPath, 'start', '--config', config, '--workers', String(workers)]);
    await waitPort(port, 120_000);
    await waitPort(adminPort, 120_000);
    const admin = `http://127.0.0.1:${adminPort}`;
    const agent = new Agent({ keepAliveTimeout: 60_000, connections: CONNS });
    const until = performance.now() + SECONDS * 1_000;
    const counts = { requests: 0, errors: 0, writes: 0, refused: 0, writeErrors: 0 };

    const load = Array.from({ length: CONNS }, async (_, i) => {
      let n = i;
      while (performance.now() < until) {
        try {
          const response = await request(`http://127.0.0.1:${port}/soak`, { dispatcher: agent, headers: { 'x-user-id': String((n++ % 2) * 6_000 + 10) } });
          await response.body.dump();
          counts.requests++;
          if (response.statusCode !== 200) counts.errors++;
        } catch {
          counts.errors++;
          await sleep(10);
        }
      }
    });

    const churn = (async () => {
      let version = (await (await request(`${admin}/v1/config`)).body.json()).version;
      let i = 0;
      while (performance.now() < until) {
        const next = performance.now() + CHURN_MS;
        i++;
        const invalid = i % 5 === 0;
        const document = routing(backends, [1_000, 3_000, 5_000, 7_000][i % 4]);
        if (invalid) document.services[0].release.candidate = 'no-such-upstream';
        try {
          const response = await request(`${admin}/v1/config`, {
            method: 'PUT',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ reason: `soak ${i}`, version, document }),
          });
          const body = await response.body.json();
          if (response.statusCode === 200) {
            version = body.version;
            counts.writes++;
          } else if (response.statusCode === 400) counts.refused++;
          else {
            counts.writeErrors++;
            if (response.statusCode === 409) version = (await (await request(`${admin}/v1/config`)).body.json()).version;
          }
        } catch {
          counts.writeErrors++;
        }
        await sleep(Math.max(0, next - performance.now()));
      }
    })();

    /** pid → [{t, kb}] */
    const series = new Map();
    const started = performance.now();
    const sampler = (async () => {
      while (performance.now() < until) {
        const t = (performance.now() - started) / 1_000;
        for (const pid of groupPids(gateway.pid)) {
          const memory = processMemory(pid);
          if (!memory) continue;
          if (!series.has(pid)) series.set(pid, []);
          series.get(pid).push({ t, kb: memory.rssKb });
        }
        await sleep(SAMPLE_MS);
      }
    })();

    await Promise.all([...load, churn, sampler]);
    await agent.close();

    const processes = [...series.entries()].map(([pid, points]) => {
      const second = points.filter((p) => p.t >= SECONDS / 2);
      return {
        pid,
        role: pid === gateway.pid ? 'primary' : 'worker',
        startMb: +(points[0].kb / 1024).toFixed(1),
        endMb: +(points.at(-1).kb / 1024).toFixed(1),
        slopeMbPerMin: +slopeMbPerMin(points).toFixed(2),
        secondHalfSlopeMbPerMin: +slopeMbPerMin(second).toFixed(2),
        samples: points.map((p) => [+p.t.toFixed(0), +(p.kb / 1024).toFixed(1)]),
      };
    });
    // The whole tree: the sum of every process at each sample time (same sampling instants).
    const times = series.get(gateway.pid)?.map((p) => p.t) ?? [];
    const total = times.map((t) => ({ t, kb: [...series.values()].reduce((sum, points) => sum + (points.find((p) => p.t === t)?.kb ?? 0), 0) }));
    const totalSecond = total.filter((p) => p.t >= SECONDS / 2);
    return {
      workers,
      seconds: SECONDS,
      ...counts,
      totalStartMb: +(total[0].kb / 1024).toFixed(1),
      totalEndMb: +(total.at(-1).kb / 1024).toFixed(1),
      totalSlopeMbPerMin: +slopeMbPerMin(total).toFixed(2),
      totalSecondHalfSlopeMbPerMin: +slopeMbPerMin(totalSecond).toFixed(2),
      processes,
    };
  } finally {
    run.stopAll();
    await sleep(500);
  }
}

const results = [];
for (const workers of WORKERS_LIST) {
  const result = await soak(workers);
  results.push(result);
  process.stderr.write(
    `workers=${workers}: ${result.requests} requests (${result.errors} errors), ${result.writes} writes (${result.refused} refused, ${result.writeErrors} failed); ` +
      `tree RSS ${result.totalStartMb} → ${result.totalEndMb} MB, slope ${result.totalSlopeMbPerMin} MB/min (second half ${result.totalSecondHalfSlopeMbPerMin})\n`,
  );
  for (const p of result.processes) process.stderr.write(`  ${p.role} ${p.pid}: ${p.startMb} → ${p.endMb} MB, slope ${p.slopeMbPerMin} MB/min (second half ${p.secondHalfSlopeMbPerMin})\n`);
}
console.log(JSON.stringify({ bench: 'soak', commit: gitCommit(), churnMs: CHURN_MS, conns: CONNS, sampleMs: SAMPLE_MS, results }, null, 2));
process.exit(0);
