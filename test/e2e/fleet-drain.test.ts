import type http from 'node:http';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { graygate } from '../control/cli-runner.js';
import { send } from '../dataplane/harness.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';

const TOKEN = 'fleet-drain-token-0123456789abcdef';

/**
 * Two gateway processes on one Redis: requests held in flight to stable through gateway A are
 * seen in the drain report read from gateway B's admin API, summed over the fleet; a gateway that
 * stops deletes its report, and one that is killed drops out after the staleness bound (3 s).
 */
describe('drain summed over a fleet on Redis', () => {
  let redis: RedisServer;
  let stable: Backend;
  let candidate: Backend;
  const gateways: GatewayProcess[] = [];
  const adminUrls: string[] = [];
  const held: http.ServerResponse[] = [];

  const config = () => ({
    store: { kind: 'redis', url: redis.url, namespace: 'fleet-drain', pollMs: 1_000 },
    admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_FLEET_DRAIN_TOKEN' }] },
    upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'app-v1', release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'first-users', uidRange: { ranges: [{ from: 1, to: 100 }] } }] } }],
  });
  const startOne = async () => {
    const gateway = await startGatewayProcess({ config: config(), env: { GG_FLEET_DRAIN_TOKEN: TOKEN } });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    gateways.push(gateway);
    adminUrls.push(`http://127.0.0.1:${String(line.port)}`);
  };
  const drainAt = async (at: number) => {
    const response = await request(`${adminUrls[at]}/v1/services/app/release/drain`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.statusCode).toBe(200);
    return (await response.body.json()) as {
      state: string;
      scope: string;
      gateways: number;
      gatewaysBehind: number;
      drained: boolean;
      inFlightRequests: number;
      stable: { upstream: string; inFlightRequests: number; openConnections: number };
      upstreams: Record<string, { inFlightRequests: number; openConnections: number }>;
    };
  };
  const releaseHeld = () => {
    for (const res of held.splice(0)) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '20' });
      res.end('{"version":"stable"}');
    }
  };

  beforeAll(async () => {
    redis = await startRedis();
    [stable, candidate] = await Promise.all([
      startBackend('stable', (req, res) => {
        if (req.url !== '/hold') return false;
        req.resume();
        held.push(res);
        return true;
      }),
      startBackend('candidate'),
    ]);
    await startOne();
    await startOne();
  });

  afterAll(async () => {
    releaseHeld();
    await Promise.all(gateways.map((gateway) => gateway.stop('SIGKILL')));
    await Promise.all([stable?.close(), candidate?.close()]);
    await redis?.stop();
  });

  it('requests held to stable through A are in B\'s drain report (scope fleet, 2 gateways); after they finish and full has settled, drained', async () => {
    await eventually(async () => expect(await drainAt(1)).toMatchObject({ scope: 'fleet', gateways: 2, state: 'canary', drained: false }), { withinMs: 5_000 });
    // User 500 is outside the canary's range: stable, through gateway A.
    const replies = [send(gateways[0]!.url, { path: '/hold', headers: { 'x-user-id': '500' } }), send(gateways[0]!.url, { path: '/hold', headers: { 'x-user-id': '501' } })];
    await eventually(() => expect(held.length).toBe(2));

    // canary → full through B's CLI, waiting for the fleet's stable to drain.
    const env = { GRAYGATE_ADMIN_URL: adminUrls[1]!, GRAYGATE_ADMIN_TOKEN: TOKEN };
    let waitedOut = false;
    const full = graygate(['release', 'full', 'app', '--reason', 'everyone', '--wait-drained', '--timeout', '20000'], env).finally(() => {
      waitedOut = true;
    });
    const seen = await eventually(
      async () => {
        const report = await drainAt(1);
        expect(report).toMatchObject({ scope: 'fleet', gateways: 2, gatewaysBehind: 0, state: 'full', drained: false, stable: { upstream: 'app-v1', inFlightRequests: 2 } });
        return report;
      },
      { withinMs: 5_000 },
    );
    expect(seen.upstreams['app-v1']!.openConnections).toBeGreaterThanOrEqual(2);
    expect(seen.upstreams['app-v2']!.inFlightRequests).toBe(0);
    // Gateway A reports the same fleet figures.
    expect(await drainAt(0)).toMatchObject({ scope: 'fleet', gateways: 2, stable: { inFlightRequests: 2 }, drained: false });
    expect(waitedOut).toBe(false);

    releaseHeld();
    const answered = await Promise.all(replies);
    expect(answered.map((reply) => reply.status)).toEqual([200, 200]);
    const result = await full;
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('app: canary → full');
    expect(result.stdout).toContain('stable of app has drained over the fleet (2 gateways): 0 requests in flight to app-v1');
    expect(result.stdout).toMatch(/app-v1 \(stable\)\s+0\s+\d+/);
    expect(await drainAt(1)).toMatchObject({ scope: 'fleet', gateways: 2, drained: true, stable: { inFlightRequests: 0 } });

    const status = await graygate(['status'], env);
    expect(status.stdout).toContain('fleet: 2 gateways reporting');
  }, 300_000);

  it('drops a gateway that stops (it deletes its report) and one that is killed (after the staleness bound)', async () => {
    await startOne();
    await eventually(async () => expect((await drainAt(0)).gateways).toBe(3), { withinMs: 5_000 });
    // Graceful stop: the report goes with it.
    expect(await gateways[2]!.stop('SIGTERM')).toBe(0);
    await eventually(async () => expect((await drainAt(0)).gateways).toBe(2), { withinMs: 1_000 });

    // Killed: no goodbye. It is counted until its last report is older than 3 s, then dropped.
    const killedAt = Date.now();
    await gateways[1]!.stop('SIGKILL');
    expect((await drainAt(0)).gateways).toBe(2);
    await eventually(async () => expect((await drainAt(0)).gateways).toBe(1), { withinMs: 6_000, everyMs: 100 });
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(2_000);
    expect(await drainAt(0)).toMatchObject({ scope: 'fleet', gateways: 1, drained: true });
  }, 300_000);
});
