import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { eventually, WAIT_CAP_MS } from './eventually.js';
import { killProcessGroup, spawnTracked } from './processes.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
export const cliPath = path.join(root, 'dist/cli/main.js');

/**
 * How long a gateway may take to log that it listens before the start counts as failed. Start-up
 * is not what these tests measure: on a loaded box, compiling, connecting to Redis and forking
 * workers can take tens of seconds, and a hung start still fails (after this long).
 */
export const GATEWAY_READY_CAP_MS = 90_000;

/**
 * The environment a test gateway starts with. The process count is what a user gets unless the
 * test asks: `workers` (a test about one process, or about N workers, names its count) wins, then
 * `GG_TEST_WORKERS` (a number forces that many workers on every gateway that did not ask, e.g.
 * `1` to debug a failure in one process; `default` or unset leaves it to the CLI). Otherwise
 * GRAYGATE_WORKERS is unset, inherited value included, so the CLI's own default (one worker per
 * core) applies, as for a user. An explicit GRAYGATE_WORKERS in `env` is kept as given.
 */
export function gatewayEnv(env: NodeJS.ProcessEnv = {}, workers?: number): NodeJS.ProcessEnv {
  const choice = process.env.GG_TEST_WORKERS;
  const merged: NodeJS.ProcessEnv = { ...process.env };
  delete merged.GRAYGATE_WORKERS;
  if (workers !== undefined) merged.GRAYGATE_WORKERS = String(workers);
  else if (choice !== undefined && choice !== '' && choice !== 'default') merged.GRAYGATE_WORKERS = choice;
  return { ...merged, ...env };
}

export interface GatewayProcess {
  /** `http://127.0.0.1:PORT` of the proxy listener. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  readonly child: ChildProcess;
  /** The config file the process was started with (edit it to change routing live). */
  readonly configPath: string;
  /** How many processes serve requests: the `workers` of its "listening" line (1 without --workers). */
  readonly workers: number;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Parsed JSON log lines so far (a line still being written is left out). */
  logs(): Record<string, unknown>[];
  /** Resolves with the first log line (at or after `since`, an index into `logs()`) that `match` accepts; rejects after `withinMs`. */
  waitForLog(match: (line: Record<string, unknown>) => boolean, options?: { withinMs?: number; since?: number }): Promise<Record<string, unknown>>;
  /** Peak resident set size of the process so far (VmHWM), in KiB. */
  peakRssKb(): number;
  /** Current resident set size (VmRSS), in KiB. */
  rssKb(): number;
  /** Sends `signal` to the gateway (its primary under --workers) and resolves with the exit code (or the signal name). */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
  /** SIGKILLs the gateway's whole process group (primary and workers); resolves once the primary is gone. */
  kill(): Promise<number | string>;
}

/**
 * Runs the real gateway as a child process: `node dist/cli/main.js start --config <file>`.
 * `config` is written as YAML into a fresh temp dir (with `listen` defaulting to port 0); the
 * promise resolves once the process logs that it listens. Without `config`, only `args` are
 * passed (e.g. the drop-in `--listen … --redis … --stable … --candidate …`). Pass `dir` to run
 * in (and write the config file into) a given directory, e.g. to start a gateway again on the
 * same config file and the files beside it; the caller then removes that directory.
 */
export async function startGatewayProcess(options: {
  config?: Record<string, unknown>;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Waits at least this long for the start (never less than GATEWAY_READY_CAP_MS). */
  readyWithinMs?: number;
  dir?: string;
  /** The runtime that runs the CLI: node (this one) by default, or e.g. node_modules/.bin/bun. */
  runtime?: string;
  /** The CLI script: this checkout's dist/cli/main.js by default, or that of a copy of the package. */
  cli?: string;
  /**
   * Process count (GRAYGATE_WORKERS). Unset: the CLI's default, one worker per core, unless
   * GG_TEST_WORKERS forces a count. A test about one process (its pid, its memory, its exact
   * counters) passes 1 and says why.
   */
  workers?: number;
}): Promise<GatewayProcess> {
  const dir = options.dir ?? mkdtempSync(path.join(tmpdir(), 'graygate-proc-'));
  const configPath = path.join(dir, 'graygate.yaml');
  const args = options.args ?? [];
  if (options.config) {
    writeFileSync(configPath, stringify({ listen: '127.0.0.1:0', ...options.config }));
  }
  // Its own process group: a failed or interrupted test kills it together with its workers.
  const child = spawnTracked(options.runtime ?? process.execPath, [options.cli ?? cliPath, 'start', ...(options.config ? ['--config', configPath] : []), ...args], {
    cwd: dir,
    env: gatewayEnv(options.env, options.workers),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  const readyCapMs = Math.max(options.readyWithinMs ?? 0, GATEWAY_READY_CAP_MS);
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      killProcessGroup(child);
      reject(new Error(`gateway did not start within ${readyCapMs} ms:\n${output}`));
    }, readyCapMs);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      // The start command logs one line with event "listening" and the bound port.
      const portMatch = /"event":"listening"[^\n]*?"port":(\d+)/.exec(output);
      if (portMatch) {
        clearTimeout(timer);
        resolve(Number(portMatch[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code}) before listening:\n${output}`));
    });
  });
  // Only complete lines: the last one may still be arriving.
  const logs = () =>
    output
      .slice(0, output.lastIndexOf('\n') + 1)
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  const status = (field: string) => {
    const text = readFileSync(`/proc/${child.pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return match ? Number(match[1]) : NaN;
  };
  // The "listening" line is written whole; wait for its end before reading its worker count.
  const listening = await eventually(() => {
    const line = logs().find((entry) => entry.event === 'listening');
    if (!line) throw new Error(`no complete "listening" line yet:\n${output.slice(-2_000)}`);
    return line;
  }, { everyMs: 10 });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid: child.pid!,
    child,
    configPath,
    workers: typeof listening.workers === 'number' ? listening.workers : 1,
    output: () => output,
    logs,
    waitForLog: (match, waitOptions = {}) =>
      eventually(
        () => {
          const line = logs()
            .slice(waitOptions.since ?? 0)
            .find((entry) => match(entry));
          if (!line) throw new Error(`no matching log line within ${Math.max(waitOptions.withinMs ?? 0, WAIT_CAP_MS)} ms; output so far:\n${output.slice(-4_000)}`);
          return line;
        },
        { withinMs: waitOptions.withinMs, everyMs: 20 },
      ),
    peakRssKb: () => status('VmHWM'),
    rssKb: () => status('VmRSS'),
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    kill: () => {
      killProcessGroup(child);
      return exited;
    },
  };
}
