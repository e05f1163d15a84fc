import { afterAll, beforeAll } from 'vitest';
import { RedisStoreSettings } from '../../src/config/schema.js';
import { createRedisStore } from '../../src/store/redis/redis-store.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { contractDocument, storeContract } from './contract.js';
import { validateRouting } from './validate.js';

// One private redis-server for the suite; each store gets its own namespace, so stores never see
// each other's keys.
let redis: RedisServer;
let next = 0;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(() => redis?.stop());

storeContract('redis (standalone)', async () => {
  const settings = RedisStoreSettings.parse({ kind: 'redis', url: redis.url, namespace: `contract-${next++}`, pollMs: 200 });
  const store = createRedisStore(settings, { validate: validateRouting });
  await store.write(contractDocument(0), { expectedVersion: 0, actor: 'seed', reason: 'contract seed' });
  return { store, cleanup: () => store.close() };
});
