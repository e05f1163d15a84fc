import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { freePort, startRedis, type RedisServer } from '../helpers/redis.js';
import { graygate } from '../control/cli-runner.js';

const TOKEN = 'drop-in-admin-token-0123456789';

// The recipe's drop-in, grown: --admin gives it the admin API, metrics, dashboard and CLI, the
// release lifecycle runs on its Grayscale_Range rule, and the rule outlives `release finish`.
describe('drop-in mode with --admin', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-drop-in-admin-'));
  let redis: RedisServer;
  let prod: Backend;
  let gray: Backend;
  let gateway: GatewayProcess | undefined;
  let adminPort: number;
  let admin: string;

  const start = async (extra: string[] = []) =>
    startGatewayProcess({
      args: [
        '--listen', '127.0.0.1:0',
        '--redis', redis.url,
        '--stable', prod.url,
        '--candidate', gray.url,
        '--admin', `127.0.0.1:${adminPort}`,
        '--range-start', 'exclusive',
        ...extra,
      ],
      dir,
      env: { GRAYGATE_ADMIN_TOKEN: TOKEN },
      readyWithinMs: 60_000,
    });
  const cli = (...args: string[]) => graygate([...args, '--url', admin], { GRAYGATE_ADMIN_TOKEN: TOKEN });
  const caller = (token?: string) => versionFor(gateway!.url, token ? { TOKEN: token } : {});

  beforeAll(async () => {
    [redis, prod, gray] = await Promise.all([startRedis(), startBackend('prod'), startBackend('gray')]);
    await redis.client.mset('TOKEN_inside', '1234', 'TOKEN_start', '1', 'TOKEN_end', '5000', 'TOKEN_outside', '9000');
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    adminPort = await freePort();
    admin = `http://127.0.0.1:${adminPort}`;
    gateway = await start();
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([prod?.close(), gray?.close()]);
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('routes like the recipe, with the start bound exclusive: UserId > idStart and <= idEnd', async () => {
    expect(await caller('inside')).toBe('gray');
    expect(await caller('start')).toBe('prod'); // id 1 = idStart: out with an exclusive start
    expect(await caller('end')).toBe('gray'); // id 5000 = idEnd: in
    expect(await caller('outside')).toBe('prod');
    expect(await caller()).toBe('prod');
    // The boundary moves with the key, live.
    await redis.client.set('Grayscale_Range', '{"idStart":0,"idEnd":5000}');
    await eventually(async () => expect(await caller('start')).toBe('gray'), { withinMs: 10_000 });
    await redis.client.set('Grayscale_Range', '{"idStart":1234,"idEnd":5000}');
    await eventually(async () => expect(await caller('inside')).toBe('prod'), { withinMs: 10_000 });
    await redis.client.set('Grayscale_Range', '{"idStart":1,"idEnd":5000}');
    await eventually(async () => expect(await caller('inside')).toBe('gray'), { withinMs: 10_000 });
  });

  it('serves the admin API (token from the environment), metrics and the dashboard', async () => {
    const unauthorized = await graygate(['status', '--url', admin]);
    expect(unauthorized.code, unauthorized.stderr).toBe(4);
    const status = await cli('status');
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/default/);
    expect(status.stdout).toMatch(/canary/);
    const metrics = await request(`${admin}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(metrics.statusCode).toBe(200);
    expect(await metrics.body.text()).toMatch(/graygate_requests_total\{[^}]*version="candidate"/);
    const ui = await request(`${admin}/ui/`);
    expect(ui.statusCode).toBe(200);
    expect(await ui.body.text()).toMatch(/<html/i);
  });

  it('release full sends everyone to the candidate, and survives a restart (the routing lives in Redis)', async () => {
    const full = await cli('release', 'full', 'default', '--reason', 'everyone on gray');
    expect(full.code, full.stderr).toBe(0);
    await eventually(async () => expect(await caller()).toBe('gray'), { withinMs: 10_000 });
    expect(await caller('outside')).toBe('gray');

    await gateway!.stop();
    gateway = await start();
    expect(await caller()).toBe('gray');
    const status = await cli('status');
    expect(status.stdout).toMatch(/full/);
    expect(gateway.output()).not.toContain('drop-in-flags-ignored');
  });

  it('release finish returns to the range rule, and SET Grayscale_Range still decides', async () => {
    const finish = await cli('release', 'finish', 'default', '--reason', 'prod updated');
    expect(finish.code, finish.stderr).toBe(0);
    await eventually(async () => expect(await caller()).toBe('prod'), { withinMs: 10_000 });
    expect(await caller('inside')).toBe('gray');
    expect(await caller('outside')).toBe('prod');
    const status = await cli('status');
    expect(status.stdout).toMatch(/canary/);

    // The recipe's next release: a SET, no restart and no CLI.
    await redis.client.set('Grayscale_Range', '{"idStart":8000,"idEnd":9000}');
    await eventually(async () => expect(await caller('outside')).toBe('gray'), { withinMs: 10_000 });
    expect(await caller('inside')).toBe('prod');
    await redis.client.del('Grayscale_Range');
    await eventually(async () => expect(await caller('outside')).toBe('prod'), { withinMs: 10_000 });
  });

  it('a Redis that lost its data is seeded again with the routing served, the release state included', async () => {
    const full = await cli('release', 'full', 'default', '--reason', 'before the flush');
    expect(full.code, full.stderr).toBe(0);
    await eventually(async () => expect(await caller()).toBe('gray'), { withinMs: 10_000 });
    await redis.client.flushall();
    await eventually(async () => expect(JSON.parse((await redis.client.get('{graygate}:doc')) ?? 'null')).toMatchObject({ version: 1 }), { withinMs: 20_000 });
    expect(await caller()).toBe('gray');
    const status = await cli('status');
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/full/);
    const finish = await cli('release', 'finish', 'default', '--reason', 'after the flush');
    expect(finish.code, finish.stderr).toBe(0);
    await eventually(async () => expect(await caller()).toBe('prod'), { withinMs: 10_000 });
  });

  it('a restart with other flags serves the store\'s routing and says which flags it ignores', async () => {
    const other = await startBackend('other');
    try {
      await gateway!.stop();
      gateway = await startGatewayProcess({
        args: ['--listen', '127.0.0.1:0', '--redis', redis.url, '--stable', other.url, '--candidate', gray.url, '--admin', `127.0.0.1:${adminPort}`],
        dir,
        env: { GRAYGATE_ADMIN_TOKEN: TOKEN },
        readyWithinMs: 60_000,
      });
      const warning = await gateway.waitForLog((line) => line.event === 'drop-in-flags-ignored');
      expect(warning.fields).toEqual(['upstreams.stable.servers[0]']);
      expect(await caller()).toBe('prod');
    } finally {
      await other.close();
    }
  });
});

describe('drop-in flags', () => {
  it('--admin on another host without a token is refused, naming admin.listen', async () => {
    await expect(
      startGatewayProcess({
        args: ['--listen', '127.0.0.1:0', '--redis', 'redis://127.0.0.1:1', '--stable', 'http://127.0.0.1:1', '--candidate', 'http://127.0.0.1:2', '--admin', '0.0.0.0:0'],
        env: { GRAYGATE_ADMIN_TOKEN: '' },
      }),
    ).rejects.toThrow(/exited \(2\)[\s\S]*admin/);
  });

  it('--admin-token-env naming an unset variable is refused, naming the flag', async () => {
    await expect(
      startGatewayProcess({
        args: ['--listen', '127.0.0.1:0', '--redis', 'redis://127.0.0.1:1', '--stable', 'http://127.0.0.1:1', '--candidate', 'http://127.0.0.1:2', '--admin', '127.0.0.1:0', '--admin-token-env', 'GG_TEST_UNSET_TOKEN'],
      }),
    ).rejects.toThrow(/exited \(2\)[\s\S]*--admin-token-env: environment variable GG_TEST_UNSET_TOKEN is not set/);
  });

  it('--admin with --config is a usage error', async () => {
    await expect(startGatewayProcess({ config: { upstreams: {}, services: [] }, args: ['--admin', '127.0.0.1:0'] })).rejects.toThrow(/exited \(2\)[\s\S]*--admin/);
  });
});
