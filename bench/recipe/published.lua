-- The recipe as it is usually published: every request opens a new Redis connection, reads
-- Grayscale_Range and TOKEN_<token>, and answers 500 when Redis fails (it fails closed).
local cjson = require "cjson.safe"
local redis = require "redis-mini"

local function fail(msg)
    ngx.log(ngx.ERR, msg)
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
end

local sock, err = redis.connect()
if not sock then return fail(err) end
local raw, gerr = redis.get(sock, "Grayscale_Range")
if gerr then return fail(gerr) end
local range = raw and cjson.decode(raw)
local token = ngx.var.http_token
local uid
if token then
    local v, terr = redis.get(sock, "TOKEN_" .. token)
    if terr then return fail(terr) end
    uid = tonumber(v)
end
redis.close(sock)

if uid and range and uid >= range.idStart and uid <= range.idEnd then
    ngx.var.target = "gray"
else
    ngx.var.target = "prod"
end
