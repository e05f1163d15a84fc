import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runScenarios, thresholdReplay, type CandidateSecond } from '../../bench/analysis-e2e.js';
import { killProcessGroup, spawnTracked } from '../helpers/processes.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const second = (requests: number, errors: number, latencyMs = 50): CandidateSecond => ({ requests, errors, bad: errors, latencies: Array.from({ length: requests }, () => latencyMs) });

describe('the threshold policy replayed on recorded seconds', () => {
  it('a candidate at 5 % errors fails every 60 s interval and is rolled back at the third, 180 s after its first bad second', () => {
    const seconds = Array.from({ length: 30 }, () => second(20, 1));
    expect(thresholdReplay(seconds, 0, { steps: 1, holdS: 900 }, 900)).toEqual({ result: 'rollback', stepsTaken: 0, detectionS: 180, durationS: 180 });
  });

  it('a clean candidate advances one step per clean interval once the hold has passed, and is never rolled back', () => {
    const seconds = Array.from({ length: 30 }, () => second(20, 0));
    expect(thresholdReplay(seconds, 5, { steps: 4, holdS: 15 }, 1_800)).toEqual({ result: 'done', stepsTaken: 4, detectionS: null, durationS: 240 });
  });

  it('a p99 above 500 ms fails an interval even without errors; below it, the interval is clean', () => {
    // 2 % of each interval's requests at 900 ms: its p99 is 900 ms.
    const withSlow = (slowCount: number): CandidateSecond => ({ ...second(20, 0), latencies: [...Array<number>(slowCount).fill(900), ...Array<number>(20 - slowCount).fill(50)] });
    const slow = Array.from({ length: 60 }, (_, i) => (i % 5 === 0 ? withSlow(2) : second(20, 0)));
    expect(thresholdReplay(slow, 0, { steps: 1, holdS: 900 }, 900)).toMatchObject({ result: 'rollback', durationS: 180 });
    // One request in 1200 at 900 ms: under 1 %, the interval's p99 stays at 50 ms; it passes its step at the hold.
    const tail = Array.from({ length: 60 }, (_, i) => (i === 0 ? withSlow(1) : second(20, 0)));
    expect(thresholdReplay(tail, 0, { steps: 1, holdS: 900 }, 900)).toMatchObject({ result: 'done', stepsTaken: 1 });
  });
});

/**
 * The end-to-end bench's harness, one short scenario through the real thing: two gateways (one
 * with two workers) on a real Redis, the error-injecting backends, 200 req/s, a rollout started
 * through the admin API. The failing candidate must be rolled back by the errors check, and the
 * report must carry what the bench prints.
 */
describe('bench:analysis --e2e, one repetition of the error scenario', () => {
  let redis: RedisServer | undefined;
  const children: ChildProcess[] = [];
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-analysis-e2e-'));

  afterAll(async () => {
    for (const child of children) killProcessGroup(child);
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rolls the failing candidate back, and reports the detection time and the threshold policy beside it', async () => {
    redis = await startRedis();
    const lab = {
      dir,
      redisUrl: redis.url,
      start(_name: string, command: string, args: string[], onStdout?: (line: string) => void) {
        const child = spawnTracked(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let pending = '';
        child.stdout?.on('data', (chunk: Buffer) => {
          const lines = (pending + chunk.toString()).split('\n');
          pending = lines.pop() ?? '';
          for (const line of lines) onStdout?.(line);
        });
        child.stderr?.resume();
        children.push(child);
        return child;
      },
    };
    const report = await runScenarios(lab, { runs: 1, goodRuns: 1, killRuns: 1, budgetS: 60, rate: 200, scenarios: ['a'], capS: { a: 120, b: 120 } });
    const a = report.scenarios.a!;
    expect(a.runs).toHaveLength(1);
    const run = a.runs[0]!;
    expect(run.result).toBe('rollback');
    expect(run.failingCheck).toBe('errors');
    // Measured from a bad response the load generator saw, to the rollback record the driver wrote after it.
    expect(run.detectionMs).not.toBeNull();
    expect(run.detectionMs!).toBeGreaterThanOrEqual(0);
    expect(run.startToRollbackMs!).toBeGreaterThanOrEqual(run.detectionMs!);
    expect(run.samples!.candidate).toBeGreaterThan(0);
    // The threshold policy on the same recorded seconds: 5 % errors fail every interval, the third rolls back.
    expect(a.threshold).toHaveLength(1);
    expect(a.threshold[0]).toMatchObject({ result: 'rollback', stepsTaken: 0 });
    // The table the bench prints: both policies, side by side.
    expect(report.rows.map((row) => row.policy)).toEqual(['graygate sequential (live)', 'threshold 60 s × 3 (replayed)']);
    expect(report.rows[0]).toMatchObject({ runs: '1', rollback: '1' });
    expect(report.rows[0]!['detect p50']).toMatch(/^\d+\.\d s$/);
  });
});
