-- tokenLookup for the OpenResty data plane, as graygate's Node data plane does it: a login token
-- in a request header, looked up in Redis under a key built from a template (`TOKEN_{token}`),
-- whose value is the user id.
--
-- Two cache levels: a shared dict (one per nginx instance, every worker reads it, so a token is
-- looked up once per instance while it is fresh) and a per-worker lrucache in front of it (a hit
-- there costs no lock and no copy). An entry is fresh for cacheTtlMs (negativeTtlMs for an unknown
-- token), then stale for maxStaleMs: a stale answer is still served and one background lookup
-- refreshes it. So a known caller never waits for Redis: through a Redis outage, restart or
-- pause it keeps the version its token resolved to, for maxStaleMs past the TTL. Only a token
-- never seen (or forgotten) waits for a lookup, at most deadlineMs; then it is "no identity"
-- (stable). One lookup per token per worker at a time: concurrent requests for a token being
-- looked up wait for that lookup (ngx.semaphore), and a refresh counts as that lookup too.
-- A change made while Redis is up is in force within the TTL plus one lookup.
--
-- No token reaches a log line: failures name the key as `TOKEN_<sha256:1f0c9a7e>` (the first 8
-- hex digits of the token's SHA-256, as graygate's Node logs do), and error texts are scrubbed.
--
-- Use (the resolver decide.evaluate takes):
--   token.init({ redis = resp.parse_url(url), dict = "graygate_tokens" })   -- init_worker
--   local uid = token.resolve(source, value)  -- source: the normalized form's tokenLookup entry
--                                             -- (keyPrefix/keySuffix, TTLs, deadline); value: the header's value.
--   Returns the user id (a string) or nil (no identity). Must run where cosockets may yield
--   (access/content phase, timers) when the token is not cached.
local resp = require "graygate.resp"
local lrucache = require "resty.lrucache"
local semaphore = require "ngx.semaphore"

local ngx = ngx
local null = ngx.null
local re_find = ngx.re.find
local now = ngx.now
local update_time = ngx.update_time
local timer_at = ngx.timer.at
local log = ngx.log
local WARN = ngx.WARN
local type = type
local sub = string.sub
local find = string.find
local max = math.max
local min = math.min
local tostring = tostring

local _M = {}

-- The longest user id accepted (graygate's MAX_USER_ID_LENGTH).
local MAX_USER_ID_LENGTH = 256
-- Lookups and refreshes in flight at once per worker; beyond it a miss goes to stable (Redis in trouble).
local MAX_IN_FLIGHT = 10000
-- A background refresh's deadline: nobody waits for it, and on a loaded box a one-second lookup
-- succeeds where a 50 ms one often fails, which would age the entry for nothing.
local REFRESH_DEADLINE_MS = 1000
-- After a refresh fails, no refresh starts in this worker for this long: a failure is almost
-- always Redis (down, hung), not the key, and every known user's request would start one.
local REFRESH_PAUSE_AFTER_FAILURE = 1
-- Per-worker lrucache entries at most: the hot set. The shared dict holds the rest (its size in
-- nginx.conf bounds the instance's cache; see docs/openresty.md for the bytes per token).
local LRU_MAX = 100000
-- Log lines per kind per worker per window (seconds).
local LOG_WINDOW, LOG_MAX = 10, 5

local TOKEN_RE = [[^[A-Za-z0-9._~+/=-]+$]]
local USER_ID_RE = [[^[\x21-\x7e]+$]]
local LEADING_ZERO_RE = [[^0[0-9]+$]]

local settings -- Redis connection settings (resp.parse_url's table)
local dict -- the shared dict of resolved tokens
local lru_size = LRU_MAX

-- Counts of what lookups did in this worker (as graygate's TokenLookupStats); metrics.lua adds
-- them to the shared metrics and resets them.
local stats = {
    hits = 0, staleHits = 0, negativeHits = 0, lookups = 0, refreshes = 0, answered = 0,
    unknown = 0, failures = 0, timeouts = 0, garbage = 0, refused = 0, shed = 0,
}
_M.stats = stats

-- Per worker: lookups in flight by dict key ({ sema, value }); their number.
local inflight = {}
local n_inflight = 0
local refresh_paused_until = 0

-- ---------------------------------------------------------------------------------------------
-- Logging without the token.

local hex_of
do
    local ok, ffi = pcall(require, "ffi")
    local sha256
    if ok then
        pcall(ffi.cdef, "unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);")
        local found, fn = pcall(function() return ffi.C.SHA256 end)
        if found and fn then
            local buf = ffi.new("unsigned char[32]")
            sha256 = function(s)
                ffi.C.SHA256(s, #s, buf)
                return ffi.string(buf, 4)
            end
        end
    end
    -- nginx links OpenSSL's libcrypto; the sha1 fallback is only for a build without it.
    local name = sha256 and "sha256:" or "sha1:"
    local digest = sha256 or ngx.sha1_bin
    hex_of = function(secret)
        local bin = digest(secret)
        return name .. string.format("%02x%02x%02x%02x", bin:byte(1, 4))
    end
end

--- A token as logs may show it: the first 8 hex digits of its SHA-256 (`sha256:1f0c9a7e`).
_M.secret_hint = hex_of

local function describe_key(st, token)
    return st.prefix .. "<" .. hex_of(token) .. ">" .. st.suffix
end

-- Replaces every occurrence of `token` in `text` (plain, no patterns).
local function scrub(text, token)
    text = tostring(text)
    local hint
    local from = 1
    local out = {}
    while true do
        local s, e = find(text, token, from, true)
        if not s then break end
        hint = hint or hex_of(token)
        out[#out + 1] = sub(text, from, s - 1)
        out[#out + 1] = hint
        from = e + 1
    end
    if not hint then return text end
    out[#out + 1] = sub(text, from)
    return table.concat(out)
end

local windows = {}
local function log_limited(kind, msg)
    local t = now()
    local w = windows[kind]
    if not w or t - w.start >= LOG_WINDOW then
        if w and w.count > LOG_MAX then
            log(WARN, "graygate ", kind, ": ", w.count - LOG_MAX, " more like this were not logged")
        end
        w = { start = t, count = 0 }
        windows[kind] = w
    end
    w.count = w.count + 1
    if w.count <= LOG_MAX then log(WARN, "graygate ", kind, ": ", msg) end
end

-- ---------------------------------------------------------------------------------------------
-- Per source: the template split once, the TTLs in seconds, a per-worker lrucache per template.

local compiled = setmetatable({}, { __mode = "k" })
local lrus = {}

local function compile(source)
    -- The normalized form carries the key template split around the token (keyPrefix,
    -- keySuffix); graygate's config form (keyTemplate with `{token}`) is taken too.
    local prefix, suffix = source.keyPrefix, source.keySuffix
    if prefix == nil then
        local template = source.keyTemplate or "TOKEN_{token}"
        local at = find(template, "{token}", 1, true)
        if not at then error("graygate token: keyTemplate without {token}") end
        prefix, suffix = sub(template, 1, at - 1), sub(template, at + 7)
    end
    suffix = suffix or ""
    local template = prefix .. "{token}" .. suffix
    local max_stale = (source.maxStaleMs or 300000) / 1000
    local lru = lrus[template]
    if not lru then
        lru = assert(lrucache.new(min(source.cacheMax or 100000, lru_size)))
        lrus[template] = lru
    end
    local st = {
        prefix = prefix,
        suffix = suffix,
        -- Dict keys are the token itself for the default template (no string built per request);
        -- another template's tokens are namespaced by it.
        ns = template == "TOKEN_{token}" and "" or template .. "\0",
        lru = lru,
        fresh_ttl = (source.cacheTtlMs or 5000) / 1000,
        negative_ttl = (source.negativeTtlMs or 1000) / 1000,
        max_stale = max_stale,
        deadline_ms = source.deadlineMs or 50,
        max_len = source.maxTokenLength or 256,
    }
    compiled[source] = st
    return st
end

-- ---------------------------------------------------------------------------------------------
-- Redis.

-- GET of the token's key within `deadline_ms`: the raw value (ngx.null when absent), or nil, err, timed_out.
local function lookup(st, token, deadline_ms)
    update_time()
    local started = now()
    local deadline = deadline_ms / 1000
    local red, err = resp.connect(settings, deadline_ms)
    if not red then
        update_time()
        return nil, err, now() - started >= deadline
    end
    update_time()
    local left = deadline - (now() - started)
    if left <= 0 then
        resp.release(red, settings)
        return nil, "deadline passed while connecting", true
    end
    local ms = max(1, left * 1000)
    red:set_timeouts(ms, ms, ms)
    local value, gerr = red:get(st.prefix .. token .. st.suffix)
    if value == nil or value == false then
        red:close()
        update_time()
        return nil, gerr, now() - started >= deadline or gerr == "timeout"
    end
    resp.release(red, settings)
    return value
end

-- Caches what Redis answered; returns the user id or nil.
local function remember(st, key, token, value)
    stats.answered = stats.answered + 1
    if type(value) == "string" then
        local n = #value
        if n > 0 and n <= MAX_USER_ID_LENGTH and re_find(value, USER_ID_RE, "jo") and not re_find(value, LEADING_ZERO_RE, "jo") then
            dict:set(key, value, st.fresh_ttl + st.max_stale)
            st.lru:set(token, value, st.fresh_ttl)
            return value
        end
        stats.garbage = stats.garbage + 1
        log_limited("tokenLookup.garbage", "token lookup: the value under " .. describe_key(st, token)
            .. " (" .. n .. " bytes) is not a user id; the request goes to stable")
    else
        stats.unknown = stats.unknown + 1
    end
    -- Unknown (or garbage): cached as unknown, or, with negative caching off, dropped, so a
    -- refreshed entry never keeps its old id.
    if st.negative_ttl > 0 then
        dict:set(key, false, st.negative_ttl + st.max_stale)
        st.lru:set(token, false, st.negative_ttl)
    else
        dict:delete(key)
        st.lru:delete(token)
    end
    return nil
end

local function failed(st, token, err, timed_out, what)
    stats.failures = stats.failures + 1
    if timed_out then stats.timeouts = stats.timeouts + 1 end
    log_limited("tokenLookup.failed", what .. " (key " .. describe_key(st, token) .. ": " .. scrub(err, token) .. ")")
end

local function finish(key, w, value)
    inflight[key] = nil
    n_inflight = n_inflight - 1
    w.value = value
    w.done = true
    local waiting = -w.sema:count()
    if waiting > 0 then w.sema:post(waiting) end
end

local function do_refresh(premature, st, key, token, w)
    local value
    if not premature then
        local raw, err, timed_out = lookup(st, token, max(st.deadline_ms, REFRESH_DEADLINE_MS))
        if raw == nil then
            refresh_paused_until = now() + REFRESH_PAUSE_AFTER_FAILURE
            failed(st, token, err, timed_out, "token refresh failed or timed out; the last known answer is served meanwhile")
            -- Whoever waits on a failed refresh (an entry that expired meanwhile) gets the last answer.
            value = w.last
        else
            value = remember(st, key, token, raw)
        end
    end
    finish(key, w, value)
end

-- Starts one background lookup for a stale entry, unless one is in flight or a refresh failed a moment ago.
local function refresh(st, key, token, last)
    if inflight[key] then return end
    if now() < refresh_paused_until then return end
    if n_inflight >= MAX_IN_FLIGHT then
        stats.shed = stats.shed + 1
        return
    end
    local w = { sema = semaphore.new(0), last = last }
    local ok = timer_at(0, do_refresh, st, key, token, w)
    if not ok then
        -- Too many pending timers: this refresh is dropped, a later stale hit tries again.
        stats.shed = stats.shed + 1
        return
    end
    stats.refreshes = stats.refreshes + 1
    inflight[key] = w
    n_inflight = n_inflight + 1
end

-- ---------------------------------------------------------------------------------------------
-- The resolver.

--- Called once per worker (init_worker): Redis settings (resp.parse_url's table) and the shared dict's name.
function _M.init(opts)
    settings = assert(opts.redis, "graygate token: redis settings")
    dict = assert(ngx.shared[opts.dict or "graygate_tokens"], "graygate token: lua_shared_dict " .. tostring(opts.dict or "graygate_tokens") .. " is not declared")
    if opts.lru_size then lru_size = opts.lru_size end
end

--- The user id for `value` under `source` (a tokenLookup entry of the normalized form), or nil.
function _M.resolve(source, value)
    if type(value) ~= "string" then return nil end -- absent, or a repeated header (ambiguous)
    if dict == nil then
        -- A conf without token.init in init_worker: no identity (stable), never a 500.
        log_limited("tokenLookup.uninitialized", "token.init was not called in init_worker_by_lua; tokens resolve to no identity")
        return nil
    end
    local st = compiled[source] or compile(source)
    local n = #value
    if n == 0 or n > st.max_len then
        stats.refused = stats.refused + 1
        return nil
    end
    -- The warm path first: this worker's lrucache, keyed by the token itself (one lrucache per
    -- key template, so no key is built). It only holds tokens whose characters passed the check
    -- below, so a hit needs no regex and no string built per request.
    local cached = st.lru:get(value)
    if cached ~= nil then
        if cached == false then
            stats.negativeHits = stats.negativeHits + 1
            return nil
        end
        stats.hits = stats.hits + 1
        return cached
    end
    if not re_find(value, TOKEN_RE, "jo") then
        stats.refused = stats.refused + 1
        return nil
    end
    local key = st.ns == "" and value or st.ns .. value
    -- Not fresh in this worker: the shared dict has it if any worker resolved it.
    local shared = dict:get(key)
    if shared ~= nil then
        local left = dict:ttl(key) or 0
        local fresh_left = left - st.max_stale
        if fresh_left > 0 then
            st.lru:set(value, shared, fresh_left)
        else
            stats.staleHits = stats.staleHits + 1
            refresh(st, key, value, shared or nil)
        end
        if shared == false then
            stats.negativeHits = stats.negativeHits + 1
            return nil
        end
        stats.hits = stats.hits + 1
        return shared
    end
    -- Never seen, or forgotten: one lookup per token in this worker; others wait for it.
    local w = inflight[key]
    if w then
        local ok = w.sema:wait(st.deadline_ms / 1000)
        if ok or w.done then return w.value end
        return nil
    end
    if n_inflight >= MAX_IN_FLIGHT then
        stats.shed = stats.shed + 1
        return nil
    end
    stats.lookups = stats.lookups + 1
    w = { sema = semaphore.new(0) }
    inflight[key] = w
    n_inflight = n_inflight + 1
    local raw, err, timed_out = lookup(st, value, st.deadline_ms)
    local uid
    if raw == nil then
        failed(st, value, err, timed_out, "token lookup failed or timed out; the request goes to stable")
    else
        uid = remember(st, key, value, raw)
    end
    finish(key, w, uid)
    return uid
end

-- The name the data plane's access phase looks for.
_M.resolver = _M.resolve

--- Entries in this worker's lrucache for the default template and in the shared dict (for tests and the memory figures).
function _M.sizes()
    local lru = lrus["TOKEN_{token}"]
    return { lru = lru and lru:count() or 0, dict_free = dict and dict:free_space() or 0, dict_capacity = dict and dict:capacity() or 0 }
end

return _M
