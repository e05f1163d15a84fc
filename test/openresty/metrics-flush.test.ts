import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MetricsJson } from '../../src/observe/metrics.js';
import { latencyBoundsInitArgs, METRICS_DUMP_PATH, readOpenrestyDump } from '../../src/openresty/metrics.js';
import { eventually } from '../helpers/eventually.js';
import { startNginx, type Nginx } from '../helpers/nginx.js';

/**
 * metrics.lua keeps a worker's request counts in the worker and adds them to the shared dict on a
 * timer. Here the timer's interval is an hour, so only two things can bring a count into the dump:
 * the dump's own worker adding its counts as it answers, and a worker adding its counts as it
 * exits (an nginx reload). A request starting is in the dict at once (in flight), its close
 * only with the counts: the in-flight figure is never below the truth.
 */
const WORKERS = 2;
const REQUESTS = 40;

let nginx: Nginx;
let dumpUrl: string;

beforeAll(async () => {
  nginx = await startNginx({
    workers: WORKERS,
    http: (ports) => `
  lua_shared_dict graygate_metrics 1m;
  init_worker_by_lua_block {
    require("graygate.metrics").init({ dict = "graygate_metrics", flush_interval = 3600, ${latencyBoundsInitArgs()} })
  }
  server {
    # Each new connection to a worker by its address hash: both workers serve some.
    listen 127.0.0.1:${ports[0]} reuseport;
    location = /counted {
      access_by_lua_block {
        local g = {}
        ngx.ctx.graygate = g
        require("graygate.metrics").started("app-v2", g, { service = "app", version = "candidate", upstream = "app-v2" })
      }
      content_by_lua_block { ngx.say(ngx.worker.pid()) }
      log_by_lua_block { require("graygate.metrics").log_vars(ngx.ctx.graygate) }
    }
    location = ${METRICS_DUMP_PATH} {
      content_by_lua_block { require("graygate.metrics").dump() }
    }
  }`,
  });
  dumpUrl = `${nginx.url}${METRICS_DUMP_PATH}`;
});
afterAll(async () => {
  await nginx?.stop();
});

type Value = { labels: Record<string, string | number>; value: number };
const counted = (metrics: MetricsJson) =>
  ((metrics.find((m) => m.name === 'graygate_requests_total')?.values ?? []) as unknown as Value[]).find(
    (v) => v.labels.service === 'app' && v.labels.version === 'candidate' && v.labels.status_class === '2xx' && v.labels.upstream === 'app-v2',
  )?.value ?? 0;

/** Whether process `pid` exists (signal 0: no signal is sent). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

describe("metrics.lua's per-worker counts", () => {
  it('are never more than were served, the in-flight figure never below what is open, and a reload loses none of them', async () => {
    const pids = new Set<string>();
    // A new connection per request, so both workers serve some.
    for (let i = 0; i < REQUESTS; i++) {
      const response = await request(`${nginx.url}/counted`, { reset: true });
      expect(response.statusCode).toBe(200);
      pids.add((await response.body.text()).trim());
    }
    expect(pids.size).toBe(WORKERS);
    const before = await readOpenrestyDump(dumpUrl);
    // The dump's worker added its own counts as it answered; the other worker's are not there yet
    // (missing, never extra), and its closed requests still show as in flight until it adds them.
    expect(counted(before.metrics)).toBeLessThan(REQUESTS);
    const inFlight = before.load.upstreams['app-v2']?.inFlightRequests ?? 0;
    expect(inFlight).toBeGreaterThan(0);
    expect(counted(before.metrics) + inFlight).toBe(REQUESTS);

    // A reload: the old workers exit, each adding what it counted on its way out.
    process.kill(nginx.child.pid!, 'SIGHUP');
    // Read once the old workers are gone: a dump an old worker answered on its way out would add
    // that worker's counts itself.
    await eventually(() => {
      for (const pid of pids) expect(alive(Number(pid))).toBe(false);
    });
    const after = await eventually(async () => {
      const dump = await readOpenrestyDump(dumpUrl);
      expect(counted(dump.metrics)).toBe(REQUESTS);
      expect(dump.load.upstreams['app-v2']?.inFlightRequests).toBe(0);
      return dump;
    });
    const histogram = (after.metrics.find((m) => m.name === 'graygate_request_duration_seconds')?.values ?? []) as unknown as (Value & { metricName?: string })[];
    expect(histogram.find((v) => v.metricName === 'graygate_request_duration_seconds_count' && v.labels.service === 'app')?.value).toBe(REQUESTS);
    expect(after.figures?.app?.candidate.requests).toBe(REQUESTS);
  });
});
