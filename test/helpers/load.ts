import { Agent, request } from 'undici';

export interface LoadResult {
  readonly sent: number;
  readonly failed: number;
  /** The first few failures, for the assertion message. */
  readonly failures: string[];
  /** How many responses came from each version (the `version` field the test backends answer). */
  readonly byVersion: Record<string, number>;
}

/**
 * A bounded load loop: `concurrency` keep-alive clients send requests for `durationMs` (and at
 * most `maxRequests`); a request fails on a network error, a non-200 status, or when `check`
 * rejects the body. Resolves with the counts; never throws for a failed request.
 */
export async function runLoad(options: {
  url: string;
  durationMs: number;
  concurrency?: number;
  maxRequests?: number;
  headers?: Record<string, string>;
  check?: (version: string) => boolean;
}): Promise<LoadResult> {
  const agent = new Agent({ keepAliveTimeout: 10_000, connections: options.concurrency ?? 4 });
  const deadline = Date.now() + options.durationMs;
  const maxRequests = options.maxRequests ?? 100_000;
  let sent = 0;
  let failed = 0;
  const failures: string[] = [];
  const byVersion: Record<string, number> = {};
  const fail = (why: string) => {
    failed++;
    if (failures.length < 5) failures.push(why);
  };
  const worker = async () => {
    while (Date.now() < deadline && sent < maxRequests) {
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
        if (options.check && !options.check(version)) fail(`unexpected version ${version}`);
      } catch (error) {
        fail(`request failed: ${(error as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 4 }, worker));
  await agent.close();
  return { sent, failed, failures, byVersion };
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
