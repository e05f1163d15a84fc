import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createAccessLog } from '../../src/observe/access-log.js';
import { createLogger } from '../../src/observe/log.js';
import type { ExchangeRecord } from '../../src/observe/request-observer.js';
import type { Decision } from '../../src/rules/snapshot.js';

const candidate: Decision = Object.freeze({ service: 'shop', version: 'candidate', upstream: 'shop-v2', candidate: 'shop-v2', reason: 'first-users', dependsOnCaller: true, vary: undefined, cachePrivate: false });

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, logger: createLogger({ destination }) };
}

const record = (upstreamName: string): ExchangeRecord => ({
  method: 'POST',
  path: '/cart',
  identitySource: 'header',
  decision: candidate,
  upstreamName,
  serverOrigin: 'http://10.0.0.5:8080',
  status: 502,
  bytesSent: 87,
  durationMs: 12.3456,
  aborted: true,
});

describe('access log lines', () => {
  it('say which version served and, after a fail-safe, which one the rules decided', async () => {
    const { lines, logger } = capture();
    const log = createAccessLog(logger, { enabled: true, sample: 1, level: 'info' });
    log.requestClosed(record('shop-v2'));
    log.requestClosed(record('shop-v1'));
    logger.flush();
    await new Promise((resolve) => setImmediate(resolve));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ event: 'access', version: 'candidate', upstream: 'shop-v2', rule: 'first-users', status: 502, bytes: 87, durationMs: 12.346, aborted: true, method: 'POST', path: '/cart', identity: 'header' });
    expect(lines[0]!.decided).toBeUndefined();
    expect(lines[1]).toMatchObject({ version: 'stable', decided: 'candidate', upstream: 'shop-v1' });
  });

  it('writes about `sample` of the requests, and nothing when disabled or below the log level', async () => {
    const { lines, logger } = capture();
    const tenth = createAccessLog(logger, { enabled: true, sample: 0.1, level: 'info' });
    for (let i = 0; i < 10_000; i++) tenth.requestClosed(record('shop-v2'));
    createAccessLog(logger, { enabled: false, sample: 1, level: 'info' }).requestClosed(record('shop-v2'));
    createAccessLog(logger, { enabled: true, sample: 1, level: 'debug' }).requestClosed(record('shop-v2'));
    logger.flush();
    await new Promise((resolve) => setImmediate(resolve));
    // Binomial(10 000, 0.1): mean 1 000, sd 30; ±200 is more than 6 sd.
    expect(lines.length).toBeGreaterThan(800);
    expect(lines.length).toBeLessThan(1_200);
  });
});
