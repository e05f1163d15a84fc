import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOKEN_LRU_ENTRY_BYTES, tokenCacheBoundBytes, tokenDictSize, tokenEntryBytes } from '../../src/openresty/token-memory.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { startObserveNginx, type ObserveNginx } from './observe-nginx.js';

/**
 * The memory bound of tokenLookup's caches on the OpenResty data plane: a shared dict sized by
 * tokenDictSize(1M) holds a million cached tokens without evicting one, and what token.lua
 * writes per token is the slot the sizing assumes.
 */

const MILLION = 1_000_000;
let redis: RedisServer;
let nginx: ObserveNginx;

// Lua helpers: tokens `t<8 digits>` padded to `len` characters, ids of `idLen` digits.
const LOCATIONS = `
    location = /real {
      content_by_lua_block {
        local token = require "graygate.token"
        local dict = ngx.shared.graygate_tokens
        local n = tonumber(ngx.var.arg_n)
        local before = dict:free_space()
        local found = 0
        for i = 1, n do
          if token.resolve(SOURCE, string.format("t%08d", i) .. string.rep("x", 23)) then found = found + 1 end
        end
        ngx.say(require("cjson").encode({ found = found, used = before - dict:free_space() }))
      }
    }
    location = /fill {
      content_by_lua_block {
        local dict = ngx.shared.graygate_tokens
        local n = tonumber(ngx.var.arg_n)
        local pad = string.rep("x", tonumber(ngx.var.arg_len) - 9)
        local forcible, missing = 0, 0
        dict:flush_all()
        dict:flush_expired()
        -- What token.lua's remember() writes: key = the token, value = the id, TTL + max staleness.
        for i = 1, n do
          local ok, err, forced = dict:set(string.format("t%08d", i) .. pad, string.format("%017d", 10000000000000000 + i), 305)
          if not ok then return ngx.say("set failed: ", err) end
          if forced then forcible = forcible + 1 end
        end
        for i = 1, n do
          if dict:get(string.format("t%08d", i) .. pad) == nil then missing = missing + 1 end
        end
        collectgarbage("collect")
        local lua_before = collectgarbage("count")
        local lru = require("resty.lrucache").new(100000)
        for i = 1, 100000 do lru:set(string.format("t%08d", i) .. pad, string.format("%017d", 10000000000000000 + i), 5) end
        collectgarbage("collect")
        local lru_bytes = (collectgarbage("count") - lua_before) * 1024
        dict:flush_all()
        ngx.say(require("cjson").encode({ forcible = forcible, missing = missing, capacity = dict:capacity(), lru_per_entry = lru_bytes / 100000 }))
      }
    }`;

beforeAll(async () => {
  redis = await startRedis();
  nginx = await startObserveNginx({ redisPort: redis.port, workers: 1, tokenDictSize: tokenDictSize(MILLION), extraLocations: LOCATIONS, tokenSource: { cacheTtlMs: 5_000, maxStaleMs: 300_000 } });
});
afterAll(async () => {
  await nginx?.stop();
  await redis?.stop();
});

describe('token cache memory', () => {
  it("what token.lua caches per token (a 32-character token, a 7-digit id) is one slot of the size the sizing assumes", async () => {
    const n = 4_000;
    const pairs: string[] = [];
    for (let i = 1; i <= n; i++) pairs.push(`TOKEN_t${String(i).padStart(8, '0')}${'x'.repeat(23)}`, String(1_000_000 + i));
    await redis.client.mset(...pairs);
    const { found, used } = JSON.parse((await nginx.get(`/real?n=${n}`)).body) as { found: number; used: number };
    expect(found).toBe(n);
    // free_space counts whole 4 KiB pages: one partly used page per slot size of slack.
    expect(Math.abs(used / n - tokenEntryBytes(32 + 7))).toBeLessThanOrEqual(4096 / n + 1);
    expect(tokenEntryBytes(32 + 7)).toBe(128);
  });

  it(`a shared dict of tokenDictSize(1M) = ${tokenDictSize(MILLION)} holds a million tokens (43 characters, 17-digit ids) without evicting one`, async () => {
    const result = JSON.parse((await nginx.get(`/fill?n=${MILLION}&len=43`)).body) as { forcible: number; missing: number; capacity: number; lru_per_entry: number };
    expect(result).toMatchObject({ forcible: 0, missing: 0 });
    expect(result.capacity).toBeLessThanOrEqual(Number.parseInt(tokenDictSize(MILLION), 10) * 1024 * 1024);
    // Each worker's hot set: at most 100k entries of at most the stated size.
    expect(result.lru_per_entry).toBeLessThanOrEqual(TOKEN_LRU_ENTRY_BYTES);
    // The stated bound for an instance of 2 workers: under 200 MiB.
    expect(tokenCacheBoundBytes(MILLION, 2)).toBeLessThan(200 * 1024 * 1024);
  });
});
