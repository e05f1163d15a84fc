-- The recipe tuned as a careful OpenResty user would: Redis connections from the per-worker
-- keepalive pool, and the range and each token's uid cached per worker for 1 s (unknown tokens
-- too), so Redis sees about one lookup per key per second per worker. Loaded with require so
-- the cache lives as long as the worker.
local cjson = require "cjson.safe"
local lrucache = require "resty.lrucache"
local redis = require "redis-mini"

local TTL = 1
local NONE = false
local cache = assert(lrucache.new(10000))
local _M = {}

local function fetch(key, decode)
    local sock, err = redis.connect()
    if not sock then return nil, err end
    local raw, gerr = redis.get(sock, key)
    if gerr then sock:close() return nil, gerr end
    redis.release(sock)
    if raw == nil then return NONE end
    local v = decode(raw)
    if v == nil then return NONE end
    return v
end

local function cached(key, decode)
    local v = cache:get(key)
    if v ~= nil then return v end
    local err
    v, err = fetch(key, decode)
    if v == nil then return nil, err end
    cache:set(key, v, TTL)
    return v
end

function _M.route()
    local range, err = cached("Grayscale_Range", cjson.decode)
    if err then ngx.log(ngx.ERR, err) return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR) end
    local token = ngx.var.http_token
    local uid = NONE
    if token then
        uid, err = cached("TOKEN_" .. token, tonumber)
        if err then ngx.log(ngx.ERR, err) return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR) end
    end
    if uid and range and uid >= range.idStart and uid <= range.idEnd then
        ngx.var.target = "gray"
    else
        ngx.var.target = "prod"
    end
end

return _M
