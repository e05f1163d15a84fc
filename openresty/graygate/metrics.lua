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
-- Phase wiring (the ngx.ctx table is the request's):
--   access:   metrics.begin(ctx, decision)            -- after the decision; nil decision: no service
--   balancer: metrics.dialing(ctx, upstream_name)     -- the upstream actually tried (after a fallback)
--             metrics.fell_back(ctx, to, reason)      -- reason: no_server | unhealthy | connect_failure
--             metrics.upstream_failed(upstream, kind) -- kind: connect | timeout | reset | other
--             metrics.ejected(upstream)
--   log:      metrics.log(ctx)
--
-- Per request: a few shared-dict increments with keys built once per (service, version,
-- upstream) and kept in nested tables; no string is built and nothing is decoded per request.
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

local _M = {}

-- Seconds: graygate's DURATION_BUCKETS_SECONDS.
local BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local NBUCKETS = #BUCKETS
local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local SEP = "\31"

local dict

-- Key kinds (first character): R requests, B bucket, S sum, C count, F fallback, E upstream
-- error, J ejection, I in flight, T token lookups.

-- keys[service][version][upstream] = { R = { per class }, B = { per bucket + 1 }, S =, C = }
local keys = {}

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
    local base = service .. SEP .. version
    k = { R = {}, B = {} }
    for i, class in ipairs(CLASSES) do k.R[i] = "R" .. base .. SEP .. class .. SEP .. upstream end
    for i = 1, NBUCKETS + 1 do k.B[i] = "B" .. base .. SEP .. i end
    k.S = "S" .. base
    k.C = "C" .. base
    by_upstream[upstream] = k
    return k
end

local simple = { F = {}, E = {}, J = {}, I = {} }
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

--- Called once per worker (init_worker): the shared dict's name; starts the timer that adds this
--- worker's token lookup counts to it every `flush_interval` seconds (default 1).
function _M.init(opts)
    opts = opts or {}
    dict = assert(ngx.shared[opts.dict or "graygate_metrics"], "graygate metrics: lua_shared_dict " .. tostring(opts.dict or "graygate_metrics") .. " is not declared")
    local ok, err = ngx.timer.every(opts.flush_interval or 1, function(premature)
        if not premature then _M.flush() end
    end)
    if not ok then ngx.log(ngx.ERR, "graygate metrics: no flush timer: ", err) end
end

local TOKEN_FIELDS = { "hits", "staleHits", "negativeHits", "lookups", "refreshes", "answered", "unknown", "failures", "timeouts", "garbage", "refused", "shed" }
local token_keys = {}
for i, f in ipairs(TOKEN_FIELDS) do token_keys[i] = "T" .. f end

--- Adds this worker's token lookup counts to the shared dict and zeroes them.
function _M.flush()
    local ok, token = pcall(require, "graygate.token")
    if not ok or not dict then return end
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

--- Access phase, once the decision is made: the request is in flight to the decided upstream.
function _M.begin(ctx, decision)
    ctx.gg_decision = decision
    if decision then
        local up = decision.upstream
        ctx.gg_inflight = up
        dict:incr(simple_key("I", up), 1, 0)
    end
end

--- Balancer phase: the request goes to `upstream` (another than decided after a fallback).
function _M.dialing(ctx, upstream)
    ctx.gg_upstream = upstream
    local was = ctx.gg_inflight
    if was == upstream then return end
    if was then dict:incr(simple_key("I", was), -1, 0) end
    dict:incr(simple_key("I", upstream), 1, 0)
    ctx.gg_inflight = upstream
end

function _M.fell_back(ctx, to, reason)
    local d = ctx.gg_decision
    if not d or ctx.gg_fell_back then return end
    ctx.gg_fell_back = true
    dict:incr(simple_key("F", d.service, d.upstream, to, reason), 1, 0)
end

function _M.upstream_failed(upstream, kind)
    dict:incr(simple_key("E", upstream, kind), 1, 0)
end

function _M.ejected(upstream)
    dict:incr(simple_key("J", upstream), 1, 0)
end

--- Access phase: fills the access log line's variables ($gg_service, $gg_version, $gg_upstream,
--- $gg_rule, $gg_identity: declared empty by the conf) from the decision; `identity` is the name of the
--- identity source that named the caller (e.g. "tokenLookup"), never its value.
function _M.set_log_vars(decision, identity)
    local var = ngx.var
    var.gg_service = decision.service
    var.gg_version = decision.version
    var.gg_upstream = decision.upstream
    var.gg_rule = decision.rule or decision.reason or ""
    if identity then var.gg_identity = identity end
end

-- Counts one finished request in the series of (service, served version, upstream).
local function count(k)
    local status = ngx.status
    local class = floor(status / 100)
    if class < 1 or class > 5 then class = 5 end
    dict:incr(k.R[class], 1, 0)
    local seconds = now() - req_start()
    if seconds < 0 then seconds = 0 end
    local i = 1
    while i <= NBUCKETS and seconds > BUCKETS[i] do i = i + 1 end
    dict:incr(k.B[i], 1, 0)
    dict:incr(k.S, seconds, 0)
    dict:incr(k.C, 1, 0)
end

--- Log phase: counts the request by the version that served it, its status class and duration.
function _M.log(ctx)
    local d = ctx.gg_decision
    local k
    if d then
        local up = ctx.gg_upstream or d.upstream
        local served = version_served(d, up)
        k = series_keys(d.service, served, up)
        if served ~= d.version or up ~= d.upstream then
            -- A fallback: the log line names what served the request (log_by_lua runs before
            -- nginx writes the access log line).
            local var = ngx.var
            var.gg_version = served
            var.gg_upstream = up
        end
        local inflight = ctx.gg_inflight
        if inflight then
            dict:incr(simple_key("I", inflight), -1, 0)
            ctx.gg_inflight = nil
        end
    else
        k = series_keys("", "", "")
    end
    return count(k)
end

-- ---------------------------------------------------------------------------------------------
-- The data plane's phases. The request's state table `g` (its ngx.ctx entry) carries what was
-- counted, so the usual request costs no nginx variable read in the log phase (a variable read is
-- a hash lookup by name, ~10x a table field). But ngx.ctx does not survive nginx's internal
-- redirect to an error page, so what the log phase needs is also in variables, read only then:
--   $gg_service, $gg_version (decided), $gg_upstream (the upstream that served: stable's after a
--   fallback), $gg_fallback (the fallback's reason, or empty) — which the access and balancer
--   phases set for the access log line anyway — and $gg_inflight, metrics.lua's own.
-- Upstream errors, ejections and fallbacks are counted by the balancer as they happen
-- (upstream_failed, ejected, fallback): each failed attempt counts, as on Node.

--- Access phase, once the upstream is chosen: the request is in flight to it. `g` is the
--- request's state table (kept in ngx.ctx); `decision` the decision it serves.
function _M.started(upstream, g, decision)
    ngx.var.gg_inflight = upstream
    dict:incr(simple_key("I", upstream), 1, 0)
    if g then
        g.m_inflight = upstream
        g.m_decision = decision
    end
end

--- Balancer phase, when an attempt goes to another upstream than counted (a fallback to stable).
function _M.moved(upstream, g)
    local was = g and g.m_inflight
    if was == nil then was = ngx.var.gg_inflight end
    if was == upstream then return end
    if was and was ~= "" then dict:incr(simple_key("I", was), -1, 0) end
    dict:incr(simple_key("I", upstream), 1, 0)
    ngx.var.gg_inflight = upstream
    if g then g.m_inflight = upstream end
end

--- Balancer phase: a candidate that could not take the request, served by stable `to` instead
--- (once per request); reason: no_server | unhealthy | connect_failure.
function _M.fallback(service, from, to, reason)
    dict:incr(simple_key("F", service, from, to, reason), 1, 0)
end


--- Log phase. `g` is the request's state table when the request kept it (no internal redirect):
--- then nothing is read from variables.
function _M.log_vars(g)
    local d = g and g.m_decision
    if d then
        local up = g.m_inflight
        dict:incr(simple_key("I", up), -1, 0)
        g.m_inflight = nil
        return count(series_keys(d.service, version_served(d, up), up))
    end
    local var = ngx.var
    local inflight = var.gg_inflight
    if inflight and inflight ~= "" then
        dict:incr(simple_key("I", inflight), -1, 0)
        var.gg_inflight = ""
    end
    local service = var.gg_service
    if service and service ~= "" then
        local version = var.gg_version or ""
        local reason = var.gg_fallback
        if reason and reason ~= "" then
            version = "stable"
            -- The access log line (written after this phase) names what served the request.
            var.gg_version = version
        end
        return count(series_keys(service, version, var.gg_upstream or ""))
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

--- The figures as a Lua table: { metrics = <prom-client JSON>, load = { inFlightRequests, openConnections, upstreams } }.
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
    local token = {}
    local upstreams = {}
    local total_inflight = 0
    for _, key in ipairs(dict:get_keys(0)) do
        local value = dict:get(key)
        if value then
            local kind = key:sub(1, 1)
            local f = split(key)
            if kind == "R" then
                insert(requests.values, { labels = { service = f[1], version = f[2], status_class = f[3], upstream = f[4] }, value = value })
            elseif kind == "B" or kind == "S" or kind == "C" then
                local id = f[1] .. SEP .. f[2]
                local h = hist[id]
                if not h then
                    h = { service = f[1], version = f[2], buckets = {}, sum = 0, count = 0 }
                    hist[id] = h
                end
                if kind == "B" then
                    h.buckets[tonumber(f[3])] = value
                elseif kind == "S" then
                    h.sum = value
                else
                    h.count = value
                end
            elseif kind == "F" then
                insert(fallbacks.values, { labels = { service = f[1], from = f[2], to = f[3], reason = f[4] }, value = value })
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
