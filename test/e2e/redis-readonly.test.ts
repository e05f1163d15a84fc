import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRoutingDocument } from '../../src/config/load.js';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { silentLogger } from '../../src/observe/log.js';
import { createRedisStore, redisStoreKeys } from '../../src/store/redis/redis-store.js';
import { graygate } from '../control/cli-runner.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const TOKEN = 'readonly-token-0123456789abcdef';
const NAMESPACE = 'readonly';

/**
 * A gateway whose store is a read-only replica (READONLY after a failover: the admin
 * write reports the error): a write is refused with 503 GG_STORE_READONLY, nothing is applied
 * anywhere, and the gateway keeps serving its last good routing.
 */
describe('admin writes while the gateway\'s Redis is a read-only replica', () => {
  let master: RedisServer;
  let replica: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;

  const routing = () => ({
    upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'app-v1', release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'first', uidRange: { ranges: [{ from: 1, to: 100 }] } }] } }],
  });
  const api = async (method: string, path: string, body?: unknown) => {
    const response = await request(`${adminUrl}${path}`, {
      method: method as 'GET',
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: response.statusCode, body: (await response.body.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };

  beforeAll(async () => {
    [master, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    // Version 1 is written to the master; the replica copies it.
    const seeder = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: master.url, namespace: NAMESPACE }), { validate: parseRoutingDocument, logger: silentLogger() });
    await seeder.write(parseRoutingDocument(routing(), 'test'), { expectedVersion: 0, actor: 'test', reason: 'seed' });
    await seeder.close();
    replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    await eventually(async () => expect(await replica.client.get(redisStoreKeys(NAMESPACE).version)).toBe('1'), { withinMs: 10_000 });
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: replica.url, namespace: NAMESPACE, pollMs: 1_000 },
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_READONLY_TOKEN' }] },
        ...routing(),
      },
      env: { GG_READONLY_TOKEN: TOKEN },
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(line.port)}`;
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
    await replica?.stop();
    await master?.stop();
  });

  it('refuses the write with 503 GG_STORE_READONLY, applies nothing, and keeps routing on the last good version', async () => {
    expect(await versionFor(gateway.url, { 'x-user-id': '42' })).toBe('candidate');
    expect(await versionFor(gateway.url, { 'x-user-id': '500' })).toBe('stable');

    const refused = await api('POST', '/v1/services/app/release/full', { reason: 'everyone' });
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe('GG_STORE_READONLY');
    expect(refused.body.error.message).toMatch(/read-only replica/);

    // Nothing applied: not on the master, not on the replica, not in history, not in routing.
    expect(await master.client.get(redisStoreKeys(NAMESPACE).version)).toBe('1');
    expect(await replica.client.get(redisStoreKeys(NAMESPACE).version)).toBe('1');
    const history = await api('GET', '/v1/history');
    expect(history.status).toBe(200);
    expect(history.body.versions.map((entry: { version: number }) => entry.version)).toEqual([1]);
    expect(await versionFor(gateway.url, { 'x-user-id': '500' })).toBe('stable');
    expect(await versionFor(gateway.url, { 'x-user-id': '42' })).toBe('candidate');

    // The CLI says so too, with the exit code for a failing server (3), not a crash.
    const cli = await graygate(['release', 'rollback', 'app', '--reason', 'back'], { GRAYGATE_ADMIN_URL: adminUrl, GRAYGATE_ADMIN_TOKEN: TOKEN });
    expect(cli.code).toBe(3);
    expect(cli.stderr).toContain('GG_STORE_READONLY');
    expect(await master.client.get(redisStoreKeys(NAMESPACE).version)).toBe('1');

    // Reads keep working, and so does the gateway.
    await eventually(async () => expect((await api('GET', '/v1/config')).status).toBe(200), { withinMs: 3_000 });
    const status = await api('GET', '/v1/status');
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({ version: 1, servedVersion: 1 });
    expect(await versionFor(gateway.url, { 'x-user-id': '42' })).toBe('candidate');
  }, 300_000);
});
