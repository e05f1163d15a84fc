import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { GraygateError } from '../../src/errors.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import { eventually } from '../helpers/eventually.js';
import { rawCommand, startSentinel, type RedisSentinel } from '../helpers/redis.js';
import { contractDocument } from './contract.js';
import { validateRouting } from './validate.js';

let sentinel: RedisSentinel;
const stores: RedisStore[] = [];

beforeAll(async () => {
  sentinel = await startSentinel({ sentinels: 1 });
});
afterAll(async () => {
  await Promise.all(stores.map((store) => store.close()));
  await sentinel?.stop();
});

function makeStore(pollMs: number): RedisStore {
  const store = createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url: sentinel.url, pollMs, commandTimeoutMs: 500 }), { validate: validateRouting });
  stores.push(store);
  return store;
}

describe('redis store via Sentinel', () => {
  it('a write, SENTINEL FAILOVER, a later write lands on the new master and the watcher hears it', async () => {
    const writer = makeStore(60_000);
    const watcher = makeStore(500);
    let heard = 0;
    const stop = watcher.watch(() => heard++);
    try {
      await eventually(() => writer.write(contractDocument(1), { expectedVersion: 0, actor: 'seed', reason: 'before failover' }), { withinMs: 10_000 });
      await eventually(async () => expect((await watcher.current()).version).toBe(1), { withinMs: 5_000 });
      const oldMaster = await sentinel.masterPort();
      expect(oldMaster).toBe(sentinel.dataPorts[0]);

      await sentinel.sentinel.call('SENTINEL', 'FAILOVER', sentinel.masterName);
      await eventually(async () => expect(await sentinel.masterPort()).toBe(sentinel.dataPorts[1]), { withinMs: 20_000, everyMs: 100 });

      // The write may meet the switch (READONLY, a dropped socket): retry it, and count it as
      // done when an earlier attempt already landed (CAS then says conflict, and the document is ours).
      const heardBefore = heard;
      await eventually(
        async () => {
          try {
            await writer.write(contractDocument(2), { expectedVersion: 1, actor: 'w', reason: 'after failover' });
          } catch (error) {
            if ((error as GraygateError).code !== 'GG_VERSION_CONFLICT') throw error;
            expect((await writer.current()).meta.reason).toBe('after failover');
          }
        },
        { withinMs: 20_000, everyMs: 100 },
      );
      // It is on the new master, with the version from before the failover kept in history.
      const newMaster = await sentinel.masterPort();
      expect(await rawCommand(newMaster, 'GET {graygate}:version')).toBe('$1\r\n2\r\n');
      expect((await writer.history()).map((h) => [h.version, h.meta.reason])).toEqual([
        [2, 'after failover'],
        [1, 'before failover'],
      ]);
      await eventually(() => expect(heard).toBeGreaterThan(heardBefore), { withinMs: 5_000 });
      await eventually(async () => expect((await watcher.current()).version).toBe(2), { withinMs: 5_000 });
      // Lookups follow the master too.
      await rawCommand(newMaster, 'SET TOKEN_failover 31');
      await eventually(async () => expect(await watcher.keyReader.readKey('TOKEN_failover', 200)).toBe('31'), { withinMs: 5_000 });
    } finally {
      stop();
    }
  });
});
