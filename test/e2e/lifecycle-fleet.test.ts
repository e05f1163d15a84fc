import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { graygate } from '../control/cli-runner.js';

const TOKEN = 'fleet-token-0123456789abcdef';

/** Two gateway processes on one Redis, each with its own admin API: writes through either are one history. */
describe('admin writes across a fleet on Redis', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  const gateways: GatewayProcess[] = [];
  const adminUrls: string[] = [];

  const config = () => ({
    store: { kind: 'redis', url: redis.url, namespace: 'admin-fleet', pollMs: 2_000 },
    admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_FLEET_TOKEN' }] },
    upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'app-v1', release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'first-users', uidRange: { ranges: [{ from: 1, to: 5000 }] } }] } }],
  });

  const api = async (at: number, method: string, path: string, body?: unknown) => {
    const response = await request(`${adminUrls[at]}${path}`, {
      method: method as 'GET',
      headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: response.statusCode, body: (await response.body.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const fleetVersions = (userId: string) => Promise.all(gateways.map((gateway) => versionFor(gateway.url, { 'x-user-id': userId })));

  beforeAll(async () => {
    [redis, stable, candidate] = await Promise.all([startRedis(), startBackend('stable'), startBackend('candidate')]);
    for (let i = 0; i < 2; i++) {
      const gateway = await startGatewayProcess({ config: config(), env: { GG_FLEET_TOKEN: TOKEN } });
      gateways.push(gateway);
      const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
      adminUrls.push(`http://127.0.0.1:${String(line.port)}`);
    }
  });

  afterAll(async () => {
    await Promise.all(gateways.map((gateway) => gateway.stop()));
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('two writers at once through two gateways: one wins, the other gets 409, history shows exactly one change', async () => {
    const read = await api(0, 'GET', '/v1/config');
    expect(read.status).toBe(200);
    const withRange = (to: number) => ({
      ...read.body.document,
      services: [{ ...read.body.document.services[0], release: { ...read.body.document.services[0].release, rules: [{ name: 'first-users', uidRange: { ranges: [{ from: 1, to }] } }] } }],
    });
    const [a, b] = await Promise.all([
      api(0, 'PUT', '/v1/config', { reason: 'writer a: 1..100', version: read.body.version, document: withRange(100) }),
      api(1, 'PUT', '/v1/config', { reason: 'writer b: 1..10', version: read.body.version, document: withRange(10) }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 409]);
    const [winner, loser] = a.status === 200 ? [a, b] : [b, a];
    expect(loser.body.error.code).toBe('GG_VERSION_CONFLICT');
    const history = await api(1, 'GET', '/v1/history');
    const newer = history.body.versions.filter((entry: { version: number }) => entry.version > read.body.version);
    expect(newer).toHaveLength(1);
    expect(newer[0]).toMatchObject({ version: winner.body.version, previousVersion: read.body.version, actor: 'ops' });
    // Both gateways route by the winner's document: user 50 is inside 1..100, outside 1..10.
    const expected = winner === a ? 'candidate' : 'stable';
    await eventually(async () => expect(await fleetVersions('50')).toEqual([expected, expected]), { withinMs: 5_000 });
    expect(await fleetVersions('4000')).toEqual(['stable', 'stable']);
  });

  it('a restore through one gateway brings back version 1\'s routing on both, checked by requests', async () => {
    const env = { GRAYGATE_ADMIN_URL: adminUrls[1]!, GRAYGATE_ADMIN_TOKEN: TOKEN };
    const restored = await graygate(['restore', '1', '--reason', 'back to the first range', '--json'], env);
    expect(restored.stderr).toBe('');
    expect(JSON.parse(restored.stdout)).toMatchObject({ changed: true, actor: 'ops' });
    await eventually(async () => expect(await fleetVersions('4000')).toEqual(['candidate', 'candidate']), { withinMs: 5_000 });
    expect(await fleetVersions('5000')).toEqual(['candidate', 'candidate']);
    expect(await fleetVersions('5001')).toEqual(['stable', 'stable']);
    const diff = await api(0, 'GET', '/v1/diff?from=1');
    expect(diff.body.changes).toEqual([]);
  });

  it('with Redis gone, a write is refused with 503 GG_STORE_UNAVAILABLE (CLI exit 3) and routing stays as it was', async () => {
    await redis.kill();
    const env = { GRAYGATE_ADMIN_URL: adminUrls[0]!, GRAYGATE_ADMIN_TOKEN: TOKEN };
    const rollback = await graygate(['release', 'rollback', 'app', '--reason', 'during an outage'], env);
    expect(rollback.code).toBe(3);
    expect(rollback.stderr).toContain('GG_STORE_UNAVAILABLE');
    expect(await fleetVersions('4000')).toEqual(['candidate', 'candidate']);
    const ready = await request(`${adminUrls[0]}/readyz`);
    expect(ready.statusCode).toBe(200);
    await ready.body.dump();
  });
});
