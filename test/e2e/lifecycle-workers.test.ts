import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor } from '../helpers/load.js';
import { graygate } from '../control/cli-runner.js';

const TOKEN = 'workers-token-0123456789abcdef';

/** With --workers the admin API runs once, in the primary, and its writes reach every worker. */
describe('the admin API of a gateway running two workers', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    gateway = await startGatewayProcess({
      config: {
        admin: { listen: '127.0.0.1:0', tokens: [{ name: 'ops', tokenEnv: 'GG_WORKERS_TOKEN' }] },
        upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
        identity: { sources: [{ header: { name: 'x-user-id' } }] },
        services: [{ name: 'app', stable: 'app-v1' }],
      },
      env: { GG_WORKERS_TOKEN: TOKEN, GRAYGATE_WORKERS: '2' },
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    env = { GRAYGATE_ADMIN_URL: `http://127.0.0.1:${String(line.port)}`, GRAYGATE_ADMIN_TOKEN: TOKEN };
  });

  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('starts one admin listener; a canary and full reach both workers, and drain is reported from their summed counts', async () => {
    expect(gateway.logs().filter((entry) => entry.event === 'admin-listening')).toHaveLength(1);
    const start = await graygate(['release', 'start', 'app', '--candidate', 'app-v2', '--uid-range', '1-5000', '--reason', 'canary'], env);
    expect(start.stderr).toBe('');
    // New connections each time, so the kernel spreads them over both workers.
    const answers = async (userId: string) => new Set(await Promise.all(Array.from({ length: 8 }, () => versionFor(gateway.url, { 'x-user-id': userId, connection: 'close' }))));
    await eventually(async () => expect([...(await answers('42'))]).toEqual(['candidate']), { withinMs: 5_000 });
    expect([...(await answers('9000'))]).toEqual(['stable']);
    const full = await graygate(['release', 'full', 'app', '--reason', 'everyone', '--wait-drained', '--timeout', '20000'], env);
    expect(full.stderr).toBe('');
    expect(full.code).toBe(0);
    expect(full.stdout).toContain('stable of app has drained');
    expect([...(await answers('9000'))]).toEqual(['candidate']);
  }, 90_000);
});
