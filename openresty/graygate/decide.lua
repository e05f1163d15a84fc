-- graygate's rules inside OpenResty: evaluates the normalized form graygate emits
-- (src/openresty/form.ts; field by field in docs/openresty.md). The form was validated and
-- compiled by graygate, so nothing here checks it; compile() prepares it once per form version
-- per worker (sets, sorted ranges, CIDR words, ngx.re patterns), and evaluate() is the per-request
-- path: no JSON, no string building, no closures.
--
-- Usage (the access phase):
--   local decide = require("graygate.decide")
--   local request = require("graygate.request")
--   local compiled = decide.compile(cjson.decode(form_json), cjson.decode(settings_json))  -- once per version
--   local req = request.new()                     -- one table per request, filled from ngx.var
--   local decision = decide.evaluate(compiled, req, resolve_token)
--   if not decision then return ngx.exit(404) end -- no service takes the request
--   -- decision.upstream is where to go; decision.stable_upstream on fallback
--
-- `req` fields read by evaluate (request.new() fills them from nginx; tests build them by hand):
--   host        string   Host header without port, lower case; "" when none
--   path        string   the request target's path as sent (not decoded), without the query
--   peer_ip     string   the connected peer (IPv4-mapped IPv6 unwrapped to a.b.c.d)
--   is_tls      boolean  the client's connection to nginx is TLS
--   headers     table    headers[lower-case name] -> first value, raw bytes, or nil
--   args        string   the raw query string without "?", or nil
--   now_ms      number   optional: the clock for timeWindow rules (default ngx.now() * 1000)
-- and written by evaluate (per request results; read them after it returns):
--   user_id          string  the caller's id as the rules saw it (UTF-8), or nil
--   identity_source  string  which source gave it (`header:x-user-id`, `anonymous`...), or nil
--   set_cookie       string  Set-Cookie value of a newly minted anonymous id, or nil/false
--   client_ip        string  the caller's address as graygate trusts it (computed when read)
--
-- resolve_token(source, token) -> user id string or nil: the tokenLookup source (the form's
-- source table, with keyPrefix/keySuffix, TTLs, deadline) and a well-formed token; may yield
-- (cosockets). nil means unknown (the caller gets no id from this source).
--
-- The decision: a shared, read-only table (never modify it), one per rule / split part:
--   service            string   service name
--   version            string   "stable" | "candidate"
--   upstream           string   upstream name to forward to
--   candidate          string   the candidate's upstream name when version is candidate, else nil
--   reason             string   the rule's name ("rule 2" when unnamed), "split", "idle", "full", "no rule matched"
--   depends_on_caller  boolean
--   vary               string   Vary value to add, or nil
--   private            boolean  the response must be Cache-Control: private
--   stable_upstream    string   the service's stable upstream (fail safe target)
--   stable             table    the service's stable decision (use it when the candidate cannot take the request)

local ffi = require("ffi")
local identity = require("graygate.identity")
local murmur3 = require("graygate.murmur3")
local memo = require("graygate.memo")

local byte, sub, find = string.byte, string.sub, string.find
local re_find = ngx.re.find
local fmod, abs = math.fmod, math.abs
local latin1_to_utf8 = identity.latin1_to_utf8
local bucket_of = murmur3.bucket

ffi.cdef [[ int memcmp(const void *s1, const void *s2, size_t n); ]]
local C = ffi.C

local BUCKETS = murmur3.BUCKETS
local FORMAT = "graygate-openresty/1"
local SETTINGS_FORMAT = "graygate-openresty-settings/1"

local _M = { FORMAT = FORMAT, SETTINGS_FORMAT = SETTINGS_FORMAT }

-- True when s starts with prefix (no substring is made).
local function starts_with(s, prefix)
    local n = #prefix
    return #s >= n and C.memcmp(s, prefix, n) == 0
end

-- True when s ends with suffix.
local function ends_with(s, suffix)
    local n, m = #suffix, #s
    return m >= n and C.memcmp(ffi.cast("const char *", s) + (m - n), suffix, n) == 0
end

-- Conditions: each compiles once into a function of req -----------------------------------------

local function never() return false end

local function set_of(list)
    local set = {}
    for i = 1, #list do set[list[i]] = true end
    return set
end

-- The value a value test reads, as Node compares it: header and cookie values from Latin-1, query values decoded.
local function reader(kind, name)
    if kind == "header" then
        return function(req)
            local value = req.headers[name]
            if value == nil then return nil end
            return latin1_to_utf8(value)
        end
    elseif kind == "cookie" then
        return function(req)
            local value = identity.cookie(req, name)
            if value == nil then return nil end
            return latin1_to_utf8(value)
        end
    end
    return function(req) return identity.query(req, name) end
end

local compile_condition

local function compile_value_test(c)
    local read = reader(c.kind, c.name)
    if c.present then
        return function(req) return read(req) ~= nil end
    elseif c.equals ~= nil then
        local expected = c.equals
        return function(req) return read(req) == expected end
    elseif c.oneOf ~= nil then
        local allowed = set_of(c.oneOf)
        return function(req)
            local value = read(req)
            return value ~= nil and allowed[value] == true
        end
    elseif c.prefix ~= nil then
        local prefix = c.prefix
        return function(req)
            local value = read(req)
            return value ~= nil and starts_with(value, prefix)
        end
    end
    local pattern = c.regex
    return function(req)
        local value = read(req)
        if value == nil then return false end
        -- The form's pattern is PCRE translated from the JavaScript one; values are valid UTF-8.
        local from = re_find(value, pattern, "jou")
        return from ~= nil
    end
end

local function compile_all(children, is_all)
    local n = #children
    if n == 1 then return children[1] end
    if n == 2 then
        local a, b = children[1], children[2]
        if is_all then return function(req) return a(req) and b(req) end end
        return function(req) return a(req) or b(req) end
    end
    if is_all then
        return function(req)
            for i = 1, n do if not children[i](req) then return false end end
            return true
        end
    end
    return function(req)
        for i = 1, n do if children[i](req) then return true end end
        return false
    end
end

-- The bucket of an id under one seed, remembered for recent ids of at most 64 bytes
-- (graygate.memo): a caller sends the same id request after request, and hashing is a loop over
-- the id's bytes, which ends the request's trace ("loop unroll limit reached").
local function bucket_memo(seed)
    return memo(function(id) return bucket_of(id, seed) end, 64)
end

-- Index of the last element of sorted that is <= value; 0 when every element is above it.
local function last_at_or_below(sorted, value)
    local low, high, found = 1, #sorted, 0
    while low <= high do
        local mid = math.floor((low + high) / 2)
        if sorted[mid] <= value then
            found = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    return found
end

function compile_condition(c, trusted)
    local kind = c.kind
    if kind == "all" or kind == "any" then
        local children = {}
        for i = 1, #c.of do children[i] = compile_condition(c.of[i], trusted) end
        return compile_all(children, kind == "all")
    elseif kind == "not" then
        local inner = compile_condition(c.of, trusted)
        return function(req) return not inner(req) end
    elseif kind == "never" then
        return never
    elseif kind == "uidRange" then
        local from, to = c.from, c.to
        if #from == 1 then
            -- One range (the usual case, e.g. a range read from a store key): two comparisons,
            -- no search loop for the JIT to unroll.
            local low, high = from[1], to[1]
            return function(req)
                local id = req.numeric_user_id
                return id ~= nil and id >= low and id <= high
            end
        end
        return function(req)
            local id = req.numeric_user_id
            if id == nil then return false end
            local i = last_at_or_below(from, id)
            return i > 0 and id <= to[i]
        end
    elseif kind == "uidList" then
        local set = set_of(c.ids)
        return function(req)
            local id = req.user_id
            return id ~= nil and set[id] == true
        end
    elseif kind == "uidModulo" then
        local modulo, remainders = c.modulo, set_of(c.remainders)
        return function(req)
            local id = req.numeric_user_id
            -- fmod is exact for integers (a floored a - floor(a/b)*b is not near 2^53).
            return id ~= nil and remainders[fmod(abs(id), modulo)] == true
        end
    elseif kind == "percentage" then
        local cut, bucket = c.cut, bucket_memo(c.seed)
        if cut >= BUCKETS then
            -- 100 % needs no hash, but still an identity.
            return function(req)
                local id = req.user_id
                return id ~= nil and id ~= ""
            end
        end
        return function(req)
            local id = req.user_id
            -- Never hash an empty key: every such caller would share one bucket.
            if id == nil or id == "" then return false end
            return bucket(id) < cut
        end
    elseif kind == "header" or kind == "cookie" or kind == "query" then
        return compile_value_test(c)
    elseif kind == "cidr" then
        local list = identity.compile_cidrs(c)
        local cidr_match, client_ip = identity.cidr_match, identity.client_ip
        return function(req) return cidr_match(list, client_ip(trusted, req)) end
    elseif kind == "timeWindow" then
        local from_ms, to_ms = c.fromMs or -math.huge, c.toMs or math.huge
        return function(req)
            local now = req.now_ms or ngx.now() * 1000
            return now >= from_ms and now < to_ms
        end
    end
    error("graygate: unknown condition kind " .. tostring(kind))
end

-- Services --------------------------------------------------------------------------------------

local function make_decision(name, d, stable_upstream)
    return {
        service = name,
        version = d.version,
        upstream = d.upstream,
        candidate = d.version == "candidate" and d.upstream or nil,
        reason = d.reason,
        depends_on_caller = d.dependsOnCaller == true,
        vary = d.vary,
        private = d.private == true,
        stable_upstream = stable_upstream,
    }
end

-- The rules in order as ONE function without a loop: `if m1(req) then return d1 end if m2(req)
-- ...`, generated once per form version. A loop over the rules calls a different function on
-- each turn, so LuaJIT records it as a trace of its own, and that trace cannot return into the
-- access phase's frame ("NYI: return to lower frame"): past a few rules the rest of every request
-- then ran in the interpreter. Straight-line code is recorded into the request's trace as it is.
-- A generated function reaches its matchers and decisions as upvalues (LuaJIT allows 60), so long
-- lists are cut into blocks of RULES_PER_BLOCK, chained the same way.
local RULES_PER_BLOCK = 24

local function chain_source(n, of_blocks)
    local out = { "local m, d = ...\n" }
    for i = 1, n do
        out[#out + 1] = "local m" .. i .. " = m[" .. i .. "]\n"
        if not of_blocks then out[#out + 1] = "local d" .. i .. " = d[" .. i .. "]\n" end
    end
    out[#out + 1] = "return function(req)\n"
    for i = 1, n do
        if of_blocks then
            out[#out + 1] = "local found = m" .. i .. "(req) if found ~= nil then return found end\n"
        else
            out[#out + 1] = "if m" .. i .. "(req) then return d" .. i .. " end\n"
        end
    end
    out[#out + 1] = "return nil\nend\n"
    return table.concat(out)
end

local function chain(fns, results)
    local f = assert(load(chain_source(#fns, results == nil), "=graygate.rules"))
    return f(fns, results)
end

--- A function of req returning the decision of the first rule that matches, or nil.
local function first_match(matchers, decisions)
    local n = #matchers
    if n <= RULES_PER_BLOCK then return chain(matchers, decisions) end
    local blocks = {}
    for from = 1, n, RULES_PER_BLOCK do
        local m, d = {}, {}
        for i = from, math.min(n, from + RULES_PER_BLOCK - 1) do
            m[#m + 1], d[#d + 1] = matchers[i], decisions[i]
        end
        blocks[#blocks + 1] = chain(m, d)
    end
    while #blocks > RULES_PER_BLOCK do
        local outer = {}
        for from = 1, #blocks, RULES_PER_BLOCK do
            local part = {}
            for i = from, math.min(#blocks, from + RULES_PER_BLOCK - 1) do part[#part + 1] = blocks[i] end
            outer[#outer + 1] = chain(part)
        end
        blocks = outer
    end
    return chain(blocks)
end
_M.first_match = first_match

local function compile_service(s, trusted)
    local stable = make_decision(s.name, s.stableDecision, s.stable)
    local function decision(d)
        local made = make_decision(s.name, d, s.stable)
        made.stable = stable
        return made
    end
    stable.stable = stable
    local service = { name = s.name, stable = stable, needs_identity = s.needsIdentity == true }
    if s.fixed then
        service.fixed = decision(s.fixed)
        return service
    end
    local matchers, decisions = {}, {}
    for i = 1, #s.rules do
        matchers[i] = compile_condition(s.rules[i].when, trusted)
        decisions[i] = decision(s.rules[i].decision)
    end
    service.first_match = first_match(matchers, decisions)
    service.no_match = decision(s.noMatch)
    local split = s.split
    if split then
        local parts = {}
        for i = 1, #split.decisions do parts[i] = decision(split.decisions[i]) end
        service.split = { seed = split.seed, bucket = bucket_memo(split.seed), from = split.from, to = split.to, parts = parts, n = #parts, stable = decision(split.stable) }
    end
    return service
end

-- Host and path matching (src/rules/host-path.ts): exact host, then wildcard hosts (longest
-- suffix first), then services without a host; within a tier the longest whole-segment prefix.

local function prefix_matches(prefix, path)
    if #prefix == 1 then return true end
    if not starts_with(path, prefix) then return false end
    return #path == #prefix or byte(path, #prefix + 1) == 47
end

local function prefix_table(entries)
    table.sort(entries, function(a, b) return #a.prefix > #b.prefix end)
    return entries
end

local function lookup(entries, path)
    if entries == nil then return nil end
    for i = 1, #entries do
        local e = entries[i]
        if prefix_matches(e.prefix, path) then return e.service end
    end
    return nil
end

local function build_matcher(form_services, services)
    local exact, wildcard, any = {}, {}, {}
    for i = 1, #form_services do
        local s = form_services[i]
        local entry = { prefix = s.pathPrefix, service = services[i] }
        local host = s.host
        if host == nil then
            any[#any + 1] = entry
        elseif sub(host, 1, 2) == "*." then
            local suffix = sub(host, 2)
            wildcard[suffix] = wildcard[suffix] or {}
            table.insert(wildcard[suffix], entry)
        else
            exact[host] = exact[host] or {}
            table.insert(exact[host], entry)
        end
    end
    for host, entries in pairs(exact) do exact[host] = prefix_table(entries) end
    local suffixes = {}
    for suffix, entries in pairs(wildcard) do suffixes[#suffixes + 1] = { suffix = suffix, entries = prefix_table(entries) } end
    table.sort(suffixes, function(a, b) return #a.suffix > #b.suffix end)
    return { exact = exact, suffixes = suffixes, n_suffixes = #suffixes, any = prefix_table(any) }
end

local function match_service(m, host, path)
    local found = lookup(m.exact[host], path)
    if found then return found end
    local suffixes = m.suffixes
    for i = 1, m.n_suffixes do
        local w = suffixes[i]
        -- Longer than the suffix: `*.example.com` needs at least one label in front.
        if #host > #w.suffix and ends_with(host, w.suffix) then
            found = lookup(w.entries, path)
            if found then return found end
        end
    end
    return lookup(m.any, path)
end

-- The API -----------------------------------------------------------------------------------------

function _M.compile(form, settings)
    if type(form) ~= "table" or form.format ~= FORMAT then
        return nil, "not a graygate-openresty/1 form (format " .. tostring(type(form) == "table" and form.format) .. ")"
    end
    if settings ~= nil and settings.format ~= SETTINGS_FORMAT then
        return nil, "not graygate-openresty-settings/1 settings (format " .. tostring(settings.format) .. ")"
    end
    local trusted = identity.compile_cidrs(settings and settings.trustedProxies or {})
    local services = {}
    for i = 1, #form.services do services[i] = compile_service(form.services[i], trusted) end
    return {
        version = form.version,
        epoch = form.epoch,
        form = form,
        upstreams = form.upstreams,
        identity = form.identity,
        trusted = trusted,
        version_header = settings and settings.versionHeader or nil,
        services = services,
        matcher = build_matcher(form.services, services),
    }
end

local function decide_service(compiled, service, req, resolve_token)
    if service.needs_identity then
        identity.resolve(compiled.identity, compiled.trusted, req, resolve_token, true)
    end
    local matched = service.first_match(req)
    if matched ~= nil then return matched end
    local split = service.split
    if split == nil then return service.no_match end
    local id = req.user_id
    if id == nil or id == "" then return service.no_match end
    local bucket = split.bucket(id)
    local from, to = split.from, split.to
    for i = 1, split.n do
        if bucket >= from[i] and bucket < to[i] then return split.parts[i] end
    end
    return split.stable
end

function _M.evaluate(compiled, req, resolve_token)
    local service = match_service(compiled.matcher, req.host or "", req.path or "/")
    if service == nil then return nil end
    req.service = service.name
    local fixed = service.fixed
    if fixed then return fixed end
    local ok, decision = pcall(decide_service, compiled, service, req, resolve_token)
    if ok then return decision end
    -- Deciding is pure and should not fail; if it does, the request still succeeds, on stable.
    ngx.log(ngx.ERR, "graygate: deciding failed for service ", service.name, "; routing to stable: ", decision)
    return service.stable
end

-- `private` plus the upstream's directives, minus those that address shared caches (RFC 9111
-- §5.2.2: public, s-maxage, proxy-revalidate) and any earlier private; as decision-headers.ts.
local function private_cache_control(existing)
    if existing == nil then return "private" end
    if type(existing) == "table" then existing = table.concat(existing, ", ") end
    local out = { "private" }
    local start, length = 1, #existing
    while start <= length + 1 do
        local stop = find(existing, ",", start, true) or (length + 1)
        -- A quoted value may hold a comma (private="a, b"): extend to the closing quote.
        local quote = find(existing, '"', start, true)
        if quote and quote < stop then
            local close = find(existing, '"', quote + 1, true)
            if close and close > stop then stop = find(existing, ",", close, true) or (length + 1) end
        end
        local directive = identity.js_trim(sub(existing, start, stop - 1))
        start = stop + 1
        if directive ~= "" then
            local eq = find(directive, "=", 1, true)
            local name = identity.js_trim(eq and sub(directive, 1, eq - 1) or directive):lower()
            if name ~= "public" and name ~= "s-maxage" and name ~= "proxy-revalidate" and name ~= "private" then
                out[#out + 1] = directive
            end
        end
    end
    return table.concat(out, ", ")
end
_M.private_cache_control = private_cache_control

function _M.apply_headers(compiled, decision, req, served_upstream, headers)
    local version_header = compiled.version_header
    if version_header then
        local served = decision.version
        if served == "candidate" and served_upstream ~= nil and served_upstream ~= decision.upstream then served = "stable" end
        headers[version_header] = served
    end
    local vary = decision.vary
    if vary then
        local existing = headers["Vary"]
        if type(existing) == "table" then existing = table.concat(existing, ", ") end
        headers["Vary"] = (existing == nil or existing == "") and vary or (existing .. ", " .. vary)
    end
    local minted = req.set_cookie
    -- A response that hands out an id cookie must never be served from a shared cache to others.
    if decision.private or minted then headers["Cache-Control"] = private_cache_control(headers["Cache-Control"]) end
    if minted then
        local existing = headers["Set-Cookie"]
        if existing == nil then
            headers["Set-Cookie"] = minted
        elseif type(existing) == "table" then
            local all = {}
            for i = 1, #existing do all[i] = existing[i] end
            all[#all + 1] = minted
            headers["Set-Cookie"] = all
        else
            headers["Set-Cookie"] = { existing, minted }
        end
    end
end

return _M
