import { Agent, request } from 'undici';

export interface LoadResult {
  readonly sent: number;
  readonly failed: number;
  /** The first few failures, for the assertion message. */
  readonly failures: string[];
  /** How many responses came from each version (the `version` field the test backends answer). */
  readonly byVersion: Record<string, number>;
}

export interface LoadOptions {
  /** A loopback URL. */
  url: string;
  /** The loop ends by itself after this long (a bound, never an expectation: stop it or let maxRequests end it). */
  maxMs: number;
  maxRequests?: number;
  /** Clients, each sending one request at a time over keep-alive (default 4). */
  concurrency?: number;
  /** Headers of every request, or a function giving each request its own (e.g. a random caller). */
  headers?: Record<string, string> | (() => Record<string, string>);
  /** Pause between one client's requests, leaving CPU to the processes under test (default none). */
  pauseMs?: number;
  /** Accepts the version that answered (the `version` field of the test backends' JSON). */
  check?: (version: string) => boolean;
  /** Versions allowed at this moment: an answer passes when allowed as its request started or as it ended (a change lands in between). */
  allowed?: () => ReadonlySet<string>;
  /** Prefixes failure messages (which caller failed). */
  label?: string;
}

export interface Load {
  /** Requests sent so far. */
  sent(): number;
  /** True until `stop()` is called or a bound is reached. */
  isRunning(): boolean;
  /** Index of the next answer: pass it to `answersSince` to count only what comes after now. */
  mark(): number;
  /** Answers since `mark`, by version; a failed request counts as `failed`. */
  answersSince(mark: number): Record<string, number>;
  /** Resolves with the counts once a bound ends the loop (without stopping it). */
  finished(): Promise<LoadResult>;
  /** Ends the loop (requests in flight finish) and resolves with the counts. */
  stop(): Promise<LoadResult>;
}

const FAILED = 'failed';

/**
 * The suite's one load loop: `concurrency` keep-alive clients send requests until `stop()`, and
 * end by themselves after `maxMs` or `maxRequests`. Loopback targets only. A request fails on a
 * network error, a non-200 status, or when `check` or `allowed` rejects the version that
 * answered; a failed request is counted, never thrown. Tests assert what the answers were, not
 * how many came in a given time: wait for a count with `eventually` instead.
 */
export function startLoad(options: LoadOptions): Load {
  const target = new URL(options.url);
  if (target.hostname !== '127.0.0.1' && target.hostname !== 'localhost' && target.hostname !== '[::1]') {
    throw new Error(`load loops target loopback only, not ${target.hostname}`);
  }
  const concurrency = options.concurrency ?? 4;
  const agent = new Agent({ keepAliveTimeout: 10_000, connections: concurrency });
  const deadline = Date.now() + options.maxMs;
  const maxRequests = options.maxRequests ?? 50_000;
  const prefix = options.label ? `${options.label}: ` : '';
  let stopped = false;
  let sent = 0;
  let failed = 0;
  const failures: string[] = [];
  const byVersion: Record<string, number> = {};
  const answers: string[] = [];
  const fail = (why: string, answered = false) => {
    failed++;
    if (!answered) answers.push(FAILED);
    if (failures.length < 5) failures.push(prefix + why);
  };
  const running = () => !stopped && Date.now() < deadline && sent < maxRequests;
  const worker = async () => {
    while (running()) {
      sent++;
      const expected = options.allowed?.();
      try {
        const headers = typeof options.headers === 'function' ? options.headers() : options.headers;
        const response = await request(options.url, { dispatcher: agent, headers });
        const text = await response.body.text();
        if (response.statusCode !== 200) fail(`status ${response.statusCode}: ${text.slice(0, 200)}`);
        else {
          const version = (JSON.parse(text) as { version: string }).version;
          byVersion[version] = (byVersion[version] ?? 0) + 1;
          answers.push(version);
          if (options.check && !options.check(version)) fail(`unexpected version ${version} (request ${sent})`, true);
          else if (expected && !expected.has(version) && !options.allowed!().has(version)) fail(`unexpected version ${version} (request ${sent})`, true);
        }
      } catch (error) {
        fail(`request failed: ${(error as Error).message}`);
      }
      if (options.pauseMs) await new Promise((resolve) => setTimeout(resolve, options.pauseMs));
    }
  };
  const done = Promise.all(Array.from({ length: concurrency }, worker)).then(async () => {
    await agent.close();
    return { sent, failed, failures, byVersion };
  });
  return {
    sent: () => sent,
    isRunning: running,
    mark: () => answers.length,
    answersSince(mark) {
      const counts: Record<string, number> = {};
      for (const answer of answers.slice(mark)) counts[answer] = (counts[answer] ?? 0) + 1;
      return counts;
    },
    finished: () => done,
    stop: () => {
      stopped = true;
      return done;
    },
  };
}

/**
 * A load run bounded by `maxRequests` (and, as a safety bound, `durationMs`): resolves with the
 * counts once it ends. Give `durationMs` far more than the requests need, so the count ends the
 * run and `sent` is what the test asked for, however loaded the box.
 */
export function runLoad(options: Omit<LoadOptions, 'maxMs'> & { durationMs: number }): Promise<LoadResult> {
  const { durationMs, ...rest } = options;
  return startLoad({ ...rest, maxMs: durationMs, maxRequests: options.maxRequests ?? 100_000 }).finished();
}

/** One GET; resolves with status, headers and the parsed JSON body (or the text). */
export async function get(url: string, headers: Record<string, string> = {}) {
  const response = await request(url, { headers });
  const text = await response.body.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: response.statusCode, headers: response.headers, text, json };
}

/** The version that answered (the test backends put it in the body and in `x-backend`). */
export async function versionFor(url: string, headers: Record<string, string> = {}): Promise<string> {
  const response = await get(url, headers);
  if (response.status !== 200) throw new Error(`status ${response.status}: ${response.text}`);
  return String(response.json?.version);
}
