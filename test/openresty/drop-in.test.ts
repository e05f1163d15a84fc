import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { send, startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { SEED_TOKEN, SEED_USER_ID } from '../helpers/redis-routing.js';

// The recipe's drop-in on nginx: `graygate start --data-plane openresty --listen … --redis …
// --stable … --candidate …`. The login token in the TOKEN header is looked up in Redis
// (TOKEN_<token>) by nginx itself, the range comes from Grayscale_Range, and a change of that key
// moves users live, without a reload.
describe('the drop-in on the OpenResty data plane', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let gateway: OpenRestyGateway;

  beforeAll(async () => {
    redis = await startRedis();
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await redis.client.set(`TOKEN_${SEED_TOKEN}`, SEED_USER_ID);
    gateway = await startOpenRestyGateway({ args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', stable.url, '--candidate', candidate.url], workers: 2 });
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('sends a token whose user is in the range to the candidate, everyone else to stable', async () => {
    await eventually(async () => expect((await send(gateway.url, { headers: { TOKEN: SEED_TOKEN } })).version).toBe('candidate'));
    expect((await send(gateway.url)).version).toBe('stable');
    expect((await send(gateway.url, { headers: { TOKEN: 'no-such-token' } })).version).toBe('stable');
  });

  it('moves users live when Grayscale_Range changes, without a reload', async () => {
    const workers = gateway.workerPids().sort();
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":100}');
    await eventually(async () => {
      const answers = await Promise.all(Array.from({ length: 8 }, () => send(gateway.url, { headers: { TOKEN: SEED_TOKEN } })));
      expect(answers.map((a) => a.version)).toEqual(Array(8).fill('stable'));
    });
    expect(gateway.workerPids().sort()).toEqual(workers);
  });
});
