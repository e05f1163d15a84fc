/**
 * How much memory tokenLookup's caches take on the OpenResty data plane, so the conf can size the
 * shared dict for `cacheMax` tokens and docs can state the bound.
 *
 * The shared dict (one per nginx instance) holds every cached token: one node per token, its key
 * the token and its value the user id (or `false` for a known-unknown token). nginx's slab
 * allocator hands out power-of-two slots, and a node takes 68 bytes besides the key and value
 * (measured with lua-nginx-module 0.10.23 on x86_64: key + value of up to 60 bytes fill a
 * 128-byte slot, 61..188 bytes a 256-byte one). A 43-character token (256 random bits in
 * base64url) with a 17-digit id is 128 bytes; so is a 32-character hex token.
 *
 * Each worker also keeps its hot set in a lrucache of at most 100k entries (~270 bytes each,
 * measured: the Lua strings and the cache's node), ~27 MB per worker at most.
 */

/** Bytes of a shared-dict node besides its key and value. */
export const SHDICT_NODE_OVERHEAD_BYTES = 68;
/** Most entries each worker's lrucache keeps (token.lua's LRU_MAX). */
export const TOKEN_LRU_MAX_ENTRIES = 100_000;
/** Measured bytes per lrucache entry (key and value strings included), rounded up. */
export const TOKEN_LRU_ENTRY_BYTES = 280;
/** Token plus user id length the default sizing assumes (fills a 128-byte slot). */
export const DEFAULT_TOKEN_AND_ID_BYTES = 60;

/** The slab slot one cached token takes in the shared dict. */
export function tokenEntryBytes(tokenAndIdBytes = DEFAULT_TOKEN_AND_ID_BYTES): number {
  let slot = 8;
  while (slot < SHDICT_NODE_OVERHEAD_BYTES + tokenAndIdBytes) slot *= 2;
  return slot;
}

/**
 * Shared dict size (bytes) that holds `tokens` cached tokens without evicting one: the slots,
 * plus 2 % for the slab allocator's page descriptors and a page's rounding per slot size, plus
 * the dict's own fixed part.
 */
export function tokenDictBytes(tokens: number, tokenAndIdBytes = DEFAULT_TOKEN_AND_ID_BYTES): number {
  return Math.ceil(tokens * tokenEntryBytes(tokenAndIdBytes) * 1.02) + 1024 * 1024;
}

/** The same as an nginx size (`lua_shared_dict graygate_tokens <size>;`), in whole megabytes. */
export function tokenDictSize(tokens: number, tokenAndIdBytes = DEFAULT_TOKEN_AND_ID_BYTES): string {
  return `${Math.ceil(tokenDictBytes(tokens, tokenAndIdBytes) / (1024 * 1024))}m`;
}

/** Worst-case memory of the token caches of one nginx instance with `workers` workers. */
export function tokenCacheBoundBytes(tokens: number, workers: number, tokenAndIdBytes = DEFAULT_TOKEN_AND_ID_BYTES): number {
  return tokenDictBytes(tokens, tokenAndIdBytes) + workers * Math.min(tokens, TOKEN_LRU_MAX_ENTRIES) * TOKEN_LRU_ENTRY_BYTES;
}
