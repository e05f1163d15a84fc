import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from './eventually.js';
import { isAlive, killProcessGroup, RUN_DIR_PREFIX, spawnTracked } from './processes.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const vitest = path.join(root, 'node_modules/vitest/vitest.mjs');
const fixtureConfig = 'test/fixtures/interrupted-run/vitest.config.ts';
const dirs: string[] = [];
afterAll(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

type Interruption = 'Ctrl-C (SIGINT to the run process group)' | 'SIGTERM to vitest' | 'SIGKILL to the test worker' | 'a failing test';

/**
 * Runs vitest on a fixture test file that starts a Redis and a gateway with two workers (the
 * suite's own global setup and per-file teardown), interrupts it as `how` says once they run,
 * and resolves with what the fixture started, the run's output and its vitest pid.
 */
async function interruptedRun(how: Interruption) {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-interrupted-'));
  dirs.push(dir);
  const marker = path.join(dir, 'started.json');
  const run = spawnTracked(process.execPath, [vitest, 'run', '--config', fixtureConfig], {
    cwd: root,
    env: { ...process.env, GG_FIXTURE_MARKER: marker, GG_FIXTURE_MODE: how === 'a failing test' ? 'fail' : 'wait', CI: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  run.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  run.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => run.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  try {
    const started = await eventually(
      () => {
        // The marker first: a failing fixture writes it and may end its run before the next look.
        if (existsSync(marker)) return JSON.parse(readFileSync(marker, 'utf8')) as { worker: number; pids: number[] };
        if (run.exitCode !== null) throw new Error(`the fixture run ended before starting its processes:\n${output}`);
        throw new Error('the fixture has not started its processes yet');
      },
      { withinMs: 180_000, everyMs: 100 },
    );
    expect(started.pids.length).toBeGreaterThanOrEqual(4); // Redis, the gateway primary and its two workers
    // (A failing test's file is already tearing down by now.)
    if (how !== 'a failing test') expect(started.pids.every(isAlive)).toBe(true);
    if (how === 'Ctrl-C (SIGINT to the run process group)') process.kill(-run.pid!, 'SIGINT');
    else if (how === 'SIGTERM to vitest') run.kill('SIGTERM');
    else if (how === 'SIGKILL to the test worker') process.kill(started.worker, 'SIGKILL');
    const code = await exited;
    return { started, code, output, vitestPid: run.pid! };
  } finally {
    killProcessGroup(run);
  }
}

describe('every process a test starts dies with the run, however the run ends', () => {
  const cases: Interruption[] = ['Ctrl-C (SIGINT to the run process group)', 'SIGTERM to vitest', 'SIGKILL to the test worker', 'a failing test'];
  it.each(cases)('%s: no process of the run survives', async (how) => {
    const { started, code, output, vitestPid } = await interruptedRun(how);
    expect(code, output).not.toBe(0);
    // Gone, not merely signalled (a cap for a loaded box, not a measurement).
    await eventually(() => expect(started.pids.filter(isAlive), output).toEqual([]));
    // Nor does the test worker (its pending test's timers would keep it alive for minutes).
    await eventually(() => expect(isAlive(started.worker)).toBe(false));
    // The run's pid file went with it.
    expect(existsSync(`${RUN_DIR_PREFIX}${vitestPid}`)).toBe(false);
  }, 400_000);
});
