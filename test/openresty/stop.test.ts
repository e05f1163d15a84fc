import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { send, startOpenRestyGateway, type OpenRestyGateway } from '../helpers/openresty.js';

/** Whether `pid` runs (a zombie, dead and not yet reaped, does not). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

// graygate stops nginx gracefully (SIGQUIT, then SIGTERM); an nginx that answers neither is
// killed outright, and its workers with it: killed alone, the master cannot stop them, and they
// would go on serving with no control plane behind them.
describe('stopping an nginx that does not stop', () => {
  let stable: Backend;
  let candidate: Backend;
  let gateway: OpenRestyGateway;
  let pids: number[] = [];

  beforeAll(async () => {
    [stable, candidate] = await Promise.all([startBackend('stable'), startBackend('candidate')]);
    gateway = await startOpenRestyGateway({
      config: {
        proxy: { shutdownGraceMs: 200 },
        upstreams: { 'shop-v1': { servers: [stable.url] }, 'shop-v2': { servers: [candidate.url] } },
        services: [{ name: 'shop', stable: 'shop-v1', release: { candidate: 'shop-v2', state: 'canary', rules: [{ name: 'testers', header: { name: 'x-canary', equals: '1' } }] } }],
      },
      workers: 2,
    });
  });
  afterAll(async () => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
    await gateway?.stop();
    await Promise.all([stable?.close(), candidate?.close()]);
  });

  it('kills the master and its workers when the master answers neither SIGQUIT nor SIGTERM', async () => {
    await eventually(async () => expect((await send(gateway.url)).version).toBe('stable'));
    // The first answer can come before the master has forked (and named) its second worker.
    const workers = await eventually(() => {
      const now = gateway.workerPids();
      expect(now).toHaveLength(2);
      return now;
    });
    const master = gateway.nginxPids().find((pid) => !workers.includes(pid));
    expect(master).toBeDefined();
    pids = [master!, ...workers];
    // A stopped process takes no signal but SIGKILL: the master cannot stop its workers any more.
    process.kill(master!, 'SIGSTOP');
    await gateway.stop();
    await eventually(() => expect(pids.filter(running)).toEqual([]));
  });
});
