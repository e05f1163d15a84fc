import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startRedis } from '../helpers/redis.js';

/** One GET on a connection of its own, so successive requests are spread over the workers. */
function freshGet(url: string, headers: Record<string, string> = {}): Promise<{ status: number; version: string; url: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { ...headers, connection: 'close' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        let body: { version?: string; url?: string } = {};
        try {
          body = JSON.parse(text) as typeof body;
        } catch {
          // an error body or a non-JSON answer: version stays unknown
        }
        resolve({ status: res.statusCode ?? 0, version: String(body.version), url: String(body.url) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(60_000, () => req.destroy(new Error(`no answer from ${url} within 60 s`)));
  });
}

/** The pids of a process's children (the workers of a gateway primary). */
function childPids(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
    .trim()
    .split(/\s+/)
    .filter((text) => text !== '')
    .map(Number);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const bun = fileURLToPath(new URL('../../node_modules/.bin/bun', import.meta.url));
// The same behaviours on Node and on Bun (node:cluster under Bun; each worker's Bun.serve uses reusePort).
const runtimes: [string, string | undefined][] = [['node', undefined], ['bun', bun]];

describe.each(runtimes)('--workers on %s: one store subscription feeding N worker processes', (name, runtime) => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess | undefined;

  const config = (canaryValue: string) => ({
    log: { level: 'info' },
    upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
    services: [
      {
        name: 'app',
        stable: 'app-v1',
        release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals: canaryValue } }] },
      },
    ],
  });

  /** Versions answering `count` successive requests, each on a new connection. */
  const versions = async (count: number, headers: Record<string, string>) => {
    const answers: string[] = [];
    for (let i = 0; i < count; i++) {
      const response = await freshGet(`${gateway!.url}/r${i}`, headers);
      expect(response.status).toBe(200);
      answers.push(response.version);
    }
    return answers;
  };

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  });
  afterAll(async () => {
    await gateway?.stop('SIGKILL');
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('starts N workers behind one address, and every one of them routes by a change within the propagation target', { timeout: 180_000 }, async () => {
    gateway = await startGatewayProcess({ config: { listen: '127.0.0.1:0', ...config('1') }, args: ['--workers', '2'], runtime, readyWithinMs: 90_000 });
    const listening = await gateway.waitForLog((line) => line.event === 'listening');
    expect(listening.workers).toBe(2);
    expect(listening.runtime).toBe(name);
    expect(childPids(gateway.pid)).toHaveLength(2);
    // Round-robin over new connections: ten requests reach both workers.
    expect(new Set(await versions(10, { 'x-canary': '1' }))).toEqual(new Set(['candidate']));

    const text = stringify(config('2'));
    writeFileSync(`${gateway.configPath}.tmp`, text);
    renameSync(`${gateway.configPath}.tmp`, gateway.configPath);
    // Once the first request sees the change, the next ten (both workers) must all see it too.
    await eventually(async () => expect(new Set(await versions(10, { 'x-canary': '1' }))).toEqual(new Set(['stable'])), { withinMs: 3_000 });
    expect(new Set(await versions(10, { 'x-canary': '2' }))).toEqual(new Set(['candidate']));
    // The primary alone holds the store: one "applied" line per version, not one per worker.
    expect(gateway.logs().filter((line) => line.event === 'applied' || /applied routing version 2/.test(String(line.msg)))).toHaveLength(1);
  });

  it('restarts a worker that was killed, with the current routing, and keeps serving meanwhile', { timeout: 180_000 }, async () => {
    const before = childPids(gateway!.pid);
    const victim = before[0]!;
    process.kill(victim, 'SIGKILL');
    // node:cluster can hand a connection accepted in the instant of the kill to the dead worker
    // (docs/runtimes.md: a crash loses what the worker held); once the primary has seen the exit, the
    // other worker takes every connection while the victim is replaced.
    await gateway!.waitForLog((line) => line.event === 'worker-exited' && line.pid === victim);
    expect(new Set(await versions(4, { 'x-canary': '2' }))).toEqual(new Set(['candidate']));
    await eventually(
      () => {
        const now = childPids(gateway!.pid);
        expect(now).toHaveLength(2);
        expect(now).not.toContain(victim);
      },
      { withinMs: 10_000 },
    );
    // The new worker got the document in force now (version 2), not the one it started with.
    await eventually(async () => expect(new Set(await versions(10, { 'x-canary': '2' }))).toEqual(new Set(['candidate'])), { withinMs: 5_000 });
    expect(new Set(await versions(10, { 'x-canary': '1' }))).toEqual(new Set(['stable']));
  });

  it('drains every worker on SIGTERM: requests in flight on each complete, the counts are summed, the group exits 0', { timeout: 180_000 }, async () => {
    await gateway!.stop('SIGKILL');
    gateway = undefined;
    const releases: (() => void)[] = [];
    const slow = await startBackend('slow', (req, res) => {
      req.resume();
      releases.push(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ version: 'slow', url: req.url }));
      });
      return true;
    });
    try {
      gateway = await startGatewayProcess({
        config: { listen: '127.0.0.1:0', upstreams: { v1: { servers: [slow.url] } }, services: [{ name: 'app', stable: 'v1' }], proxy: { shutdownGraceMs: 10_000 } },
        args: ['--workers', '2'],
        runtime,
        readyWithinMs: 90_000,
      });
      const workers = childPids(gateway.pid);
      expect(workers).toHaveLength(2);
      const inFlight = Array.from({ length: 4 }, (_, i) => freshGet(`${gateway!.url}/slow/${i}`));
      await eventually(() => expect(releases).toHaveLength(4));

      const exited = gateway.stop('SIGTERM');
      const draining = await gateway.waitForLog((line) => line.event === 'workers-draining');
      expect(draining.inFlightRequests).toBe(4);
      expect(draining.workers).toBe(2);
      for (const release of releases) release();
      const responses = await Promise.all(inFlight);
      expect(responses.map((response) => [response.status, response.url])).toEqual([0, 1, 2, 3].map((i) => [200, `/slow/${i}`]));
      expect(await exited).toBe(0);
      await eventually(() => expect(workers.filter(isAlive)).toEqual([]));
      gateway = undefined;
    } finally {
      await slow.close();
    }
  });

  it('looks tokens up in each worker: the drop-in recipe with 2 workers routes by TOKEN_<token> and follows Grayscale_Range', { timeout: 180_000 }, async () => {
    const redis = await startRedis();
    let dropIn: GatewayProcess | undefined;
    try {
      await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
      await redis.client.set('TOKEN_abc', '1234');
      await redis.client.set('TOKEN_far', '9999');
      dropIn = await startGatewayProcess({
        args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', stable.url, '--candidate', candidate.url, '--workers', '2'],
        runtime,
        readyWithinMs: 90_000,
      });
      const ask = async (token: string) => {
        const answers: string[] = [];
        for (let i = 0; i < 6; i++) answers.push((await freshGet(`${dropIn!.url}/t${i}`, { TOKEN: token })).version);
        return new Set(answers);
      };
      // A worker's first (cold) lookup may pass the 50 ms deadline on a busy box and then rightly
      // goes to stable, uncached: wait until every worker has the token, then insist.
      await eventually(async () => expect(await ask('abc')).toEqual(new Set(['candidate'])), { withinMs: 10_000 });
      expect(await ask('abc')).toEqual(new Set(['candidate']));
      expect(await ask('far')).toEqual(new Set(['stable']));
      expect(await ask('nobody')).toEqual(new Set(['stable']));
      await redis.client.set('Grayscale_Range', '{"idStart":5000,"idEnd":10000}');
      await eventually(async () => {
        expect(await ask('abc')).toEqual(new Set(['stable']));
        expect(await ask('far')).toEqual(new Set(['candidate']));
      }, { withinMs: 3_000 });
    } finally {
      await dropIn?.stop('SIGTERM');
      await redis.stop();
    }
  });
});
