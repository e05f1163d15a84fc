-- The OpenResty data plane's own token and metrics modules (openresty/graygate/token.lua,
-- metrics.lua) with the seed rule hand-wired: TOKEN → TOKEN_<token> through token.lua, the range
-- from Grayscale_Range cached 1 s per worker (as the tuned recipe does), per-request metrics in
-- the shared dict. bench/compare.mjs's `lua-parts` row: what those parts cost on their own, next to
-- the whole data plane (`openresty` rows, graygate start --data-plane openresty).
local cjson = require "cjson.safe"
local resp = require "graygate.resp"
local token = require "graygate.token"
local metrics = require "graygate.metrics"

local _M = {}

local SOURCE = {
    kind = "tokenLookup", label = "tokenLookup", header = "token", keyPrefix = "TOKEN_", keySuffix = "",
    cacheTtlMs = 5000, negativeTtlMs = 1000, maxStaleMs = 300000, cacheMax = 100000, deadlineMs = 50, maxTokenLength = 256,
}
local CANDIDATE = { service = "app", version = "candidate", upstream = "gray", reason = "gray-range" }
local STABLE = { service = "app", version = "stable", upstream = "prod", reason = "no rule matched" }

local settings
local range_from, range_to, range_until = nil, nil, 0

--- `bounds`: graygate's rollout latency bounds as metrics.init takes them (compare.mjs passes
--- them), so the row pays for the rollout figures as the data plane does.
function _M.init(bounds)
    settings = { host = "127.0.0.1", port = tonumber(os.getenv("BENCH_REDIS_PORT") or "") or 6379, db = 0 }
    token.init({ redis = settings, dict = "graygate_tokens" })
    bounds = bounds or {}
    bounds.dict = "graygate_metrics"
    metrics.init(bounds)
end

local function range()
    local now = ngx.now()
    if now < range_until then return range_from, range_to end
    range_until = now + 1
    local red = resp.connect(settings, 200)
    if red then
        local raw = red:get("Grayscale_Range")
        if type(raw) == "string" then
            resp.release(red, settings)
            local r = cjson.decode(raw)
            if r then range_from, range_to = tonumber(r.idStart), tonumber(r.idEnd) end
        else
            red:close()
        end
    end
    return range_from, range_to
end

function _M.access()
    local uid = token.resolve(SOURCE, ngx.var.http_token)
    local d = STABLE
    if uid then
        local n = tonumber(uid)
        local from, to = range()
        if n and from and n >= from and n <= to then d = CANDIDATE end
    end
    ngx.var.target = d.upstream
    local g = {}
    ngx.ctx.graygate = g
    metrics.started(d.upstream, g, d)
end

function _M.log()
    metrics.log_vars(ngx.ctx.graygate)
end

return _M
