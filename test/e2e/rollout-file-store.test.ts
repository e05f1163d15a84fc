import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { startLoad, versionFor } from '../helpers/load.js';

/** On the embedded file store the one gateway drives, and the run is kept in the file: a restart resumes it. */
describe('progressive rollout on the file store', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let adminUrl: string;

  const randomUser = () => ({ 'x-user-id': String(1 + Math.floor(Math.random() * 1_000_000)) });
  const api = async (method: string, path: string, body?: unknown) => {
    const response = await request(`${adminUrl}${path}`, { method: method as 'GET', headers: body !== undefined ? { 'content-type': 'application/json' } : {}, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    return { status: response.statusCode, body: (await response.body.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const start = async (dir?: string) => {
    gateway = await startGatewayProcess({
      ...(dir ? { dir } : {}),
      config: dir
        ? undefined
        : {
            admin: { listen: '127.0.0.1:0' },
            upstreams: { 'app-v1': { servers: [stable.url] }, 'app-v2': { servers: [candidate.url] } },
            identity: { sources: [{ header: { name: 'x-user-id' } }] },
            services: [
              {
                name: 'app',
                stable: 'app-v1',
                rollout: { steps: [{ percent: 25, holdMs: 500 }, { gate: true }, { percent: 75, holdMs: 500 }], analysis: { minSamples: { candidate: 10, stable: 10 }, errors: { minSamples: { candidate: 10, stable: 10 } }, latency: { p50Ratio: 1000, p99Ratio: 1000, minSamples: { candidate: 10, stable: 10 } } } },
              },
            ],
          },
      ...(dir ? { args: ['--config', `${dir}/graygate.yaml`] } : {}),
      workers: 1,
    });
    const line = await gateway.waitForLog((entry) => entry.event === 'admin-listening');
    adminUrl = `http://127.0.0.1:${String(line.port)}`;
  };

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    await start();
  });
  afterAll(async () => {
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('runs the plan to its gate, keeps the run in the file across a restart, and finishes after promote', async () => {
    const load = startLoad({ url: gateway.url, maxMs: 120_000, concurrency: 2, pauseMs: 5, headers: randomUser });
    expect((await api('POST', '/v1/services/app/rollout/start', { reason: 'ship', candidate: 'app-v2' })).status).toBe(200);
    await eventually(async () => expect((await api('GET', '/v1/services/app/rollout')).body.run.step).toBe(1), { withinMs: 60_000 });
    expect((await load.stop()).failures).toEqual([]);
    const file = parseYaml(readFileSync(gateway.configPath, 'utf8')) as { services: { rolloutRun: { step: number; status: string } }[] };
    expect(file.services[0]!.rolloutRun).toMatchObject({ step: 1, status: 'running' });

    // Restarted on the same file: the run is where it was, at the gate, not at step 1 nor in full.
    const dir = gateway.configPath.slice(0, gateway.configPath.lastIndexOf('/'));
    await gateway.stop();
    await start(dir);
    const resumed = await api('GET', '/v1/services/app/rollout');
    expect(resumed.body.run).toMatchObject({ step: 1, status: 'running' });
    expect(resumed.body.state).toBe('canary');

    const again = startLoad({ url: gateway.url, maxMs: 120_000, concurrency: 2, pauseMs: 5, headers: randomUser });
    expect((await api('POST', '/v1/services/app/rollout/promote', { reason: 'looks fine' })).status).toBe(200);
    await eventually(async () => expect((await api('GET', '/v1/services/app/rollout')).body.run.status).toBe('done'), { withinMs: 60_000 });
    expect((await again.stop()).failures).toEqual([]);
    expect((await api('GET', '/v1/services/app/release')).body.state).toBe('full');
    expect(await versionFor(gateway.url, randomUser())).toBe('candidate');
  });
});
