-- The `req` table decide.evaluate reads (fields in decide.lua), filled from nginx for the current
-- request. Header values are read on demand through one table shared by every request, whose
-- lookups go to ngx.var (request-scoped by itself), so a request allocates only its own `req`.
--
-- How the fields follow what Node sees:
--   host    the Host header (nginx keeps HTTP/2's :authority there too) without its port, lower case
--   path    $request_uri up to "?": the path as sent, not decoded or normalized ($uri is both)
--   args    $args: the raw query string
--   peer_ip $remote_addr, an IPv4-mapped IPv6 address unwrapped to a.b.c.d
--   headers $http_<name>: nginx joins repeated Cookie headers with "; " and X-Forwarded-For with
--           ", " as Node does; for other repeated headers nginx 1.22 gives the first (Node joins)

local identity = require("graygate.identity")

local byte, sub, find, lower, gsub = string.byte, string.sub, string.find, string.lower, string.gsub

local _M = {}

-- ngx.var names of headers, by lower-case header name: built once per name per worker.
local var_names = setmetatable({}, {
    __index = function(self, name)
        local var = "http_" .. gsub(name, "-", "_")
        rawset(self, name, var)
        return var
    end,
})

local headers = setmetatable({}, {
    __index = function(_, name) return ngx.var[var_names[name]] end,
    __newindex = function() error("graygate: request headers are read-only") end,
})
_M.headers = headers

-- `Example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`; none -> "".
local function host_without_port(host)
    if host == nil or host == "" then return "" end
    local stop = #host
    if byte(host, 1) == 91 then
        local close = find(host, "]", 1, true)
        if close then stop = close end
    else
        local colon = find(host, ":", 1, true)
        if colon then stop = colon - 1 end
    end
    if stop ~= #host then host = sub(host, 1, stop) end
    return lower(host)
end
_M.host_without_port = host_without_port

-- Fields most forms never read, each fetched from nginx on first use (an ngx.var read costs a
-- hash lookup and a Lua string): the query string, the peer address, TLS. A value read as nil
-- (no query string) is read again if asked again, which only costs that lookup.
local lazy = {
    args = function(var) return var.args end,
    peer_ip = function(var) return identity.unwrap_mapped(var.remote_addr or "") end,
    is_tls = function(var) return var.https == "on" end,
}
local req_meta = {
    __index = function(req, key)
        local read = lazy[key]
        if read == nil then return nil end
        local value = read(ngx.var)
        rawset(req, key, value)
        return value
    end,
}

-- A new req for the current request (access phase): host and path now, the rest when read.
function _M.new()
    local var = ngx.var
    local uri = var.request_uri or "/"
    local q = find(uri, "?", 1, true)
    return setmetatable({
        host = host_without_port(var.http_host),
        path = q and sub(uri, 1, q - 1) or uri,
        headers = headers,
    }, req_meta)
end

return _M
