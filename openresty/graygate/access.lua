-- The access phase: the current routing (config.lua) → the decision (decide.lua, the same rules as
-- graygate's Node data plane) → the upstream (balancer.lua: stable when the candidate cannot take
-- the request). What decided is put in nginx variables ($gg_service, $gg_version, $gg_rule,
-- $gg_upstream), which the access log line, the metrics and the error location read: unlike
-- ngx.ctx, variables survive nginx's internal redirect to an error page.
local config = require "graygate.config"
local balancer = require "graygate.balancer"
local decide = require "graygate.decide"
local request = require "graygate.request"
local identity = require "graygate.identity"
local new_tab = require "table.new"
local ngx = ngx
local var = ngx.var
local header = ngx.header

-- Fields of a request's state (ngx.ctx.graygate) in the usual request: the decision's, the
-- balancer's (up, stable, server, index, attempts), the metrics' marks and the header filter's
-- (responded).
local G_FIELDS = 12

local _M = {}

local metrics = require "graygate.metrics"
local token = require "graygate.token"

-- Login tokens are looked up in Redis (tokenLookup); without Redis a token names nobody.
local function no_token()
    return nil
end

-- Once per envelope per worker: the form prepared for evaluate (sets, ranges, patterns).
config.on_view(function(view)
    local compiled, err = decide.compile(view.form, config.settings().normalized)
    if not compiled then error("graygate: cannot compile the routing form: " .. tostring(err)) end
    view.compiled = compiled
end)

--- A graygate error answer, as graygate's Node data plane writes it.
local function answer_error(code, status, message)
    var.gg_error = code
    ngx.status = status
    header.content_type = "application/json; charset=utf-8"
    header.cache_control = "no-store"
    ngx.print('{"error":{"code":"', code, '","message":"', message, '"}}')
    return ngx.exit(status)
end

function _M.access()
    local view = config.current()
    if view == nil then
        return answer_error("GG_NOT_READY", 503, "the gateway serves no routing snapshot yet")
    end
    local req = request.new()
    local settings = config.settings()
    local compiled = view.compiled
    local d = decide.evaluate(compiled, req, settings.redis and token.resolver or no_token)
    if d == nil then
        return answer_error("GG_NO_SERVICE", 404, "no service matches the request host and path")
    end
    -- Allocated at the size the phases fill it to (the balancer's and metrics' fields too), so it
    -- never grows and rehashes on the way.
    local g = new_tab(0, G_FIELDS)
    g.decision, g.req, g.compiled = d, req, compiled
    ngx.ctx.graygate = g
    var.gg_service = d.service
    var.gg_version = d.version
    var.gg_rule = d.reason
    local is_candidate = d.version ~= "stable"
    g.is_candidate = is_candidate
    local up = balancer.choose(view, g, d.upstream, d.stable_upstream, is_candidate)
    if up == nil then
        return answer_error("GG_UPSTREAM_UNAVAILABLE", 503, "the upstream has no server that can take the request")
    end
    var.gg_upstream = up.name
    -- Variables the conf declares empty ($gg_identity) or "http" ($gg_scheme) are written only
    -- when they differ: each write is a lookup by name.
    local source = req.identity_source
    if source then var.gg_identity = source end
    metrics.started(up.name, g, d)
    if up.scheme ~= "http" then var.gg_scheme = up.scheme end
    -- X-Forwarded-For: a trusted proxy's value is appended to; anyone else's is replaced ($gg_xff's
    -- default). Built here rather than read from $proxy_add_x_forwarded_for: nginx does not let
    -- that variable be looked up by name (ngx.var gives nil), so it cannot be read from Lua.
    local trusted = compiled.trusted
    if trusted.n4 + trusted.n6 > 0 and identity.peer_trusted(trusted, req) then
        local forwarded = req.headers["x-forwarded-for"]
        local peer = request.var("remote_addr")
        var.gg_xff = forwarded and forwarded .. ", " .. peer or peer
    end
    if not settings.preserve_host then var.gg_host = up.host_header end
    -- Whether the request may be sent again after a failure is worked out by the balancer, only
    -- when an attempt fails (balancer.replayable).
end

--- header_filter_by_lua: the headers the decision calls for (Vary or Cache-Control: private, the
--- anonymous id cookie, the version header), as decide.lua writes them. `g` survives only when
--- no internal redirect happened, so these are the upstream's response headers: the log phase
--- reads `g.responded` as "the attempt got an answer" (no $upstream_bytes_received to parse).
function _M.header_filter()
    local g = ngx.ctx.graygate
    if g == nil then return end
    g.responded = true
    -- The upstream that served it: after a fail-safe from the candidate, stable's.
    decide.apply_headers(g.compiled, g.decision, g.req, g.up and g.up.name or var.gg_upstream, header)
end

--- content_by_lua of the error location (error_page): the failure the balancer named, as JSON.
function _M.error_page()
    local code = var.gg_error
    if code == nil or code == "" then
        local status = ngx.status
        code = status == 504 and "GG_UPSTREAM_TIMEOUT" or status == 503 and "GG_UPSTREAM_UNAVAILABLE" or "GG_UPSTREAM_CONNECT"
    end
    local status, message = 502, "could not connect to the upstream"
    if code == "GG_UPSTREAM_TIMEOUT" then
        status, message = 504, "the upstream did not answer in time"
    elseif code == "GG_UPSTREAM_RESET" then
        message = "the upstream closed the connection or sent an invalid response"
    elseif code == "GG_UPSTREAM_UNAVAILABLE" then
        status, message = 503, "the upstream has no server that can take the request"
    end
    var.gg_error = code
    ngx.status = status
    header.content_type = "application/json; charset=utf-8"
    header.cache_control = "no-store"
    ngx.print('{"error":{"code":"', code, '","message":"', message, '"}}')
end

function _M.log()
    local g = ngx.ctx.graygate
    balancer.log(g)
    metrics.log_vars(g)
end

return _M
