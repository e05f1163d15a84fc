import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { commandCounts, startRedis, type RedisServer } from '../helpers/redis.js';
import { startObserveNginx, type ObserveNginx } from './observe-nginx.js';

/**
 * token.lua inside a real nginx (two workers) against a real redis-server: tokenLookup as the
 * Node data plane does it — cache hits without Redis, one lookup per token per worker at a time,
 * a deadline for tokens never seen, stale-while-revalidate through Redis pauses and deaths, and
 * no token in any log line.
 */

const WORKERS = 2;
let redis: RedisServer;
let nginx: ObserveNginx;
const gets = async (server: RedisServer = redis) => (await commandCounts(server.client)).get ?? 0;
let tokens = 0;
/** A token no other test uses (and that never appears in a log unless leaked). */
const freshToken = (label: string) => `secret-${label}-${++tokens}-Qx7vLp2`;
const usedTokens: string[] = [];
const token = (label: string) => {
  const value = freshToken(label);
  usedTokens.push(value);
  return value;
};

beforeAll(async () => {
  redis = await startRedis();
  nginx = await startObserveNginx({ redisPort: redis.port, workers: WORKERS, tokenSource: { cacheTtlMs: 300, negativeTtlMs: 300, deadlineMs: 2_000 } });
});
afterAll(async () => {
  await nginx?.stop();
  await redis?.stop();
});

describe('token.lua', () => {
  it("the seed's scheme: TOKEN → TOKEN_<token> → uid; repeated requests answer from the caches with one GET for the whole instance", async () => {
    const patient = await startObserveNginx({ redisPort: redis.port, workers: WORKERS, tokenSource: { cacheTtlMs: 60_000 } });
    try {
      const t = token('seed');
      await redis.client.set(`TOKEN_${t}`, '1234');
      const before = await gets();
      expect(await patient.resolve(t)).toBe('1234');
      // Both workers answer (connections land on either): the second one from the shared dict.
      const answers = await Promise.all(Array.from({ length: 100 }, () => patient.resolve(t)));
      expect(new Set(answers)).toEqual(new Set(['1234']));
      expect((await gets()) - before).toBe(1);
      expect(await patient.resolve(undefined)).toBe('-');
      // Another key template: its own namespace, its own key.
      await redis.client.set(`uid:${t}:v1`, '77');
      expect(await patient.resolve(t, 'custom')).toBe('77');
      expect(await patient.resolve(t)).toBe('1234');
    } finally {
      await patient.stop();
    }
  });

  it('one lookup per token per worker at a time: 200 concurrent misses of one token make at most one GET per worker', async () => {
    const t = token('crowd');
    // The long-TTL source: a burst that outlasts a short TTL would refresh (a later, legitimate GET).
    await redis.client.set(`uid:${t}:v1`, '4242');
    const before = await gets();
    const answers = await Promise.all(Array.from({ length: 200 }, () => nginx.resolve(t, 'custom')));
    expect(new Set(answers)).toEqual(new Set(['4242']));
    const made = (await gets()) - before;
    expect(made).toBeGreaterThanOrEqual(1);
    expect(made).toBeLessThanOrEqual(WORKERS);
  });

  it('one refresh per stale token per worker at a time: a burst of stale hits makes at most one GET per worker', async () => {
    const t = token('stale-burst');
    await redis.client.set(`TOKEN_${t}`, '31');
    expect(await nginx.resolve(t)).toBe('31');
    // Past the 300 ms TTL: every answer is stale until a refresh lands.
    await new Promise((resolve) => setTimeout(resolve, 400));
    // The refreshes are slow (Redis paused) so they overlap the whole burst.
    const before = await gets();
    const startedAt = Date.now();
    redis.pause();
    let answers: string[];
    try {
      answers = await Promise.all(Array.from({ length: 100 }, () => nginx.resolve(t)));
    } finally {
      redis.resume();
    }
    expect(new Set(answers)).toEqual(new Set(['31']));
    await eventually(async () => expect(await nginx.resolve(t)).toBe('31'));
    // Never one per request: per worker one refresh at a time, each lasting up to its 1 s
    // deadline and followed by a 1 s pause when it fails (bound derived from the time taken).
    const elapsed = Date.now() - startedAt;
    expect((await gets()) - before).toBeLessThanOrEqual(WORKERS * (1 + Math.ceil(elapsed / 1_000)));
  });

  it('an unknown token is "no identity" and cached as unknown; a key that appears is found within the negative TTL plus one lookup', async () => {
    const t = token('nobody');
    expect(await nginx.resolve(t)).toBe('-');
    await redis.client.set(`TOKEN_${t}`, '55');
    await eventually(async () => expect(await nginx.resolve(t)).toBe('55'));
  });

  it('a deleted token takes effect within the TTL plus one lookup: old id until then, never anything else', async () => {
    const t = token('deleted');
    await redis.client.set(`TOKEN_${t}`, '808');
    // The entry is cached after this instant, so it is fresh for at least the TTL from it.
    const cachedAfter = Date.now();
    expect(await nginx.resolve(t)).toBe('808');
    await redis.client.del(`TOKEN_${t}`);
    const seen: string[] = [];
    await eventually(async () => {
      const answer = await nginx.resolve(t);
      seen.push(answer);
      expect(answer).toBe('-');
    });
    expect(seen.every((answer) => answer === '808' || answer === '-')).toBe(true);
    // Within the TTL the cached id still answers (nginx's clock is cached per event loop turn: a few ms of slack).
    expect(Date.now() - cachedAfter).toBeGreaterThanOrEqual(280);
  });

  it('garbage under a token key is "no identity", logged with a fingerprint, never the token', async () => {
    for (const [i, value] of ['007', 'a b', 'x'.repeat(257), 'tab\there', ''].entries()) {
      const t = token(`garbage-${i}`);
      await redis.client.set(`TOKEN_${t}`, value);
      expect(await nginx.resolve(t)).toBe('-');
    }
    await eventually(() => expect(nginx.errorLog()).toMatch(/TOKEN_<sha256:[0-9a-f]{8}> \(\d+ bytes\) is not a user id/));
  });

  it('malformed and oversized tokens are refused without a GET', async () => {
    const before = await gets();
    for (const t of ['a'.repeat(257), 'has%20space', 'brace{tag}', 'semi;colon', 'quote"d']) {
      const response = await nginx.get('/resolve', decodeURIComponent(t));
      expect(response.body.trim()).toBe('-');
    }
    expect(await gets()).toBe(before);
  });

  it('a known token keeps its uid through a Redis SIGSTOP and a kill (0 flips); a token never seen waits up to the deadline, then is stable', async () => {
    const own = await startRedis();
    const deadlineMs = 300;
    const edge = await startObserveNginx({ redisPort: own.port, workers: WORKERS, tokenSource: { cacheTtlMs: 200, negativeTtlMs: 200, deadlineMs } });
    try {
      const known = token('known');
      const unseen = token('unseen');
      await own.client.set(`TOKEN_${known}`, '1234');
      await own.client.set(`TOKEN_${unseen}`, '99');
      // Known in both workers' shared dict.
      expect(await edge.resolve(known)).toBe('1234');
      const answers: string[] = [];
      const failuresOf = async () => ((await (await fetch(edge.dumpUrl)).json()) as { token: Record<string, number> }).token.failures ?? 0;

      own.pause();
      try {
        // A never-seen token waits for its lookup, which cannot answer: stable at the deadline.
        const started = Date.now();
        expect(await edge.resolve(unseen)).toBe('-');
        expect(Date.now() - started).toBeGreaterThanOrEqual(deadlineMs - 20);
        // The known token, over many TTLs, while every refresh fails.
        const failuresBefore = await failuresOf();
        await eventually(async () => {
          answers.push(await edge.resolve(known));
          expect((await failuresOf()) - failuresBefore).toBeGreaterThanOrEqual(2);
        });
      } finally {
        own.resume();
      }
      // A timeout is not cached as unknown: once Redis answers, the token is found.
      await eventually(async () => expect(await edge.resolve(unseen)).toBe('99'));

      await own.kill();
      const failuresAtKill = await failuresOf();
      await eventually(async () => {
        answers.push(await edge.resolve(known));
        expect((await failuresOf()) - failuresAtKill).toBeGreaterThanOrEqual(2);
      });
      for (let i = 0; i < 50; i++) answers.push(await edge.resolve(known));
      expect(answers.length).toBeGreaterThan(50);
      expect(answers.filter((answer) => answer !== '1234')).toEqual([]);
      // With Redis gone a never-seen token is stable at once (connection refused), not at the deadline.
      expect(await edge.resolve(token('after-kill'))).toBe('-');
      // Failures were logged, by fingerprint.
      expect(edge.errorLog()).toMatch(/token (lookup|refresh) failed or timed out.*TOKEN_<sha256:[0-9a-f]{8}>/);
      for (const value of usedTokens) expect(edge.errorLog()).not.toContain(value);
    } finally {
      await edge.stop();
      await own.stop();
    }
  });

  it("no token value in nginx's error log", () => {
    const log = nginx.errorLog();
    expect(log.length).toBeGreaterThan(0);
    for (const value of usedTokens) expect(log).not.toContain(value);
    // Nor in the access log.
    for (const value of usedTokens) expect(nginx.accessLog()).not.toContain(value);
  });
});
