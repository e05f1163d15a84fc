import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { parsePrometheusText, value } from './prometheus-text.js';

// Login tokens are credentials: none of them may ever reach a log line, at any level.
const KNOWN_TOKEN = 'zqKnownLoginToken4711xyz';
const UNKNOWN_TOKEN = 'zqUnknownLoginToken0815xyz';
const GARBAGE_TOKEN = 'zqGarbageValueToken2323xyz';

/**
 * One JSON access line per request carrying the decision, with the seed's token
 * identity (TOKEN header → Redis TOKEN_<token> → user id), logged at trace so every line the
 * gateway can write is written; the raw tokens must appear nowhere in its stdout or stderr.
 */
describe('access log with token identity (Redis)', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    await redis.client.set(`TOKEN_${KNOWN_TOKEN}`, '1234');
    await redis.client.set(`TOKEN_${GARBAGE_TOKEN}`, 'not a user id');
    gateway = await startGatewayProcess({
      config: {
        log: { level: 'trace' },
        store: { kind: 'redis', url: redis.url },
        admin: { listen: '127.0.0.1:0' },
        upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
        // TTLs longer than any run: the counts below are one lookup per request, and a TTL passing
        // mid-test (a loaded box) would add background refreshes, which count as store answers.
        // The deadline is generous for the same reason: the 50 ms default can pass on a loaded CI
        // box, and a timeout would be counted (and send the caller to stable) though nothing failed.
        identity: {
          sources: [{ tokenLookup: { header: 'TOKEN', keyTemplate: 'TOKEN_{token}', cacheTtlMs: 600_000, negativeTtlMs: 600_000, deadlineMs: 10_000 } }],
        },
        services: [
          {
            name: 'app',
            stable: 'app-v1',
            release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'first-users', uidRange: { ranges: [{ from: 1, to: 5000 }] } }] },
          },
        ],
      },
      readyWithinMs: 20_000,
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(line.port)}`;
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  const send = async (path: string, token?: string) => {
    const response = await request(`${gateway.url}${path}`, { headers: token === undefined ? {} : { TOKEN: token } });
    const body = await response.body.text();
    return { status: response.statusCode, headers: response.headers, body };
  };

  it('writes one JSON line per request with the decision, the identity source and no token; counts the lookups', async () => {
    // The token also rides in the query string, as a query identity source's would: it must be cut from the path.
    const first = await send(`/orders/1?access_token=${KNOWN_TOKEN}`, KNOWN_TOKEN);
    expect(JSON.parse(first.body).version).toBe('candidate');
    // Off by default: no response names the version.
    expect(first.headers['x-graygate-version']).toBeUndefined();
    expect(Object.keys(first.headers).filter((name) => name.includes('version'))).toEqual([]);
    await send('/orders/2', KNOWN_TOKEN);
    await send('/orders/3', KNOWN_TOKEN);
    expect(JSON.parse((await send('/orders/4', UNKNOWN_TOKEN)).body).version).toBe('stable');
    await send('/orders/5', UNKNOWN_TOKEN);
    expect(JSON.parse((await send('/orders/6', GARBAGE_TOKEN)).body).version).toBe('stable');
    await send('/orders/7');

    // logs() parses every line as JSON: a line that is not JSON fails here.
    const access = await eventually(() => {
      const lines = gateway.logs().filter((line) => line.event === 'access');
      expect(lines).toHaveLength(7);
      return lines;
    });
    const byPath = new Map(access.map((line) => [line.path, line]));
    expect(byPath.get('/orders/1')).toMatchObject({
      level: 30,
      msg: 'request',
      method: 'GET',
      path: '/orders/1',
      status: 200,
      service: 'app',
      version: 'candidate',
      upstream: 'app-v2',
      server: candidate.url,
      rule: 'first-users',
      identity: 'tokenLookup:token',
    });
    expect(byPath.get('/orders/1')!.bytes).toBe(Buffer.byteLength(first.body));
    expect(typeof byPath.get('/orders/1')!.durationMs).toBe('number');
    expect(typeof byPath.get('/orders/1')!.time).toBe('string');
    expect(byPath.get('/orders/4')).toMatchObject({ version: 'stable', upstream: 'app-v1', server: stable.url, rule: 'no rule matched', identity: null });
    expect(byPath.get('/orders/7')).toMatchObject({ version: 'stable', rule: 'no rule matched', identity: null, status: 200 });

    // The token cache's outcomes: each token asked of Redis once by each worker that sees it (each
    // worker has its own cache), then answered from the cache. Every token is sent once more per
    // worker, so it reaches some worker more often than there are workers: a cache that did not
    // hold could not stay within the bound.
    const workers = gateway.workers;
    for (let i = 0; i < workers; i++) for (const token of [KNOWN_TOKEN, UNKNOWN_TOKEN, GARBAGE_TOKEN]) await send(`/again/${i}`, token);
    const asked = 6 + 3 * workers;
    const metrics = await request(`${adminUrl}/metrics`);
    const samples = parsePrometheusText(await metrics.body.text());
    const lookups = (result: string) => value(samples, 'graygate_identity_lookups_total', { source: 'tokenLookup', result });
    expect([lookups('error'), lookups('timeout')]).toEqual([0, 0]);
    expect(lookups('hit') + lookups('miss')).toBe(asked);
    expect(lookups('miss')).toBeGreaterThanOrEqual(3);
    expect(lookups('miss')).toBeLessThanOrEqual(3 * workers);

    const output = gateway.output();
    for (const token of [KNOWN_TOKEN, UNKNOWN_TOKEN, GARBAGE_TOKEN]) expect(output.includes(token), `${token} appears in the gateway's output`).toBe(false);
    // The check can fail: the test process itself did see the tokens (in Redis, in the requests).
    expect(await redis.client.get(`TOKEN_${KNOWN_TOKEN}`)).toBe('1234');
  });
});
