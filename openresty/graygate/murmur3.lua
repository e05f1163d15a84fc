-- MurmurHash3, x86 32-bit variant (Austin Appleby, public domain; SMHasher's MurmurHash3_x86_32),
-- over the bytes of a Lua string, exactly as graygate's src/rules/hash.ts computes it over the
-- UTF-8 of an id: the same bytes and seed give the same hash, so a caller lands in the same
-- bucket on Node, Bun and OpenResty.
--
-- Exact 32-bit arithmetic on LuaJIT: the `bit` operations work on int32 (inputs taken modulo
-- 2^32), and a 32x32 multiply is split in 16-bit halves so no product exceeds 2^47, well inside
-- the 2^53 a double holds exactly (and the +-2^51 `bit` converts exactly).

local bit = require("bit")

local band, bor, bxor = bit.band, bit.bor, bit.bxor
local lshift, rshift, rol, tobit = bit.lshift, bit.rshift, bit.rol, bit.tobit
local byte = string.byte

local C1 = tobit(0xcc9e2d51)
local C2 = tobit(0x1b873593)
local F1 = tobit(0x85ebca6b)
local F2 = tobit(0xc2b2ae35)
local M5 = tobit(0xe6546b64)

local BUCKETS = 10000
local TWO32 = 4294967296

-- (a * b) mod 2^32 as int32, for int32 a and b.
local function mul32(a, b)
    local blo = band(b, 0xffff)
    local bhi = rshift(b, 16)
    return tobit(a * blo + lshift(a * bhi, 16))
end

-- The hash as int32 (the same 32 bits as the unsigned value).
local function hash32(s, seed)
    local h = tobit(seed)
    local len = #s
    local blocks_end = len - len % 4
    local i = 1
    while i <= blocks_end do
        local b1, b2, b3, b4 = byte(s, i, i + 3)
        local k = bor(b1, lshift(b2, 8), lshift(b3, 16), lshift(b4, 24))
        k = mul32(k, C1)
        k = rol(k, 15)
        k = mul32(k, C2)
        h = bxor(h, k)
        h = rol(h, 13)
        h = tobit(mul32(h, 5) + M5)
        i = i + 4
    end
    local rest = len - blocks_end
    if rest > 0 then
        -- Tail: the last 1-3 bytes, little endian, mixed without the h rotation.
        local k = byte(s, i)
        if rest > 1 then k = bor(k, lshift(byte(s, i + 1), 8)) end
        if rest > 2 then k = bor(k, lshift(byte(s, i + 2), 16)) end
        k = mul32(k, C1)
        k = rol(k, 15)
        k = mul32(k, C2)
        h = bxor(h, k)
    end
    h = bxor(h, len)
    h = bxor(h, rshift(h, 16))
    h = mul32(h, F1)
    h = bxor(h, rshift(h, 13))
    h = mul32(h, F2)
    h = bxor(h, rshift(h, 16))
    return h
end

local _M = { BUCKETS = BUCKETS }

-- MurmurHash3_x86_32 of the bytes of `s` with a 32-bit seed (signed or unsigned): an unsigned
-- 32-bit integer.
function _M.hash(s, seed)
    local h = hash32(s, seed)
    if h < 0 then h = h + TWO32 end
    return h
end

-- The bucket (0..9999) of a non-empty UTF-8 key: hash(key, seed) % 10000.
function _M.bucket(s, seed)
    local h = hash32(s, seed)
    if h < 0 then h = h + TWO32 end
    return h % BUCKETS
end

return _M
