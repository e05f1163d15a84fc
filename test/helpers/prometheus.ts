import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { stringify } from 'yaml';
import { eventually } from './eventually.js';
import { killProcessGroup, spawnTracked } from './processes.js';
import { freePort } from './redis.js';

/** Debian's package `prometheus` installs it here; PROMETHEUS overrides (another build, another path). */
const PROMETHEUS = process.env.PROMETHEUS ?? '/usr/bin/prometheus';

export interface PrometheusServer {
  /** `http://127.0.0.1:PORT`: the HTTP API (`/api/v1/query`). */
  readonly url: string;
  readonly port: number;
  /** Resolves once every target has been scraped at least once with success (`up == 1`). */
  waitForTargets(withinMs?: number): Promise<void>;
  /** Kills it and removes its storage. */
  stop(): Promise<void>;
}

/**
 * A private Prometheus on a free loopback port, with its own temporary storage, scraping
 * `targets` (`host:port` of a `/metrics` endpoint, e.g. a gateway's admin listener) every
 * `scrapeIntervalMs`. Started in a process group of its own and tracked like every test process,
 * so it dies with the test, its file and the run.
 */
export async function startPrometheus(options: { targets: readonly string[]; scrapeIntervalMs?: number }): Promise<PrometheusServer> {
  const dir = await mkdtemp(path.join(tmpdir(), 'graygate-prometheus-'));
  const every = `${options.scrapeIntervalMs ?? 1_000}ms`;
  const configFile = path.join(dir, 'prometheus.yml');
  await writeFile(
    configFile,
    stringify({
      global: { scrape_interval: every, scrape_timeout: every, evaluation_interval: every },
      scrape_configs: [{ job_name: 'graygate', metrics_path: '/metrics', static_configs: [{ targets: [...options.targets] }] }],
    }),
  );
  let child: ChildProcess | undefined;
  let port = 0;
  let output = '';
  // The free port may be taken between the probe and the bind (other suites run too): retry.
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort();
    const started = spawnTracked(
      PROMETHEUS,
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
        // A test's Prometheus lives minutes: nothing older than that is worth keeping.
        '--storage.tsdb.retention.time=1h',
      ],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    started.stdout?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4_000)));
    started.stderr?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4_000)));
    try {
      await eventually(
        async () => {
          if (started.exitCode !== null || started.signalCode !== null) throw new Error(`prometheus exited: ${output}`);
          const response = await request(`http://127.0.0.1:${port}/-/ready`, { headersTimeout: 2_000, bodyTimeout: 2_000 });
          await response.body.dump();
          if (response.statusCode !== 200) throw new Error(`prometheus not ready (${response.statusCode})`);
        },
        { withinMs: 60_000, everyMs: 100 },
      );
      child = started;
    } catch (error) {
      killProcessGroup(started);
      if (attempt >= 3) {
        await rm(dir, { recursive: true, force: true });
        throw new Error(`prometheus (${PROMETHEUS}) did not start: ${(error as Error).message}; install Debian's package prometheus`);
      }
    }
  }
  const running = child;
  const exited = new Promise<void>((resolve) => {
    if (running.exitCode !== null || running.signalCode !== null) resolve();
    else running.once('exit', () => resolve());
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    async waitForTargets(withinMs = 60_000) {
      await eventually(
        async () => {
          const response = await request(`${url}/api/v1/query?query=${encodeURIComponent('min(up{job="graygate"})')}`);
          const body = (await response.body.json()) as { data?: { result?: { value: [number, string] }[] } };
          if (body.data?.result?.[0]?.value[1] !== '1') throw new Error(`not every target scraped yet: ${JSON.stringify(body)}`);
        },
        { withinMs, everyMs: 250 },
      );
    },
    async stop() {
      killProcessGroup(running);
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
