-- MurmurHash3 x86 32-bit over bytes, as src/rules/hash.ts computes it (golden vectors shared).

local _M = { BUCKETS = 10000 }

-- hash(bytes, seed) -> unsigned 32-bit integer (a Lua number)
function _M.hash(bytes, seed)
    error("murmur3.hash: not implemented yet")
end

-- bucket(key, seed) -> murmur3(key, seed) % 10000; key is the UTF-8 id
function _M.bucket(key, seed)
    error("murmur3.bucket: not implemented yet")
end

return _M
