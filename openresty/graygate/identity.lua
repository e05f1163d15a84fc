-- Who the caller is, decided as graygate's Node data plane decides it (src/identity/*.ts,
-- src/dataplane/request-facts.ts): the form's identity sources in order (header, cookie, query,
-- clientIp, tokenLookup through a resolver passed in), then the anonymous cookie; the caller's
-- address through trusted proxies (X-Forwarded-For); CIDR matching over the same 32-bit words.
--
-- Strings: Node reads header values (and so cookies) as Latin-1, one character per byte, and
-- hashes and compares the UTF-8 of those characters. Here raw bytes are parsed the same way
-- (one byte is one character) and an id or a compared value is widened from Latin-1 to UTF-8
-- only when it holds a byte >= 0x80, so ASCII values (nearly all) cost nothing. Query values are
-- decoded as URLSearchParams decodes them (percent-decoding, "+" as space, bad UTF-8 as U+FFFD).

local bit = require("bit")
local ffi = require("ffi")
local memo = require("graygate.memo")

local band, bor, lshift, rshift, tobit = bit.band, bit.bor, bit.lshift, bit.rshift, bit.tobit
local byte, sub, find, gsub, char, format = string.byte, string.sub, string.find, string.gsub, string.char, string.format
local concat = table.concat

local MAX_USER_ID_LENGTH = 256
local ANONYMOUS_KIND = "anonymous"

local _M = { MAX_USER_ID_LENGTH = MAX_USER_ID_LENGTH, ANONYMOUS_KIND = ANONYMOUS_KIND }

-- Latin-1 -> UTF-8 -----------------------------------------------------------------------------

local LATIN1 = {}
for b = 128, 255 do
    LATIN1[char(b)] = char(bor(0xc0, rshift(b, 6)), bor(0x80, band(b, 63)))
end

-- The UTF-8 of a string read as Latin-1 (what Node hashes and compares for a header value), per
-- worker for short values (ids, compared header values): a pattern find splits the trace.
local latin1_to_utf8 = memo(function(s)
    local out = s
    if find(s, "[\128-\255]") then out = gsub(s, "[\128-\255]", LATIN1) end
    return out
end, 256)
_M.latin1_to_utf8 = latin1_to_utf8

-- JavaScript's String.prototype.trim over Latin-1 characters: tab, LF, VT, FF, CR, space, NBSP.
local function js_trim(s)
    local from = find(s, "[^\t\n\v\f\r \160]")
    if not from then return "" end
    local to = #s
    while true do
        local c = byte(s, to)
        if c == 9 or c == 10 or c == 11 or c == 12 or c == 13 or c == 32 or c == 160 then to = to - 1 else break end
    end
    if from == 1 and to == #s then return s end
    return sub(s, from, to)
end
_M.js_trim = js_trim

-- Cookies ---------------------------------------------------------------------------------------

local EMPTY = setmetatable({}, { __newindex = function() error("read-only") end })

-- RFC 6265 `Cookie` header, as request-facts.ts parses it: `a=1; b=2`, names and values trimmed,
-- quotes around a value removed, the first occurrence of a name wins. Raw bytes in and out.
local function parse_cookies(header)
    if header == nil or header == "" then return EMPTY end
    local cookies = {}
    local start, length = 1, #header
    while start <= length do
        local stop = find(header, ";", start, true) or (length + 1)
        local eq = find(header, "=", start, true)
        if eq and eq > start and eq < stop then
            local name = js_trim(sub(header, start, eq - 1))
            local value = js_trim(sub(header, eq + 1, stop - 1))
            local n = #value
            if n >= 2 and byte(value, 1) == 34 and byte(value, n) == 34 then value = sub(value, 2, n - 1) end
            if name ~= "" and cookies[name] == nil then cookies[name] = value end
        end
        start = stop + 1
    end
    return cookies
end
_M.parse_cookies = parse_cookies

-- Query parameters --------------------------------------------------------------------------------

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- WHATWG "UTF-8 decode" with replacement: a valid string comes back as it is; each maximal
-- invalid subpart becomes U+FFFD (the Encoding Standard's decoder, which V8 and Node follow).
local function utf8_repair(s)
    if not find(s, "[\128-\255]") then return s end
    local out, n_out = nil, 0
    local i, n, last = 1, #s, 1
    while i <= n do
        local c = byte(s, i)
        if c < 0x80 then
            i = i + 1
        else
            local need, lower, upper = 0, 0x80, 0xbf
            if c >= 0xc2 and c <= 0xdf then need = 1
            elseif c >= 0xe0 and c <= 0xef then
                need = 2
                if c == 0xe0 then lower = 0xa0 elseif c == 0xed then upper = 0x9f end
            elseif c >= 0xf0 and c <= 0xf4 then
                need = 3
                if c == 0xf0 then lower = 0x90 elseif c == 0xf4 then upper = 0x8f end
            end
            local j, ok = i + 1, need > 0
            if ok then
                for k = 1, need do
                    local d = byte(s, j)
                    if d == nil or d < lower or d > upper then ok = false break end
                    lower, upper = 0x80, 0xbf
                    j = j + 1
                end
            end
            if ok then
                i = j
            else
                -- Invalid: the lead byte and the continuation bytes accepted so far become one U+FFFD.
                out = out or {}
                n_out = n_out + 1; out[n_out] = sub(s, last, i - 1)
                n_out = n_out + 1; out[n_out] = REPLACEMENT
                i = (need > 0) and j or (i + 1)
                last = i
            end
        end
    end
    if out == nil then return s end
    n_out = n_out + 1; out[n_out] = sub(s, last, n)
    return concat(out, "", 1, n_out)
end
_M.utf8_repair = utf8_repair

local function hex_value(c)
    if c >= 48 and c <= 57 then return c - 48 end
    if c >= 97 and c <= 102 then return c - 87 end
    if c >= 65 and c <= 70 then return c - 55 end
    return nil
end

-- application/x-www-form-urlencoded percent-decoding of one name or value ("+" is a space).
local function percent_byte(h) return char(tonumber(h, 16)) end

local function form_decode(s)
    if not find(s, "[%%+]") then return utf8_repair(s) end
    s = gsub(s, "+", " ")
    s = gsub(s, "%%(%x%x)", percent_byte)
    return utf8_repair(s)
end

-- URLSearchParams over a raw query string (without "?"): first value of each name, UTF-8 names
-- and values. The raw bytes are read as Latin-1 first, as Node's request URL string holds them.
local function parse_query(args)
    if args == nil or args == "" then return EMPTY end
    args = latin1_to_utf8(args)
    local params = {}
    local start, length = 1, #args
    while start <= length do
        local stop = find(args, "&", start, true) or (length + 1)
        if stop > start then
            local eq = find(args, "=", start, true)
            local name, value
            if eq and eq < stop then
                name, value = sub(args, start, eq - 1), sub(args, eq + 1, stop - 1)
            else
                name, value = sub(args, start, stop - 1), ""
            end
            name = form_decode(name)
            if params[name] == nil then params[name] = form_decode(value) end
        end
        start = stop + 1
    end
    return params
end
_M.parse_query = parse_query

-- Length of a UTF-8 string in UTF-16 code units (JavaScript's .length).
local function utf16_length(s)
    local n = 0
    for i = 1, #s do
        local c = byte(s, i)
        if c < 0x80 or c >= 0xc0 then n = n + 1 end
        if c >= 0xf0 then n = n + 1 end
    end
    return n
end

-- The request's values, parsed once per request on first use -------------------------------------

function _M.cookie(req, name)
    local cookies = req._cookies
    if cookies == nil then
        cookies = parse_cookies(req.headers["cookie"])
        req._cookies = cookies
    end
    return cookies[name]
end

function _M.query(req, name)
    local params = req._query
    if params == nil then
        params = parse_query(req.args)
        req._query = params
    end
    return params[name]
end

-- Addresses and CIDRs (a port of src/rules/cidr.ts) ---------------------------------------------

local MAPPED_WORD2 = 0xffff

-- Dotted-quad IPv4 in s[from, to] (inclusive) as an int32, or nil; leading zeros refused.
local function parse_v4(s, from, to)
    local value, parts, i = 0, 0, from
    while parts < 4 do
        local part_start, part = i, 0
        while i <= to do
            local c = byte(s, i)
            if c < 48 or c > 57 then break end
            part = part * 10 + (c - 48)
            i = i + 1
        end
        local digits = i - part_start
        if digits == 0 or digits > 3 or part > 255 then return nil end
        if digits > 1 and byte(s, part_start) == 48 then return nil end
        value = value * 256 + part
        parts = parts + 1
        if parts < 4 then
            if i > to or byte(s, i) ~= 46 then return nil end
            i = i + 1
        end
    end
    if i ~= to + 1 then return nil end
    return tobit(value)
end

local groups = { 0, 0, 0, 0, 0, 0, 0, 0 }

-- IPv6 in s[from, to] into words (four int32); false when malformed.
local function parse_v6(s, from, to, words)
    local count, gap, i = 0, -1, from
    if to - from + 1 >= 2 and byte(s, i) == 58 and byte(s, i + 1) == 58 then
        gap = 0
        i = i + 2
    end
    while i <= to do
        local j, value = i, 0
        while j <= to do
            local h = hex_value(byte(s, j))
            if h == nil then break end
            value = value * 16 + h
            j = j + 1
        end
        if j == i then return false end
        if j <= to and byte(s, j) == 46 then
            if count > 6 then return false end
            local v4 = parse_v4(s, i, to)
            if v4 == nil then return false end
            groups[count + 1] = rshift(v4, 16)
            groups[count + 2] = band(v4, 0xffff)
            count = count + 2
            i = to + 1
            break
        end
        if j - i > 4 or count == 8 then return false end
        count = count + 1
        groups[count] = value
        if j == to + 1 then
            i = j
            break
        end
        if byte(s, j) ~= 58 then return false end
        j = j + 1
        if j <= to and byte(s, j) == 58 then
            if gap >= 0 then return false end
            gap = count
            j = j + 1
        elseif j == to + 1 then
            return false
        end
        i = j
    end
    if gap >= 0 then
        if count > 7 then return false end
        local tail = count - gap
        for k = 0, tail - 1 do groups[8 - k] = groups[count - k] end
        for k = gap + 1, 8 - tail do groups[k] = 0 end
    elseif count ~= 8 then
        return false
    end
    for w = 1, 4 do words[w] = tobit(bor(lshift(groups[2 * w - 1], 16), groups[2 * w])) end
    return true
end

-- A zone after "%" as Node's net.isIP accepts it: none, or one or more of [0-9A-Za-z.:-].
local function is_zone(s, from, length)
    if from > length + 1 then return true end
    if from == length + 1 then return false end
    for i = from, length do
        local c = byte(s, i)
        if not ((c >= 48 and c <= 58) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) or c == 45 or c == 46) then return false end
    end
    return true
end

-- Parses an IPv4 or IPv6 address into words (IPv4 as ::ffff:a.b.c.d); 4 or 6 for the family
-- written, 0 when malformed. A zone (fe80::1%eth0) is ignored.
local function parse_address(s, words)
    local length = #s
    if length == 0 or length > 64 then return 0 end
    local stop, is_v6 = length, false
    for i = 1, length do
        local c = byte(s, i)
        if c == 58 then is_v6 = true
        elseif c == 37 then
            stop = i - 1
            break
        end
    end
    if is_v6 then
        if parse_v6(s, 1, stop, words) and is_zone(s, stop + 2, length) then return 6 end
        return 0
    end
    if stop ~= length then return 0 end
    local v4 = parse_v4(s, 1, stop)
    if v4 == nil then return 0 end
    words[1], words[2], words[3], words[4] = 0, 0, MAPPED_WORD2, v4
    return 4
end

local scratch_words = { 0, 0, 0, 0 }

function _M.is_ip_address(s)
    return parse_address(s, scratch_words) ~= 0
end

-- The answer for an address, from its text: parsing it is a loop over its characters.
local function scan_cidrs(list, ip)
    local words = scratch_words
    if parse_address(ip, words) == 0 then return false end
    local w1, w2, w3, w4 = words[1], words[2], words[3], words[4]
    if w1 == 0 and w2 == 0 and w3 == MAPPED_WORD2 then
        -- IPv4 (or IPv4-mapped): only the groups can hold it.
        local masks, nets = list.masks, list.nets
        for i = 1, list.n_masks do
            if nets[i][band(w4, masks[i])] then return true end
        end
        return false
    end
    local v6 = list.v6
    for k = 1, list.n6, 8 do
        if band(w1, v6[k + 4]) == v6[k] and band(w2, v6[k + 5]) == v6[k + 1]
            and band(w3, v6[k + 6]) == v6[k + 2] and band(w4, v6[k + 7]) == v6[k + 3] then
            return true
        end
    end
    return false
end

-- A compiled CIDR list, from the form's { v4 = {net, mask, ...}, v6 = {8 words per entry} }.
-- IPv4 networks are grouped by mask: masks[i] is a mask and nets[i] the set of networks with it
-- (net -> true), so an IPv4 address costs one table lookup per distinct prefix length (usually
-- one or two) rather than one comparison per network. That is cheaper with many networks, and it
-- keeps the request's trace whole: a loop over every network is one the trace recorder must
-- unroll when a side trace runs into it, which it gives up on past 15 iterations (the rest of the
-- request then runs in the interpreter). IPv6 entries that can hold an IPv4-mapped address (their
-- first three words admit ::ffff:) join the IPv4 groups with their last word's net and mask, so
-- an IPv4 caller never walks the IPv6 list. n4 and n6 still count the form's entries.
function _M.compile_cidrs(cidr)
    local v4, v6 = cidr.v4 or {}, cidr.v6 or {}
    local masks, nets, by_mask = {}, {}, {}
    local function add(net, mask)
        -- An entry whose net has bits outside its mask matches no address (as compared below).
        if band(net, mask) ~= net then return end
        local set = by_mask[mask]
        if set == nil then
            set = {}
            by_mask[mask] = set
            masks[#masks + 1] = mask
            nets[#masks] = set
        end
        set[net] = true
    end
    for k = 1, #v4, 2 do add(tobit(v4[k]), tobit(v4[k + 1])) end
    for k = 1, #v6, 8 do
        if band(0, v6[k + 4]) == v6[k] and band(0, v6[k + 5]) == v6[k + 1] and band(MAPPED_WORD2, v6[k + 6]) == v6[k + 2] then
            add(tobit(v6[k + 3]), tobit(v6[k + 7]))
        end
    end
    local list = { v4 = v4, v6 = v6, n4 = #v4, n6 = #v6, masks = masks, nets = nets, n_masks = #masks }
    -- The answer per address text (a proxy's or a returning caller's address repeats): parsing
    -- an address is a loop over its characters.
    list.match = memo(function(ip) return scan_cidrs(list, ip) end, 64)
    return list
end

-- True when the address `ip` is inside one of the compiled networks (false for anything that is
-- not an address).
local function cidr_match(list, ip)
    if ip == nil then return false end
    return list.match(ip)
end
_M.cidr_match = cidr_match

-- `::ffff:10.0.0.1` -> `10.0.0.1`, so X-Forwarded-For entries and the peer read as one form.
local function unwrap_mapped(ip)
    if #ip > 7 and sub(ip, 1, 7) == "::ffff:" and find(ip, ".", 8, true) then return sub(ip, 8) end
    return ip
end
_M.unwrap_mapped = unwrap_mapped

-- True when the connected peer is a configured trusted proxy (computed once per request).
local function peer_trusted(trusted, req)
    local value = req.from_trusted_proxy
    if value == nil then
        value = trusted.n4 + trusted.n6 > 0 and cidr_match(trusted, req.peer_ip) or false
        req.from_trusted_proxy = value
    end
    return value
end
_M.peer_trusted = peer_trusted

-- The caller's address as graygate trusts it: the peer, unless the peer is a trusted proxy; then
-- the right-most X-Forwarded-For entry that is not a trusted proxy, else the left-most entry.
local function client_ip(trusted, req)
    local ip = req.client_ip
    if ip ~= nil then return ip end
    ip = req.peer_ip or ""
    local xff = req.headers["x-forwarded-for"]
    if xff ~= nil and peer_trusted(trusted, req) then
        local stop, last = #xff, ip
        ip = nil
        for i = stop, 0, -1 do
            if i == 0 or byte(xff, i) == 44 then
                local entry = unwrap_mapped(js_trim(sub(xff, i + 1, stop)))
                stop = i - 1
                if entry ~= "" then
                    if not cidr_match(trusted, entry) then
                        ip = entry
                        break
                    end
                    last = entry
                end
            end
        end
        ip = ip or last
    end
    req.client_ip = ip
    return ip
end
_M.client_ip = client_ip

-- Ids ---------------------------------------------------------------------------------------------

local MAX_SAFE_INTEGER = 9007199254740991

-- Verdicts on the ids and tokens of recent requests are remembered per worker (graygate.memo):
-- a caller sends the same token (and so has the same id) request after request, and each check
-- is a scan of the value's bytes.

-- The id as a number only in canonical decimal form (7, not 007, 7.0 or -0), within 2^53 - 1.
local function scan_numeric_id(id)
    local length = #id
    if length == 0 or length > 16 then return nil end
    local start = byte(id, 1) == 45 and 2 or 1
    if start > length then return nil end
    for i = start, length do
        local c = byte(id, i)
        if c < 48 or c > 57 then return nil end
    end
    if byte(id, start) == 48 and length > start then return nil end
    local value = tonumber(id)
    if value == nil or value > MAX_SAFE_INTEGER or value < -MAX_SAFE_INTEGER then return nil end
    if value == 0 and start == 2 then return nil end
    return value
end

local numeric_id_verdict = memo(function(id) return scan_numeric_id(id) or false end, 16)

local function canonical_numeric_id(id)
    if #id > 16 then return nil end
    return numeric_id_verdict(id) or nil
end
_M.canonical_numeric_id = canonical_numeric_id

-- What a stored value must be to count as a user id: 1..256 printable ASCII characters, and a
-- number only in canonical form (`007` would alias `7`). For token resolvers as well.
local function scan_canonical_user_id(value)
    local length = #value
    if length == 0 or length > MAX_USER_ID_LENGTH then return false end
    local digits = true
    for i = 1, length do
        local c = byte(value, i)
        if c < 33 or c > 126 then return false end
        if c < 48 or c > 57 then digits = false end
    end
    if length > 1 and digits and byte(value, 1) == 48 then return false end
    return true
end

local canonical_user_id_verdict = memo(scan_canonical_user_id, MAX_USER_ID_LENGTH)

local function is_canonical_user_id(value)
    local length = #value
    if length == 0 or length > MAX_USER_ID_LENGTH then return false end
    return canonical_user_id_verdict(value)
end
_M.is_canonical_user_id = is_canonical_user_id

-- The bytes of a token (RFC 6750 b64token plus "="), 1 at their code.
local TOKEN_BYTE = ffi.new("uint8_t[256]")
for _, range in ipairs({ { 48, 57 }, { 65, 90 }, { 97, 122 } }) do
    for b = range[1], range[2] do TOKEN_BYTE[b] = 1 end
end
for b in ("-._~+/="):gmatch(".") do TOKEN_BYTE[byte(b)] = 1 end

local function scan_token(token)
    for i = 1, #token do
        if TOKEN_BYTE[byte(token, i)] == 0 then return false end
    end
    return true
end

-- A token as tokenLookup accepts it: 1..max characters of RFC 6750 b64token plus "=".
local token_verdict = memo(scan_token, 512)

local function is_well_formed_token(token, max_length)
    local length = #token
    if length == 0 or length > max_length then return false end
    return token_verdict(token)
end
_M.is_well_formed_token = is_well_formed_token

-- An id of the shape graygate mints for anonymous callers (a lower-case UUID).
local function is_anonymous_id(value)
    return #value == 36 and find(value, "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
        and not find(value, "[A-F]")
end
_M.is_anonymous_id = is_anonymous_id

-- Random UUIDs (version 4) from OpenSSL's RAND_bytes (nginx links libcrypto), else /dev/urandom.
ffi.cdef [[ int RAND_bytes(unsigned char *buf, int num); ]]
local rand_buf = ffi.new("unsigned char[16]")
local has_rand = pcall(function() return ffi.C.RAND_bytes end)

local function random_bytes()
    if has_rand and ffi.C.RAND_bytes(rand_buf, 16) == 1 then return ffi.string(rand_buf, 16) end
    local f = assert(io.open("/dev/urandom", "rb"))
    local bytes = f:read(16)
    f:close()
    return bytes
end

local function random_uuid()
    local b = { byte(random_bytes(), 1, 16) }
    b[7] = bor(band(b[7], 0x0f), 0x40)
    b[9] = bor(band(b[9], 0x3f), 0x80)
    return format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16])
end
_M.random_uuid = random_uuid

-- True when the caller reached the gateway over TLS, directly or as a trusted proxy says.
local function is_secure(trusted, req)
    if req.is_tls then return true end
    if not peer_trusted(trusted, req) then return false end
    local proto = req.headers["x-forwarded-proto"]
    if proto == nil then return false end
    local comma = find(proto, ",", 1, true)
    if comma then proto = sub(proto, 1, comma - 1) end
    return js_trim(proto):lower() == "https"
end

-- Resolving -----------------------------------------------------------------------------------------

-- A request value (raw Latin-1 bytes) as an id: none when absent, empty or too long.
local function accept_raw(value)
    if value == nil or value == "" or #value > MAX_USER_ID_LENGTH then return nil end
    return latin1_to_utf8(value)
end

local function from_source(source, kind, trusted, req, resolve_token)
    if kind == "header" then
        if source.trustedProxiesOnly and not peer_trusted(trusted, req) then return nil end
        return accept_raw(req.headers[source.name])
    elseif kind == "cookie" then
        return accept_raw(_M.cookie(req, source.name))
    elseif kind == "query" then
        local value = _M.query(req, source.name)
        if value == nil or value == "" then return nil end
        if #value > MAX_USER_ID_LENGTH and utf16_length(value) > MAX_USER_ID_LENGTH then return nil end
        return value
    elseif kind == "clientIp" then
        local ip = client_ip(trusted, req)
        if not _M.is_ip_address(ip) then return nil end
        -- A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; one caller, one id: a.b.c.d.
        return unwrap_mapped(ip)
    elseif kind == "tokenLookup" then
        local token = req.headers[source.header]
        if token == nil or not is_well_formed_token(token, source.maxTokenLength) or resolve_token == nil then return nil end
        local value = resolve_token(source, token)
        if type(value) ~= "string" or not is_canonical_user_id(value) then return nil end
        return value
    end
    return nil
end

-- Fills req.user_id, req.numeric_user_id and req.identity_source from the first source that
-- yields an id; then, with an anonymous cookie configured, a returning anonymous id
-- or (with `mint`) a new one, whose Set-Cookie value goes in req.set_cookie. A source that fails
-- gives no id.
function _M.resolve(identity, trusted, req, resolve_token, mint)
    req.user_id, req.numeric_user_id, req.identity_source = nil, nil, nil
    local sources = identity.sources
    for i = 1, #sources do
        local source = sources[i]
        local ok, value = pcall(from_source, source, source.kind, trusted, req, resolve_token)
        if ok and value ~= nil and value ~= "" then
            req.user_id = value
            req.numeric_user_id = canonical_numeric_id(value)
            req.identity_source = source.label
            return
        end
        if not ok then ngx.log(ngx.WARN, "graygate: identity source ", source.label, " failed: ", value) end
    end
    local anonymous = identity.anonymousCookie
    if anonymous == nil then return end
    local returning = _M.cookie(req, anonymous.name)
    local id
    if returning ~= nil and is_anonymous_id(returning) then
        id = returning
    else
        if not mint then return end
        id = random_uuid()
        req.set_cookie = anonymous.name .. "=" .. id .. (is_secure(trusted, req) and anonymous.secureSuffix or anonymous.plainSuffix)
    end
    req.user_id = id
    req.numeric_user_id = nil
    req.identity_source = ANONYMOUS_KIND
end

return _M
