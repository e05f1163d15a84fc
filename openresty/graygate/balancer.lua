-- Upstreams inside nginx, as graygate's Node data plane balances them: the version is chosen first
-- (by the rules), then a server inside it. Round robin per worker over the upstream's servers,
-- passive health in a shared dict (a server that refuses connections `eject_after` times in a row
-- gets no requests for `eject_for_ms`, on every worker), the candidate falls back to stable when it
-- has no server that can take the request, and a failed attempt is tried again only when nothing
-- of the request reached a server (a refused or timed-out connect: the next server, then stable),
-- or, once, on the same server after a reset of an idempotent request without a body (a pooled
-- connection the server closed as it was reused). Everything else answers the failure.
--
-- The servers and timeouts come from the delivery envelope (config.lua), so an upstream added or
-- changed by a routing change is used at once: the nginx `upstream` block is only a placeholder
-- whose peer this module sets per attempt (its keepalive pool is keyed by the peer's address).
local ngx_balancer = require "ngx.balancer"
local config = require "graygate.config"
local metrics = require "graygate.metrics"
local ngx = ngx
local shared = ngx.shared
local tonumber = tonumber
local match = string.match

local _M = {}

local health

local function now_ms()
    return ngx.now() * 1000
end

-- The health dict holds, per server, "e:<origin>" (ejected until, ms) and "f:<origin>" (connect
-- failures in a row), and GEN, a number every change of those increments (after making it). Each
-- worker keeps a copy of its servers' state (server.until_ms, server.failing) taken when GEN was
-- `known_gen`: the usual request reads GEN only (one shared-dict read, where reading each
-- server's keys in the access, balancer and log phases took three), and the copy is taken again
-- when another worker changed something.
local GEN = "gen"
local known_gen = false
-- Every server of the current envelope (this worker's copy of their state).
local all_servers = {}

-- Per worker, per envelope: the upstreams with their round-robin cursor.
config.on_view(function(view)
    local servers = {}
    for name, up in pairs(view.upstreams) do
        up.name = name
        up.cursor = 0
        for _, server in ipairs(up.servers) do
            server.ejected_key = "e:" .. server.origin
            server.failures_key = "f:" .. server.origin
            server.until_ms = 0
            server.failing = false
            servers[#servers + 1] = server
        end
    end
    all_servers = servers
    -- No GEN equals false: the next request takes the copy.
    known_gen = false
end)

--- Brings this worker's copy of the servers' health up to date when any worker changed it.
local function sync()
    local gen = health:get(GEN)
    if gen == known_gen then return end
    known_gen = gen
    for i = 1, #all_servers do
        local server = all_servers[i]
        server.until_ms = health:get(server.ejected_key) or 0
        server.failing = health:get(server.failures_key) ~= nil
    end
end

--- After this worker changed a server's health: the other workers take a new copy.
local function changed()
    health:incr(GEN, 1, 0)
end

local function is_available(server, now)
    return server.until_ms <= now
end

--- True when at least one server of `up` is not ejected.
function _M.has_available(up, now)
    local servers = up.servers
    for i = 1, #servers do
        if is_available(servers[i], now) then return true end
    end
    return false
end

--- The next server index of `up` to try, skipping ejected servers and those in `tried`; when only
--- ejected ones remain, the one that comes back soonest (trying beats failing without trying);
--- nil when every server was tried.
local function pick(up, tried, now)
    local servers = up.servers
    local n = #servers
    local fallback, fallback_until = nil, math.huge
    for k = 0, n - 1 do
        local i = (up.cursor + k) % n + 1
        if not (tried and tried[i]) then
            local until_ms = servers[i].until_ms
            if until_ms <= now then
                up.cursor = i % n
                return i
            end
            if until_ms < fallback_until then fallback, fallback_until = i, until_ms end
        end
    end
    if fallback then up.cursor = fallback % n end
    return fallback
end

--- A connect failure of `server` in `up`: counts it, ejects after the threshold. While the server
--- is ejected, failures of requests already under way are part of the same outage and count nothing.
local function connect_failed(up, server, now)
    local until_ms = health:get(server.ejected_key)
    if until_ms and until_ms > now then return end
    local failures = health:incr(server.failures_key, 1, 0)
    server.failing = true
    if failures and failures >= up.eject_after then
        server.until_ms = now + up.eject_for_ms
        health:set(server.ejected_key, server.until_ms)
        health:set(server.failures_key, 0)
        metrics.ejected(up.name)
        ngx.log(ngx.WARN, "graygate: server ", server.origin, " of upstream \"", up.name, "\" refused ", failures,
            " connection(s) in a row; ejected for ", up.eject_for_ms, " ms")
    end
    changed()
end

--- A response from `server`: its failures count no more, and an ejection ends. A healthy server
--- has no failure count at all (connect_failed creates it, and sets it when it ejects), so the
--- usual request costs nothing here: this worker's copy says so (a failure another worker counted
--- while this request was under way is cleared by this worker's next success, which takes the copy again).
local function succeeded(server)
    if not server.failing then return end
    server.failing = false
    server.until_ms = 0
    health:delete(server.failures_key)
    health:delete(server.ejected_key)
    changed()
end

local function last_number(text)
    if not text then return nil end
    return tonumber(match(text, "(%d+)[^%d]*$"))
end

--- Called by the access phase with the decided upstream: stable when the decision is a candidate
--- that cannot take the request (no server, every server ejected). Returns the upstream to use, or
--- nil when there is none. `g` is the request's state (ngx.ctx.graygate).
function _M.choose(view, g, upstream_name, stable_name, is_candidate)
    sync()
    local upstreams = view.upstreams
    local up = upstreams[upstream_name]
    if is_candidate then
        local reason
        if up == nil or #up.servers == 0 then
            reason = "no_server"
        elseif not _M.has_available(up, now_ms()) then
            reason = "unhealthy"
        end
        if reason then
            local from = upstream_name
            up = upstreams[stable_name]
            if up then
                ngx.var.gg_fallback = reason
                local d = g.decision
                metrics.fallback(d and d.service or "", from, stable_name, reason)
            end
        end
    end
    if up == nil then return nil end
    g.up = up
    g.stable = (up.name ~= stable_name) and upstreams[stable_name] or nil
    return up
end

-- The timeouts (seconds) the proxied location has (the config's defaults, given to init_worker by
-- the conf graygate writes); nil: unknown, every attempt sets its upstream's.
local default_connect, default_send, default_read

local function set_peer(g, up, index)
    local server = up.servers[index]
    g.server = server
    g.index = index
    local t = up.timeouts
    -- Setting timeouts makes nginx copy its whole upstream configuration for the request: only
    -- for an upstream whose timeouts are not the location's.
    if t.connect ~= default_connect or t.send ~= default_send or t.read ~= default_read then
        ngx_balancer.set_timeouts(t.connect, t.send, t.read)
    end
    local ok, err = ngx_balancer.set_current_peer(server.ip, server.port)
    if not ok then
        ngx.log(ngx.ERR, "graygate: cannot set peer ", server.origin, ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

--- Ends the request with `code` (a graygate error code): the error location answers it.
local function fail(code)
    ngx.var.gg_error = code
    return ngx.exit(ngx.ERROR)
end

-- Methods whose repetition has the effect of one request.
local IDEMPOTENT = { GET = true, HEAD = true, OPTIONS = true, PUT = true, DELETE = true, TRACE = true }

--- Whether the request may be sent again after a failed attempt: an idempotent method without a
--- body. Worked out on the first failure only (the usual request never needs it), then kept in `g`.
local function replayable(g)
    local known = g.replayable
    if known ~= nil then return known end
    local var = ngx.var
    local length = var.http_content_length
    known = IDEMPOTENT[var.request_method] == true and var.http_transfer_encoding == nil and (length == nil or length == "0")
    g.replayable = known
    return known
end

--- balancer_by_lua.
function _M.balance()
    local g = ngx.ctx.graygate
    if not g or not g.up then return fail("GG_UPSTREAM_UNAVAILABLE") end
    local now = now_ms()
    local up = g.up
    if not g.attempts then
        g.attempts = 1
        -- Enough tries for every server of the upstream, the reset retry and stable's servers; each
        -- retry below decides whether it is allowed at all.
        local tries = #up.servers + 1 + (g.stable and #g.stable.servers or 0)
        ngx_balancer.set_more_tries(tries)
        local index = pick(up, nil, now)
        if not index then return fail("GG_UPSTREAM_UNAVAILABLE") end
        return set_peer(g, up, index)
    end
    g.attempts = g.attempts + 1
    -- A failed attempt: what every worker counted since, exactly.
    sync()
    local _, status = ngx_balancer.get_last_failure()
    local sent = last_number(ngx.var.upstream_bytes_sent) or 0
    local server = g.server
    if sent == 0 then
        -- Nothing reached the server: a refused or timed-out connect.
        connect_failed(up, server, now)
        metrics.upstream_failed(up.name, status == 504 and "timeout" or "connect")
        g.tried = g.tried or {}
        g.tried[g.index] = true
        if not replayable(g) then return fail(status == 504 and "GG_UPSTREAM_TIMEOUT" or "GG_UPSTREAM_CONNECT") end
        local index = pick(up, g.tried, now)
        if index then return set_peer(g, up, index) end
        if g.stable then
            local from = up.name
            up = g.stable
            if g.is_candidate then
                ngx.var.gg_fallback = "connect_failure"
                local d = g.decision
                metrics.fallback(d and d.service or "", from, up.name, "connect_failure")
            end
            g.up, g.stable, g.tried = up, nil, nil
            ngx.var.gg_upstream = up.name
            metrics.moved(up.name, g)
            index = pick(up, nil, now)
            if index then return set_peer(g, up, index) end
        end
        return fail(status == 504 and "GG_UPSTREAM_TIMEOUT" or "GG_UPSTREAM_CONNECT")
    end
    -- The request (or part of it) was sent: it may have had its effect.
    metrics.upstream_failed(up.name, status == 504 and "timeout" or "reset")
    if status ~= 504 and not g.reset_retried and replayable(g) then
        g.reset_retried = true
        return set_peer(g, up, g.index)
    end
    return fail(status == 504 and "GG_UPSTREAM_TIMEOUT" or "GG_UPSTREAM_RESET")
end

--- log_by_lua: the last attempt's outcome counts for its server's health (earlier ones were
--- counted when the balancer moved on). `g.responded` is set by the header filter when the
--- upstream's response headers arrived: the usual request is known to have succeeded without
--- reading (and parsing) $upstream_bytes_received, a lookup by name and a pattern match the JIT
--- cannot compile.
function _M.log(g)
    if not g then return end
    local server = g.server
    if not server then return end
    if g.responded then return succeeded(server) end
    local received = last_number(ngx.var.upstream_bytes_received) or 0
    if received > 0 then
        succeeded(server)
        return
    end
    local sent = last_number(ngx.var.upstream_bytes_sent) or 0
    local status = last_number(ngx.var.upstream_status)
    if sent == 0 and status and status >= 502 and status ~= 503 then connect_failed(g.up, server, now_ms()) end
end

--- init_worker_by_lua. `default_timeouts` ({ connect, send, read } in seconds): the proxied
--- location's proxy_connect/send/read_timeout, when the conf sets them (graygate's does, to the
--- config's defaults).
function _M.init_worker(default_timeouts)
    health = shared.graygate_health
    if default_timeouts then
        default_connect, default_send, default_read = default_timeouts.connect, default_timeouts.send, default_timeouts.read
    end
end

return _M
