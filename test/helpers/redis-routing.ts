import { parseRoutingDocument } from '../../src/config/load.js';
import { RedisStoreSettings, type RoutingDocument } from '../../src/config/schema.js';
import { GraygateError } from '../../src/errors.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/redis-store.js';
import type { Backend } from './backend.js';
import { eventually } from './eventually.js';

/** The seed's login token and its user id (`TOKEN_HGdsakGDKSFGkgcshalGF=1234`). */
export const SEED_TOKEN = 'HGdsakGDKSFGkgcshalGF';
export const SEED_USER_ID = '1234';

/**
 * Routing by a trusted `x-user-id` header and an inclusive uid range: callers in range go to the
 * candidate. The fleet and fault tests flip `to` between 5000 (1234 in) and 100 (1234 out), so
 * the answer to one request says which version a gateway routes by.
 */
export function headerRangeRouting(stable: Backend, candidate: Backend, range: { from: number; to: number }) {
  return {
    upstreams: {
      'app-v1': { servers: [stable.url] },
      'app-v2': { servers: [candidate.url] },
    },
    identity: { sources: [{ header: { name: 'x-user-id' } }] },
    services: [{ name: 'app', stable: 'app-v1', release: { candidate: 'app-v2', state: 'canary', rules: [{ name: 'first-users', uidRange: range }] } }],
  };
}

/** A validated routing document, as a writer would store it. */
export function routingDocument(raw: unknown): RoutingDocument {
  return parseRoutingDocument(raw, 'test');
}

/** A store client for the test itself: the same compare-and-set writes the admin path uses. */
export function writerStore(url: string, namespace = 'graygate'): RedisStore {
  return createRedisStore(RedisStoreSettings.parse({ kind: 'redis', url, namespace, pollMs: 60_000, commandTimeoutMs: 1_000 }), { validate: parseRoutingDocument });
}

/**
 * Writes `document` as the version after the current one, retrying through a failover or a
 * restart (a dropped socket, READONLY) within `withinMs`. An attempt that landed although its
 * reply was lost shows up as a conflict whose current version carries our `reason`: done.
 */
export async function writeNext(store: RedisStore, document: RoutingDocument, reason: string, withinMs = 10_000): Promise<number> {
  const expected = (await eventually(() => store.current(), { withinMs })).version;
  return eventually(
    async () => {
      try {
        return (await store.write(document, { expectedVersion: expected, actor: 'test', reason })).version;
      } catch (error) {
        if ((error as GraygateError).code !== 'GG_VERSION_CONFLICT') throw error;
        const current = await store.current();
        if (current.meta.reason !== reason) throw new Error(`another writer got in: version ${current.version} (${current.meta.reason})`);
        return current.version;
      }
    },
    { withinMs, everyMs: 50 },
  );
}
