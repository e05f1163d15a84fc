import { readFileSync } from 'node:fs';
import { Client, request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { headerRangeRouting, writerStore } from '../helpers/redis-routing.js';

/**
 * With `--workers 2`, a write acknowledged by the admin API is what every worker of that gateway
 * serves, whatever the store does afterwards; a worker that cannot follow is resent the routing
 * and reported; workers look tokens up in the store themselves.
 */

const TOKEN = 'workers-ryw-token-0123456789abcdef';
/** A loaded box starts a primary and two workers slowly; this only bounds a start that hangs. */
const READY_WITHIN_MS = 90_000;

/** The pids of a process's children (the workers of a gateway primary). */
function childPids(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
    .trim()
    .split(/\s+/)
    .filter((text) => text !== '')
    .map(Number);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function startAdminGateway(config: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Promise<{ gateway: GatewayProcess; admin: string }> {
  const gateway = await startGatewayProcess({
    config: { admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_RYW_TOKEN' }] }, ...config },
    args: ['--workers', '2'],
    env: { GG_RYW_TOKEN: TOKEN, ...env },
    readyWithinMs: READY_WITHIN_MS,
  });
  const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening', { withinMs: 30_000 });
  return { gateway, admin: `http://127.0.0.1:${String(line.port)}` };
}

async function adminCall(admin: string, method: 'GET' | 'PUT', path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await request(`${admin}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    headersTimeout: 30_000,
    bodyTimeout: 30_000,
  });
  const text = await response.body.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: response.statusCode, body: parsed };
}

describe('--workers 2 on Redis: read your writes through churn and a store pause', () => {
  let stable: Backend;
  let candidate: Backend;
  let redis: RedisServer;
  let gateway: GatewayProcess | undefined;

  beforeAll(async () => {
    [stable, candidate, redis] = await Promise.all([startBackend('stable'), startBackend('candidate'), startRedis()]);
  });
  afterAll(async () => {
    redis?.resume();
    await gateway?.stop('SIGKILL');
    await Promise.all([stable?.close(), candidate?.close(), redis?.stop()]);
  });

  it('gives no answer that no acknowledged version would give, over three pauses of Redis right after a write', { timeout: 300_000 }, async () => {
    // Each version puts users 1..to on the candidate; the users asked sit between the bounds, so a
    // worker that serves an older version than acknowledged answers some of them wrongly.
    const bounds = [1_000, 3_000, 5_000, 7_000, 9_000];
    const users = [2_000, 4_000, 6_000, 8_000];
    const document = (to: number) => headerRangeRouting(stable, candidate, { from: 1, to });
    let started;
    ({ gateway, admin: started } = await startAdminGateway({ store: { kind: 'redis', url: redis.url, commandTimeoutMs: 1_000 }, ...document(5_000) }));
    const admin = started;
    const url = gateway.url;

    interface Ack { version: number; at: number; everywhere: boolean }
    const acks: Ack[] = [];
    /** Each write sent: the version it would become (its precondition + 1) and when it was sent. */
    const attempts: { version: number; at: number }[] = [];
    const answers: { start: number; end: number; user: number; version: string; status: number }[] = [];
    let lastVersion = (await adminCall(admin, 'GET', '/v1/config')).body.version as number;
    let refusedInvalid = 0;
    let acceptedInvalid = 0;
    let stopping = false;
    let pauseAfterNextAck: (() => void) | undefined;

    const writer = (async () => {
      let i = 0;
      while (!stopping) {
        i++;
        const invalid = i % 5 === 0;
        const to = bounds[Math.floor(Math.random() * bounds.length)]!;
        const body = invalid
          ? // Names an upstream that does not exist: refused before the store sees it.
            { reason: `churn ${i} (invalid)`, version: lastVersion, document: { ...document(to), services: [{ name: 'app', stable: 'app-v1', release: { candidate: 'no-such-upstream', state: 'canary', rules: [{ uidRange: { from: 1, to } }] } }] } }
          : { reason: `churn ${i}`, version: lastVersion, document: document(to) };
        if (!invalid) attempts.push({ version: lastVersion + 1, at: performance.now() });
        const reply = await adminCall(admin, 'PUT', '/v1/config', body).catch(() => ({ status: 0, body: {} as Record<string, unknown> }));
        const at = performance.now();
        if (invalid) {
          if (reply.status === 200) acceptedInvalid++;
          else refusedInvalid++;
        } else if (reply.status === 200) {
          const served = reply.body.served as { everywhere: boolean } | undefined;
          lastVersion = reply.body.version as number;
          acks.push({ version: lastVersion, at, everywhere: served?.everywhere === true });
          if (pauseAfterNextAck) {
            pauseAfterNextAck();
            pauseAfterNextAck = undefined;
          }
        } else if (reply.status === 409) {
          const current = await adminCall(admin, 'GET', '/v1/config').catch(() => undefined);
          if (current?.status === 200) lastVersion = current.body.version as number;
        }
        await sleep(100);
      }
    })();

    const clients = Array.from({ length: 6 }, () => new Client(url, { keepAliveTimeout: 60_000, headersTimeout: 30_000, bodyTimeout: 30_000 }));
    const readers = clients.map(async (client) => {
      while (!stopping) {
        const user = users[Math.floor(Math.random() * users.length)]!;
        const start = performance.now();
        try {
          const response = await client.request({ method: 'GET', path: `/u/${user}`, headers: { 'x-user-id': String(user) } });
          const json = (await response.body.json()) as { version?: string };
          answers.push({ start, end: performance.now(), user, version: String(json.version), status: response.statusCode });
        } catch (error) {
          answers.push({ start, end: performance.now(), user, version: `error: ${(error as Error).message}`, status: 0 });
        }
      }
    });

    const pauses: { from: number; to: number; afterVersion: number }[] = [];
    for (let round = 0; round < 3; round++) {
      await sleep(1_500);
      // Stop Redis the moment a write has been acknowledged: the gateway cannot reread it now.
      await new Promise<void>((resolve) => {
        pauseAfterNextAck = () => {
          redis.pause();
          pauses.push({ from: performance.now(), to: Infinity, afterVersion: lastVersion });
          resolve();
        };
      });
      await sleep(3_000);
      redis.resume();
      pauses[pauses.length - 1]!.to = performance.now();
      await sleep(1_500);
    }
    stopping = true;
    await Promise.all([writer, ...readers]);
    await Promise.all(clients.map((client) => client.close()));

    // What each version of the store routes: read back from Redis itself, so a write that timed
    // out but landed later is known too.
    const store = writerStore(redis.url);
    let history;
    try {
      history = await store.history({ limit: 1_000 });
    } finally {
      await store.close();
    }
    const boundOf = new Map<number, number>();
    for (const entry of history) {
      const release = entry.document.services[0]!.release!;
      expect(release.candidate).toBe('app-v2'); // no invalid document was ever stored
      boundOf.set(entry.version, (release.rules![0] as { uidRange: { to: number } }).uidRange.to);
    }

    const wrong: unknown[] = [];
    for (const answer of answers) {
      // Every acknowledged version that said it was served everywhere before this request began.
      let lower = 1;
      for (const ack of acks) if (ack.everywhere && ack.at <= answer.start && ack.version > lower) lower = ack.version;
      let upper = lower;
      for (const attempt of attempts) if (attempt.at <= answer.end && attempt.version > upper) upper = attempt.version;
      let possible = false;
      for (let v = lower; v <= upper && !possible; v++) {
        const to = boundOf.get(v);
        if (to !== undefined && (answer.user <= to ? 'candidate' : 'stable') === answer.version) possible = true;
      }
      if (!possible) wrong.push({ ...answer, lower, upper });
    }
    console.log(`read-your-writes run: ${answers.length} answers, ${acks.length} writes acknowledged (${acks.filter((ack) => !ack.everywhere).length} not yet everywhere), ${refusedInvalid} invalid refused, ${wrong.length} wrong`);
    const inPauses = answers.filter((answer) => pauses.some((pause) => answer.start >= pause.from && answer.end <= pause.to));
    // The run tested something: writes were acknowledged, and answers were checked while Redis was stopped.
    expect(pauses).toHaveLength(3);
    expect(acks.filter((ack) => ack.everywhere).length).toBeGreaterThanOrEqual(3);
    expect(inPauses.length).toBeGreaterThan(0);
    expect(refusedInvalid).toBeGreaterThan(0);
    expect(acceptedInvalid).toBe(0);
    expect(answers.filter((answer) => answer.status !== 200)).toEqual([]);
    expect(wrong.slice(0, 10)).toEqual([]);
  });
});

describe('--workers 2: a worker that does not confirm the routing', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess | undefined;
  let stopped: number | undefined;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
  });
  afterEach(() => {
    if (stopped !== undefined) process.kill(stopped, 'SIGCONT');
    stopped = undefined;
  });
  afterAll(async () => {
    await gateway?.stop('SIGKILL');
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('is named in the write\'s answer, /readyz, metrics and the log, is sent the routing again, and serves it once it runs', { timeout: 180_000 }, async () => {
    const started = await startAdminGateway(headerRangeRouting(stable, candidate, { from: 1, to: 5_000 }));
    gateway = started.gateway;
    const admin = started.admin;
    await eventually(async () => expect((await adminCall(admin, 'GET', '/readyz')).status).toBe(200), { withinMs: 30_000 });
    const workers = childPids(gateway.pid);
    expect(workers).toHaveLength(2);
    const victim = workers[0]!;

    process.kill(victim, 'SIGSTOP');
    stopped = victim;
    const current = await adminCall(admin, 'GET', '/v1/config');
    const write = await adminCall(admin, 'PUT', '/v1/config', { reason: 'move the range', version: current.body.version, document: headerRangeRouting(stable, candidate, { from: 1, to: 100 }) });
    expect(write.status).toBe(200);
    const version = write.body.version as number;
    const served = write.body.served as { everywhere: boolean; behind: { pid: number; version: number | null }[]; message: string };
    expect(served.everywhere).toBe(false);
    expect(served.behind).toEqual([{ pid: victim, version: current.body.version }]);
    expect(served.message).toContain(`pid ${victim}`);

    await gateway.waitForLog((line) => line.event === 'worker-behind' && line.pid === victim && line.version === version, { withinMs: 30_000 });
    const ready = await eventually(
      async () => {
        const reply = await adminCall(admin, 'GET', '/readyz');
        expect(reply.status).toBe(503);
        return reply;
      },
      { withinMs: 30_000 },
    );
    expect(ready.body.reason).toContain(`pid ${victim}`);
    expect(ready.body.workers).toContainEqual(expect.objectContaining({ pid: victim, version: current.body.version, behind: true }));
    const metrics = await request(`${admin}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((response) => response.body.text());
    expect(metrics).toMatch(/^graygate_workers_behind 1$/m);
    expect(metrics).toContain(`graygate_worker_config_version{worker="${victim}"} ${String(current.body.version)}`);
    expect(metrics).toContain(`graygate_worker_config_version{worker="${workers[1]}"} ${version}`);

    const since = gateway.logs().length;
    process.kill(victim, 'SIGCONT');
    stopped = undefined;
    await gateway.waitForLog((line) => line.event === 'worker-caught-up' && line.pid === victim, { withinMs: 30_000, since });
    await eventually(async () => expect((await adminCall(admin, 'GET', '/readyz')).status).toBe(200), { withinMs: 30_000 });
    // Both workers now route user 4000 (outside 1..100) to stable, on fresh connections spread over them.
    for (let i = 0; i < 8; i++) {
      const response = await request(`${gateway.url}/after/${i}`, { headers: { 'x-user-id': '4000', connection: 'close' } });
      expect(((await response.body.json()) as { version: string }).version).toBe('stable');
    }
  });
});

describe('--workers 2: token lookups from the worker itself', () => {
  it('resolves tokens never seen while the primary is stopped, each worker on its own Redis connection', { timeout: 180_000 }, async () => {
    const [stable, candidate, redis] = await Promise.all([startBackend('stable'), startBackend('candidate'), startRedis()]);
    let gateway: GatewayProcess | undefined;
    let primaryStopped = false;
    let keepAlive: Client | undefined;
    try {
      await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
      for (let i = 0; i < 20; i++) await redis.client.set(`TOKEN_fresh${i}`, String(1_000 + i));
      gateway = await startGatewayProcess({
        args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', stable.url, '--candidate', candidate.url, '--workers', '2'],
        readyWithinMs: READY_WITHIN_MS,
      });
      // Each worker opened its own lookup connection (the primary has one too).
      await eventually(
        async () => {
          const list = (await redis.client.call('CLIENT', 'LIST')) as string;
          expect(list.split('\n').filter((line) => line.includes('name=graygate-lookup')).length).toBeGreaterThanOrEqual(3);
        },
        { withinMs: 30_000 },
      );
      keepAlive = new Client(gateway.url, { keepAliveTimeout: 60_000, headersTimeout: 30_000, bodyTimeout: 30_000 });
      const ask = async (token: string) => {
        const response = await keepAlive!.request({ method: 'GET', path: '/t', headers: { TOKEN: token } });
        return ((await response.body.json()) as { version: string }).version;
      };
      // Wait until this connection's worker routes at all (a first cold lookup may pass its deadline on a loaded box).
      await eventually(async () => expect(await ask('fresh0')).toBe('candidate'), { withinMs: 30_000 });

      // The primary stopped: a worker that asked it for keys would time out and send everyone to stable.
      process.kill(gateway.pid, 'SIGSTOP');
      primaryStopped = true;
      const versions: string[] = [];
      for (let i = 1; i < 20; i++) {
        // A token this worker has not seen: a cache miss, answered by its own read.
        versions.push(await eventually(async () => {
          const version = await ask(`fresh${i}`);
          // A lookup that passed its deadline on a busy box is not cached: asking again looks it up again.
          expect(version).toBe('candidate');
          return version;
        }, { withinMs: 10_000 }));
      }
      expect(new Set(versions)).toEqual(new Set(['candidate']));
      expect(versions).toHaveLength(19);
    } finally {
      if (primaryStopped && gateway) process.kill(gateway.pid, 'SIGCONT');
      await keepAlive?.close();
      await gateway?.stop('SIGKILL');
      await Promise.all([stable.close(), candidate.close(), redis.stop()]);
    }
  });
});
