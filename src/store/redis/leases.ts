import type { Leases } from '../store.js';
import type { Client, RedisConnections } from './connections.js';
import { leaseKey, leaseValue, type RedisStoreKeys } from './names.js';

/**
 * Takes or extends a lease. KEYS: the lease key, the token counter. ARGV: holder, ttl ms.
 * A free lease gets the next token from the counter (INCR: it only ever grows, so a holder that
 * lost the lease can never hold a token as high as its successor's); the holder's own lease is
 * extended and keeps its token. Returns the token, or 0 when another holds it.
 */
const HOLD_SCRIPT = `
local value = redis.call('GET', KEYS[1])
if value then
  local space = string.find(value, ' ')
  if space and string.sub(value, space + 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(value, 1, space - 1))
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return token
`;

/** Deletes the lease only when it still holds ARGV[1] (the holder's own value). */
const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Leases in Redis, beside the routing document (one hash tag: the document's compare-and-set
 * checks a lease in the same script, see document.ts). A holder that stops renewing (killed,
 * partitioned) loses the lease when its time-to-live runs out, and any write it still sends is
 * refused by that check.
 */
export class RedisLeases implements Leases {
  constructor(
    private readonly connections: RedisConnections,
    private readonly control: Client,
    private readonly keys: RedisStoreKeys,
  ) {}

  async hold(name: string, holder: string, ttlMs: number): Promise<number | undefined> {
    const key = leaseKey(this.keys, name);
    const token = (await this.connections.run(this.control, `holding the ${name} lease`, (client) =>
      client.eval(HOLD_SCRIPT, 2, key, `${key}:token`, holder, String(ttlMs)),
    )) as number;
    return token > 0 ? token : undefined;
  }

  async release(name: string, holder: string, token: number): Promise<void> {
    await this.connections.run(this.control, `releasing the ${name} lease`, (client) => client.eval(RELEASE_SCRIPT, 1, leaseKey(this.keys, name), leaseValue(holder, token)));
  }

  async holder(name: string): Promise<{ holder: string; token: number } | undefined> {
    const value = await this.connections.read(this.control, `reading the ${name} lease`, (client) => client.get(leaseKey(this.keys, name)));
    if (!value) return undefined;
    const space = value.indexOf(' ');
    return { token: Number(value.slice(0, space)), holder: value.slice(space + 1) };
  }

  async putLive(key: string, value: string, ttlMs: number): Promise<void> {
    await this.connections.run(this.control, 'writing live figures', (client) => client.set(this.liveKey(key), value, 'PX', ttlMs));
  }

  async getLive(key: string): Promise<string | undefined> {
    return (await this.connections.read(this.control, 'reading live figures', (client) => client.get(this.liveKey(key)))) ?? undefined;
  }

  private liveKey(key: string): string {
    return `${leaseKey(this.keys, 'live')}:${key}`;
  }
}
