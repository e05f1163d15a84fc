import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisStore } from '../../src/store/redis/redis-store.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startBackgroundLoad } from '../helpers/background-load.js';
import { eventually } from '../helpers/eventually.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { versionFor, type LoadResult } from '../helpers/load.js';
import { rawCommand, startSentinel, type RedisSentinel } from '../helpers/redis.js';
import { headerRangeRouting, routingDocument, SEED_TOKEN, SEED_USER_ID, writerStore, writeNext } from '../helpers/redis-routing.js';

/**
 * Real topologies: a gateway process on `redis+sentinel://…/mymaster` through a
 * SENTINEL FAILOVER under load. No request fails, and a change written after the failover is
 * applied exactly once: not lost on the demoted master, not applied twice.
 */
describe('a gateway on Sentinel through SENTINEL FAILOVER', () => {
  let sentinel: RedisSentinel;
  let stable: Backend;
  let candidate: Backend;
  let gateway: GatewayProcess;
  let writer: RedisStore;
  const user = { 'x-user-id': '1234' };
  const applied = (version: number) => gateway.logs().filter((line) => line.version === version && /^applied routing version/.test(String(line.msg)));

  beforeAll(async () => {
    [sentinel, stable, candidate] = await Promise.all([startSentinel({ sentinels: 1 }), startBackend('stable'), startBackend('candidate')]);
    writer = writerStore(sentinel.url, 'sentinel');
    gateway = await startGatewayProcess({
      config: {
        store: { kind: 'redis', url: sentinel.url, namespace: 'sentinel', pollMs: 1_000, commandTimeoutMs: 1_000, pingMs: 500 },
        ...headerRangeRouting(stable, candidate, { from: 1, to: 5000 }),
      },
    });
  });

  afterAll(async () => {
    await gateway?.stop();
    await writer?.close();
    await Promise.all([stable?.close(), candidate?.close()]);
    await sentinel?.stop();
  });

  it('fails no request, and a change written after the failover is applied once', async () => {
    expect(await versionFor(gateway.url, user)).toBe('candidate');
    expect(applied(1)).toHaveLength(1);
    let changeWritten = false;
    let result: LoadResult;
    const load = startBackgroundLoad({
      url: gateway.url,
      headers: user,
      concurrency: 4,
      maxMs: 300_000,
      maxRequests: 200_000,
      check: (version) => version === 'candidate' || (changeWritten && version === 'stable'),
    });
    try {
      await eventually(() => expect(load.sent()).toBeGreaterThan(100), { withinMs: 5_000 });
      const oldMaster = await sentinel.masterPort();
      expect(oldMaster).toBe(sentinel.dataPorts[0]);
      await sentinel.sentinel.call('SENTINEL', 'FAILOVER', sentinel.masterName);
      await eventually(async () => expect(await sentinel.masterPort()).toBe(sentinel.dataPorts[1]), { withinMs: 20_000, everyMs: 100 });
      // The old master is demoted (a replica of the new one) before we write: the write that
      // matters is one a demoted master would have swallowed.
      await eventually(async () => expect(await rawCommand(oldMaster, 'ROLE')).toMatch(/slave/), { withinMs: 20_000, everyMs: 100 });

      changeWritten = true;
      expect(await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1, to: 100 })), 'after the failover', 20_000)).toBe(2);
      await eventually(async () => expect(await versionFor(gateway.url, user)).toBe('stable'), { withinMs: 5_000 });
      expect(load.isRunning()).toBe(true);
    } finally {
      result = await load.stop();
    }
    expect(result.failures).toEqual([]);
    expect(result.failed).toBe(0);
    expect(result.byVersion.stable).toBeGreaterThan(0);

    // A later write, applied too: by then every notice about version 2 has been handled.
    expect(await writeNext(writer, routingDocument(headerRangeRouting(stable, candidate, { from: 1000, to: 2000 })), 'third')).toBe(3);
    await eventually(async () => expect(await versionFor(gateway.url, user)).toBe('candidate'), { withinMs: 5_000 });
    await gateway.waitForLog((line) => line.version === 3 && /^applied routing version/.test(String(line.msg)));
    expect(applied(1)).toHaveLength(1);
    expect(applied(2)).toHaveLength(1);
    expect(applied(3)).toHaveLength(1);
    // Stored on the new master, with the history intact.
    expect(await rawCommand(sentinel.dataPorts[1]!, 'GET {sentinel}:version')).toBe('$1\r\n3\r\n');
    expect((await writer.history()).map((entry) => entry.version)).toEqual([3, 2, 1]);
    expect(gateway.child.exitCode).toBeNull();
  });
  it('the drop-in gateway on Sentinel: token lookups and Grayscale_Range follow a second failover', async () => {
    const master = await sentinel.masterPort();
    const onMaster = (command: string) => rawCommand(master, command);
    expect(await onMaster(`SET Grayscale_Range '{"idStart":1,"idEnd":5000}'`)).toBe('+OK\r\n');
    expect(await onMaster(`SET TOKEN_${SEED_TOKEN} ${SEED_USER_ID}`)).toBe('+OK\r\n');
    const dropIn = await startGatewayProcess({ args: ['--listen', '127.0.0.1:0', '--redis', sentinel.url, '--stable', stable.url, '--candidate', candidate.url] });
    let result: LoadResult;
    try {
      await eventually(async () => expect(await versionFor(dropIn.url, { TOKEN: SEED_TOKEN })).toBe('candidate'), { withinMs: 3_000 });
      const load = startBackgroundLoad({ url: dropIn.url, headers: { TOKEN: SEED_TOKEN }, concurrency: 2, maxMs: 300_000, maxRequests: 200_000 });
      try {
        await sentinel.sentinel.call('SENTINEL', 'FAILOVER', sentinel.masterName);
        await eventually(async () => expect(await sentinel.masterPort()).not.toBe(master), { withinMs: 20_000, everyMs: 100 });
        await eventually(async () => expect(await rawCommand(master, 'ROLE')).toMatch(/slave/), { withinMs: 20_000, everyMs: 100 });
        const newMaster = await sentinel.masterPort();
        // The range shrinks on the new master: picked up (poll) by the gateway.
        expect(await rawCommand(newMaster, `SET Grayscale_Range '{"idStart":1,"idEnd":100}'`)).toBe('+OK\r\n');
        await eventually(async () => expect(await versionFor(dropIn.url, { TOKEN: SEED_TOKEN })).toBe('stable'), { withinMs: 5_000 });
        // A token written on the new master is found.
        expect(await rawCommand(newMaster, 'SET TOKEN_afterFailover 42')).toBe('+OK\r\n');
        await eventually(async () => expect(await versionFor(dropIn.url, { TOKEN: 'afterFailover' })).toBe('candidate'), { withinMs: 5_000 });
      } finally {
        result = await load.stop();
      }
      expect(result.failures).toEqual([]);
      expect(result.failed).toBe(0);
    } finally {
      await dropIn.stop();
    }
  });
});
