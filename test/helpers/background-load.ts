import { Agent, request } from 'undici';
import type { LoadResult } from './load.js';

export interface BackgroundLoad {
  /** Requests sent so far. */
  sent(): number;
  /** Ends the loop (requests in flight finish) and resolves with the counts. */
  stop(): Promise<LoadResult>;
  /** True until `stop()` is called or a bound is reached. */
  isRunning(): boolean;
}

/**
 * A load loop that runs until `stop()` (for fault tests, where the end is "once the fault is
 * over", not a fixed time), still bounded: it ends by itself after `maxMs` and `maxRequests`.
 * Loopback targets only. A request fails on a network error, a non-200 status, or when `check`
 * rejects the version that answered (the `version` field of the test backends' JSON).
 */
export function startBackgroundLoad(options: {
  url: string;
  maxMs: number;
  maxRequests?: number;
  concurrency?: number;
  headers?: Record<string, string>;
  check?: (version: string) => boolean;
}): BackgroundLoad {
  const target = new URL(options.url);
  if (target.hostname !== '127.0.0.1' && target.hostname !== 'localhost' && target.hostname !== '[::1]') {
    throw new Error(`load loops target loopback only, not ${target.hostname}`);
  }
  const concurrency = options.concurrency ?? 4;
  const agent = new Agent({ keepAliveTimeout: 10_000, connections: concurrency });
  const deadline = Date.now() + options.maxMs;
  const maxRequests = options.maxRequests ?? 50_000;
  let stopped = false;
  let sent = 0;
  let failed = 0;
  const failures: string[] = [];
  const byVersion: Record<string, number> = {};
  const fail = (why: string) => {
    failed++;
    if (failures.length < 5) failures.push(why);
  };
  const running = () => !stopped && Date.now() < deadline && sent < maxRequests;
  const worker = async () => {
    while (running()) {
      sent++;
      try {
        const response = await request(options.url, { dispatcher: agent, headers: options.headers });
        const text = await response.body.text();
        if (response.statusCode !== 200) {
          fail(`status ${response.statusCode}: ${text.slice(0, 200)}`);
          continue;
        }
        const version = (JSON.parse(text) as { version: string }).version;
        byVersion[version] = (byVersion[version] ?? 0) + 1;
        if (options.check && !options.check(version)) fail(`unexpected version ${version} (request ${sent})`);
      } catch (error) {
        fail(`request failed: ${(error as Error).message}`);
      }
    }
  };
  const done = Promise.all(Array.from({ length: concurrency }, worker)).then(async () => {
    await agent.close();
    return { sent, failed, failures, byVersion };
  });
  return {
    sent: () => sent,
    isRunning: running,
    stop: () => {
      stopped = true;
      return done;
    },
  };
}
