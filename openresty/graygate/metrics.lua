-- Per-request metrics of the OpenResty data plane, in a shared dict every worker adds to, with
-- the same series, labels and buckets as graygate's Node data plane (src/observe/metrics.ts):
--
--   graygate_requests_total{service, version, status_class, upstream}
--   graygate_request_duration_seconds{service, version}          (histogram)
--   graygate_fallback_total{service, from, to, reason}
--   graygate_upstream_errors_total{upstream, kind}
--   graygate_upstream_ejections_total{upstream}
--   graygate_identity_lookups_total{source="tokenLookup", result}
--   requests in flight per upstream (the drain report's figure)
--
-- `dump()` (an internal, loopback-only location) answers them as JSON in prom-client's own form
-- (getMetricsAsJSON), so graygate's control plane sums them with its own registry exactly as it
-- sums its Node workers'. Label values come from the config (service and upstream names) or a
-- fixed set, never from a request, so the number of series is bounded.
--
-- Phase wiring (one call style; `g` is the request's state table, kept in ngx.ctx):
--   access:   metrics.started(upstream, g, decision)   -- the upstream chosen for the decision
--   balancer: metrics.moved(upstream, g)               -- an attempt goes elsewhere (stable, after a fallback)
--             metrics.fallback(service, from, to, reason) -- reason: no_server | unhealthy | connect_failure
--             metrics.upstream_failed(upstream, kind)  -- kind: connect | timeout | reset | other
--             metrics.ejected(upstream)
--   log:      metrics.log_vars(g)                      -- g nil (lost to an internal redirect, or no
--                                                         decision): read from the $gg_* variables
--
-- graygate's rollout analysis reads per-version figures from the same dump (`figures`: requests,
-- 5xx, fallbacks as candidate failures, and a latency histogram in the analysis's own buckets).
--
-- Per request: one shared-dict increment (in flight +1, in the access phase). The rest (in flight
-- -1, status class, duration bucket, duration sum, rollout latency bucket) are counted in this
-- worker's tables and added to the dict by a timer every FLUSH_INTERVAL (flush): a shared-dict
-- increment locks the dict and hashes its key, and the log phase's five cost more than all of its
-- other work. No string is built and nothing is decoded per request.
local cjson = require "cjson.safe"

local ngx = ngx
local now = ngx.now
local req_start = ngx.req.start_time
local floor = math.floor
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local tostring = tostring
local concat = table.concat
local insert = table.insert
local byte = string.byte
-- The first byte of a request-count key (see the key kinds below).
local R_BYTE = 82

local _M = {}

-- Seconds: graygate's DURATION_BUCKETS_SECONDS.
local BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local NBUCKETS = #BUCKETS
-- The rollout analysis's latency bounds in ms (graygate's LATENCY_BOUNDS_MS, given to init by the
-- conf graygate writes, so the two cannot drift). Bucket b (0-based) holds (LAT[b], LAT[b + 1]];
-- bucket NLAT holds everything above the last bound. Without them no per-version figures are kept.
local LAT
local NLAT = 0
local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local SEP = "\31"

local dict

-- Key kinds (first character): R requests, B bucket, S sum, L rollout latency bucket, F fallback,
-- E upstream error, J ejection, I in flight, T token lookups. A histogram's count is the sum of its
-- B buckets (one increment fewer per request).

-- keys[service][version][upstream] = a series: its request counts, kept in this worker and added
-- to the shared dict by flush() (see count). A series holds
--   n    = { counts by slot }: slots 1-5 the status classes, R_SLOTS + 1 .. the duration buckets,
--          S_SLOT the duration sum, L_SLOT + 1 + b the rollout latency bucket b (0-based)
--   keys = { the shared-dict key of each slot, made on first use by flush, off the request path }
--   base = "service\31version", upstream, L (whether rollout latencies are kept), dirty
local keys = {}
-- Every series, for flush().
local all_series = {}
local R_SLOTS = 5
local S_SLOT = R_SLOTS + NBUCKETS + 2
local L_SLOT = S_SLOT

local function series_keys(service, version, upstream)
    local by_version = keys[service]
    if not by_version then
        by_version = {}
        keys[service] = by_version
    end
    local by_upstream = by_version[version]
    if not by_upstream then
        by_upstream = {}
        by_version[version] = by_upstream
    end
    local k = by_upstream[upstream]
    if k then return k end
    local n = {}
    -- Every slot made now (zeros), so counting never grows the table.
    local last = S_SLOT + ((service ~= "" and NLAT > 0) and NLAT + 1 or 0)
    for i = 1, last do n[i] = 0 end
    k = { n = n, keys = {}, base = service .. SEP .. version, upstream = upstream, L = service ~= "" and NLAT > 0, dirty = false }
    by_upstream[upstream] = k
    all_series[#all_series + 1] = k
    return k
end

-- The shared-dict key of slot i of series k.
local function slot_key(k, i)
    local key = k.keys[i]
    if key then return key end
    if i <= R_SLOTS then
        key = "R" .. k.base .. SEP .. CLASSES[i] .. SEP .. k.upstream
    elseif i < S_SLOT then
        key = "B" .. k.base .. SEP .. (i - R_SLOTS)
    elseif i == S_SLOT then
        key = "S" .. k.base
    else
        key = "L" .. k.base .. SEP .. (i - L_SLOT - 1)
    end
    k.keys[i] = key
    return key
end

-- Requests in flight per upstream: the shared-dict key of each upstream, made once; and the
-- requests this worker saw close since its last flush, per key (negative, added by flush).
local inflight_keys = {}
local inflight_closed = {}
local function inflight_key(upstream)
    local key = inflight_keys[upstream]
    if key == nil then
        key = "I" .. upstream
        inflight_keys[upstream] = key
    end
    return key
end

-- The rare counters (fallbacks, upstream errors, ejections): their keys, made once per label set.
local simple = { F = {}, E = {}, J = {} }
local function simple_key(kind, ...)
    local n = select("#", ...)
    local t = simple[kind]
    for i = 1, n - 1 do
        local part = select(i, ...)
        local next_t = t[part]
        if not next_t then
            next_t = {}
            t[part] = next_t
        end
        t = next_t
    end
    local last = select(n, ...)
    local k = t[last]
    if not k then
        k = kind .. concat({ ... }, SEP)
        t[last] = k
    end
    return k
end

-- The bounds from graygate's compact form: the first doubling's bounds, and per bound the ulp
-- ("-", "0", "+") by which it differs from its octave's bound times a power of two.
local function decode_bounds(octave, ulps)
    local per = #octave
    local ldexp, frexp = math.ldexp, math.frexp
    local bounds = {}
    for i = 0, #ulps - 1 do
        local bound = ldexp(octave[i % per + 1], floor(i / per))
        local c = ulps:sub(i + 1, i + 1)
        if c ~= "0" then
            local _, e = frexp(bound)
            bound = bound + (c == "+" and 1 or -1) * ldexp(1, e - 53)
        end
        bounds[i + 1] = bound
    end
    return bounds
end

-- How often each worker adds its counts to the shared dict (seconds). The dump, /metrics, the
-- rollout analysis and the drain see a worker's closed requests up to this late (a request that
-- starts is in flight at once). 100 ms: far below any scrape or analysis interval, and ten timer
-- runs a second per worker cost nothing measurable.
local FLUSH_INTERVAL = 0.1

--- Called once per worker (init_worker): the shared dict's name, the rollout analysis's latency
--- bounds (`latency_octave_ms` + `latency_ulps`, as graygate's conf writes them, or
--- `latency_bounds_ms`: the ascending array itself); starts the timer that adds this worker's
--- request and token lookup counts to the dict every `flush_interval` seconds (default 0.1), and
--- once more when the worker exits (a reload or stop loses no count).
function _M.init(opts)
    opts = opts or {}
    local bounds = opts.latency_bounds_ms
    if bounds == nil and opts.latency_octave_ms and opts.latency_ulps then
        bounds = decode_bounds(opts.latency_octave_ms, opts.latency_ulps)
    end
    if bounds and #bounds > 0 then
        LAT, NLAT = bounds, #bounds
    else
        LAT, NLAT = nil, 0
    end
    dict = assert(ngx.shared[opts.dict or "graygate_metrics"], "graygate metrics: lua_shared_dict " .. tostring(opts.dict or "graygate_metrics") .. " is not declared")
    -- `premature` is the worker exiting: the last flush.
    local ok, err = ngx.timer.every(opts.flush_interval or FLUSH_INTERVAL, function() _M.flush() end)
    if not ok then ngx.log(ngx.ERR, "graygate metrics: no flush timer: ", err) end
end

local TOKEN_FIELDS = { "hits", "staleHits", "negativeHits", "lookups", "refreshes", "answered", "unknown", "failures", "timeouts", "garbage", "refused", "shed" }
local token_keys = {}
for i, f in ipairs(TOKEN_FIELDS) do token_keys[i] = "T" .. f end

--- Adds this worker's request and token lookup counts to the shared dict and zeroes them.
function _M.flush()
    if not dict then return end
    for key, n in pairs(inflight_closed) do
        if n ~= 0 then
            inflight_closed[key] = 0
            dict:incr(key, n, 0)
        end
    end
    for s = 1, #all_series do
        local k = all_series[s]
        if k.dirty then
            k.dirty = false
            local n = k.n
            -- Backwards: the request counts (slots 1..R_SLOTS) are added after their durations and
            -- latencies. collect reads every request count before the rest, so a request it counts
            -- is in the histograms it reads too (the rollout analysis expects as many latencies as
            -- requests), whatever worker flushes meanwhile.
            for i = #n, 1, -1 do
                local v = n[i]
                if v ~= 0 then
                    n[i] = 0
                    dict:incr(slot_key(k, i), v, 0)
                end
            end
        end
    end
    local ok, token = pcall(require, "graygate.token")
    if not ok then return end
    local stats = token.stats
    for i, f in ipairs(TOKEN_FIELDS) do
        local v = stats[f]
        if v ~= 0 then
            dict:incr(token_keys[i], v, 0)
            stats[f] = 0
        end
    end
end

local function version_served(decision, upstream)
    if decision.version == "candidate" and upstream ~= decision.upstream then return "stable" end
    return decision.version
end

--- The rollout analysis's bucket (0-based) of a latency in ms, as graygate's latencyBucket: a
--- binary search over the bounds (8 comparisons for 137 bounds), no allocation.
local function latency_bucket(ms)
    if not (ms > LAT[1]) then return 0 end
    if ms > LAT[NLAT] then return NLAT end
    local lo, hi = 2, NLAT
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if ms <= LAT[mid] then hi = mid else lo = mid + 1 end
    end
    return lo - 1
end
_M.latency_bucket = latency_bucket

-- Counts one finished request in series k: status class, duration bucket, duration sum and rollout
-- latency bucket, in this worker's tables (flush adds them to the shared dict). A shared-dict
-- increment locks the dict and hashes its key; four per request cost more than the rest of the
-- log phase, and here they are table stores the JIT compiles.
local function count(k)
    local n = k.n
    local class = floor(ngx.status / 100)
    if class < 1 or class > 5 then class = 5 end
    n[class] = n[class] + 1
    local seconds = now() - req_start()
    if seconds < 0 then seconds = 0 end
    local i = 1
    while i <= NBUCKETS and seconds > BUCKETS[i] do i = i + 1 end
    n[R_SLOTS + i] = n[R_SLOTS + i] + 1
    n[S_SLOT] = n[S_SLOT] + seconds
    if k.L then
        local b = L_SLOT + 1 + latency_bucket(seconds * 1000)
        n[b] = n[b] + 1
    end
    k.dirty = true
end

-- ---------------------------------------------------------------------------------------------
-- The data plane's phases. The request's state table `g` (its ngx.ctx entry) carries what was
-- counted, so the usual request costs no nginx variable read in the log phase (a variable read is
-- a hash lookup by name, ~10x a table field). But ngx.ctx does not survive nginx's internal
-- redirect to an error page, so what the log phase needs is also in variables, read only then:
--   $gg_service, $gg_version (decided), $gg_upstream (the upstream that served, which is the one
--   counted in flight: stable's after a fallback), $gg_fallback (the fallback's reason, or empty),
--   which the access and balancer phases set for the access log line anyway.
-- Upstream errors, ejections and fallbacks are counted by the balancer as they happen
-- (upstream_failed, ejected, fallback): each failed attempt counts, as on Node.
-- A request in flight is added to the shared dict at once, and taken off by the next flush after
-- it closed: the figure is never below the truth (a drain that reads none in flight can trust
-- it), and at most one flush interval above it.

--- Access phase, once the upstream is chosen (and $gg_upstream set to it): the request is in
--- flight to it. `g` is the request's state table (kept in ngx.ctx); `decision` the decision it serves.
function _M.started(upstream, g, decision)
    dict:incr(inflight_key(upstream), 1, 0)
    if g then
        g.m_inflight = upstream
        g.m_decision = decision
    end
end

--- Balancer phase, when an attempt goes to another upstream than counted (a fallback to stable;
--- the caller sets $gg_upstream to it).
function _M.moved(upstream, g)
    local was = g and g.m_inflight
    if was == nil then was = ngx.var.gg_upstream end
    if was == upstream then return end
    if was and was ~= "" then dict:incr(inflight_key(was), -1, 0) end
    dict:incr(inflight_key(upstream), 1, 0)
    if g then g.m_inflight = upstream end
end

--- Balancer phase: a candidate that could not take the request, served by stable `to` instead
--- (once per request); reason: no_server | unhealthy | connect_failure.
function _M.fallback(service, from, to, reason)
    dict:incr(simple_key("F", service, from, to, reason), 1, 0)
end

--- Balancer phase: a failed attempt at `upstream` (kind: connect | timeout | reset | other).
function _M.upstream_failed(upstream, kind)
    dict:incr(simple_key("E", upstream, kind), 1, 0)
end

--- Balancer phase: a server of `upstream` ejected by passive health.
function _M.ejected(upstream)
    dict:incr(simple_key("J", upstream), 1, 0)
end

--- Log phase. `g` is the request's state table when the request kept it (no internal redirect):
--- then nothing is read from variables.
function _M.log_vars(g)
    local d = g and g.m_decision
    if d then
        local up = g.m_inflight
        g.m_decision = nil
        local key = inflight_key(up)
        inflight_closed[key] = (inflight_closed[key] or 0) - 1
        -- The series of the usual request (the decided upstream served it) is kept on the
        -- decision: no lookup by three names.
        local k
        if up == d.upstream then
            k = d.m_series
            if k == nil then
                k = series_keys(d.service, d.version, up)
                d.m_series = k
            end
        else
            local served = version_served(d, up)
            -- After a fallback the access log line (written after this phase) names what served it.
            if served ~= d.version then ngx.var.gg_version = served end
            k = series_keys(d.service, served, up)
        end
        return count(k)
    end
    local var = ngx.var
    local service = var.gg_service
    if service and service ~= "" then
        local upstream = var.gg_upstream or ""
        if upstream ~= "" then
            local key = inflight_key(upstream)
            inflight_closed[key] = (inflight_closed[key] or 0) - 1
        end
        local version = var.gg_version or ""
        local reason = var.gg_fallback
        if reason and reason ~= "" then
            version = "stable"
            -- The access log line (written after this phase) names what served the request.
            var.gg_version = version
        end
        return count(series_keys(service, version, upstream))
    end
    return count(series_keys("", "", ""))
end

-- ---------------------------------------------------------------------------------------------
-- The dump: prom-client's JSON form, plus the load figures the drain report reads.

local function split(s)
    local out = {}
    local from = 2
    while true do
        local at = s:find(SEP, from, true)
        if not at then
            out[#out + 1] = s:sub(from)
            return out
        end
        out[#out + 1] = s:sub(from, at - 1)
        from = at + 1
    end
end

local function metric(name, type_)
    return { name = name, type = type_, help = "", aggregator = "sum", values = {} }
end

--- The figures as a Lua table: { metrics = <prom-client JSON>, figures = <per service, stable and
--- candidate: requests, errors (5xx), failures (fallbacks), latency (rollout bucket → count)>,
--- token = <lookup counts>, load = { inFlightRequests, openConnections, upstreams } }.
function _M.collect()
    _M.flush()
    local requests = metric("graygate_requests_total", "counter")
    local duration = metric("graygate_request_duration_seconds", "histogram")
    local fallbacks = metric("graygate_fallback_total", "counter")
    local errors = metric("graygate_upstream_errors_total", "counter")
    local ejections = metric("graygate_upstream_ejections_total", "counter")
    local lookups = metric("graygate_identity_lookups_total", "counter")
    local inflight = metric("graygate_upstream_in_flight_requests", "gauge")
    local hist = {} -- "service\31version" -> { labels, buckets = {}, sum, count }
    -- The rollout analysis's figures (graygate's ServicesFigures): by service, stable and candidate.
    local figures = {}
    local function figures_of(service)
        local f = figures[service]
        if not f then
            f = {
                stable = { requests = 0, errors = 0, failures = 0, latency = {} },
                candidate = { requests = 0, errors = 0, failures = 0, latency = {} },
            }
            figures[service] = f
        end
        return f
    end
    local token = {}
    local upstreams = {}
    local total_inflight = 0
    -- The request counts first, then the rest (see flush: a worker adds its counts last).
    local all_keys = dict:get_keys(0)
    local ordered = {}
    for _, key in ipairs(all_keys) do
        if byte(key, 1) == R_BYTE then ordered[#ordered + 1] = key end
    end
    for _, key in ipairs(all_keys) do
        if byte(key, 1) ~= R_BYTE then ordered[#ordered + 1] = key end
    end
    for _, key in ipairs(ordered) do
        local value = dict:get(key)
        if value then
            local kind = key:sub(1, 1)
            local f = split(key)
            if kind == "R" then
                insert(requests.values, { labels = { service = f[1], version = f[2], status_class = f[3], upstream = f[4] }, value = value })
                if f[1] ~= "" and (f[2] == "stable" or f[2] == "candidate") then
                    local v = figures_of(f[1])[f[2]]
                    v.requests = v.requests + value
                    -- The 5xx class also holds a status outside 100-599 (as on Node, where it is not
                    -- an error); nginx gives a proxied request none, so here it counts as one.
                    if f[3] == "5xx" then v.errors = v.errors + value end
                end
            elseif kind == "L" then
                if f[2] == "stable" or f[2] == "candidate" then
                    local latency = figures_of(f[1])[f[2]].latency
                    latency[f[3]] = (latency[f[3]] or 0) + value
                end
            elseif kind == "B" or kind == "S" then
                local id = f[1] .. SEP .. f[2]
                local h = hist[id]
                if not h then
                    h = { service = f[1], version = f[2], buckets = {}, sum = 0, count = 0 }
                    hist[id] = h
                end
                if kind == "B" then
                    h.buckets[tonumber(f[3])] = value
                    h.count = h.count + value
                else
                    h.sum = value
                end
            elseif kind == "F" then
                insert(fallbacks.values, { labels = { service = f[1], from = f[2], to = f[3], reason = f[4] }, value = value })
                -- A fallback is a request the candidate could not take: a candidate failure.
                if f[1] ~= "" then
                    local c = figures_of(f[1]).candidate
                    c.failures = c.failures + value
                end
            elseif kind == "E" then
                insert(errors.values, { labels = { upstream = f[1], kind = f[2] }, value = value })
            elseif kind == "J" then
                insert(ejections.values, { labels = { upstream = f[1] }, value = value })
            elseif kind == "I" then
                upstreams[f[1]] = { inFlightRequests = value, openConnections = 0 }
                total_inflight = total_inflight + value
                insert(inflight.values, { labels = { upstream = f[1] }, value = value })
            elseif kind == "T" then
                token[key:sub(2)] = value
            end
        end
    end
    for _, h in pairs(hist) do
        local cumulative = 0
        for i = 1, NBUCKETS do
            cumulative = cumulative + (h.buckets[i] or 0)
            insert(duration.values, { labels = { service = h.service, version = h.version, le = BUCKETS[i] }, value = cumulative, metricName = "graygate_request_duration_seconds_bucket" })
        end
        insert(duration.values, { labels = { service = h.service, version = h.version, le = "+Inf" }, value = h.count, metricName = "graygate_request_duration_seconds_bucket" })
        insert(duration.values, { labels = { service = h.service, version = h.version }, value = h.sum, metricName = "graygate_request_duration_seconds_sum" })
        insert(duration.values, { labels = { service = h.service, version = h.version }, value = h.count, metricName = "graygate_request_duration_seconds_count" })
    end
    local t = function(f) return token[f] or 0 end
    if next(token) then
        -- As graygate's registerIdentityMetrics maps TokenLookupStats.
        insert(lookups.values, { labels = { source = "tokenLookup", result = "hit" }, value = t("hits") + t("negativeHits") })
        insert(lookups.values, { labels = { source = "tokenLookup", result = "miss" }, value = t("answered") })
        insert(lookups.values, { labels = { source = "tokenLookup", result = "error" }, value = t("failures") - t("timeouts") + t("shed") })
        insert(lookups.values, { labels = { source = "tokenLookup", result = "timeout" }, value = t("timeouts") })
    end
    local connections = tonumber(ngx.var.connections_active) or 0
    -- Only metrics with values: lua-cjson writes an empty table as {} where prom-client expects [].
    local metrics = {}
    for _, m in ipairs({ requests, duration, fallbacks, errors, ejections, lookups, inflight }) do
        if #m.values > 0 then metrics[#metrics + 1] = m end
    end
    return {
        metrics = metrics,
        -- Absent when init had no latency bounds (figures without latencies would mislead the analysis).
        figures = NLAT > 0 and figures or nil,
        token = token,
        load = {
            -- The dump's own request is in flight and holds a connection: not counted.
            openConnections = connections > 0 and connections - 1 or 0,
            inFlightRequests = total_inflight,
            upstreams = upstreams,
        },
    }
end

--- Content handler of the internal dump location.
function _M.dump()
    local body = cjson.encode(_M.collect())
    ngx.header["content-type"] = "application/json"
    ngx.header["cache-control"] = "no-store"
    ngx.print(body)
end

return _M
