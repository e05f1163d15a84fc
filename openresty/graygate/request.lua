-- The `req` table decide.evaluate reads (fields in decide.lua), filled from nginx for the current
-- request. Header values are read on demand through one table shared by every request, whose
-- lookups go to nginx variables (request-scoped by themselves), so a request allocates only its
-- own `req`.
--
-- How the fields follow what Node sees:
--   host    the Host header (nginx keeps HTTP/2's :authority there too) without its port, lower case
--   path    $request_uri up to "?": the path as sent, not decoded or normalized ($uri is both)
--   args    $args: the raw query string
--   peer_ip $remote_addr, an IPv4-mapped IPv6 address unwrapped to a.b.c.d
--   headers $http_<name>: nginx joins repeated Cookie headers with "; " and X-Forwarded-For with
--           ", " as Node does; for other repeated headers nginx 1.22 gives the first (Node joins)

local identity = require("graygate.identity")

local new_tab = require("table.new")

local byte, sub, find, lower, gsub = string.byte, string.sub, string.find, string.lower, string.gsub

local _M = {}

-- Reading an nginx variable, as ngx.var does (lua-resty-core's var.lua, the same C function)
-- but in a form LuaJIT compiles. ngx.var's reader ends in `return ffi.string(...)`: a tail call
-- to a function with side effects, which the trace recorder cannot return from into the
-- caller's frame ("NYI: return to lower frame"). After a few such aborts LuaJIT blacklists that
-- reader, and from then on EVERY trace that reads a variable through ngx.var aborts as well, so
-- the whole request path runs in the interpreter. Here the string is made, kept in a local and
-- returned: no tail call.
require("resty.core.var") -- declares ngx_http_lua_ffi_var_get to the FFI
local base = require("resty.core.base")
local ffi = require("ffi")
local C = ffi.C
local ffi_str = ffi.string
local get_request = base.get_request
local get_string_buf = base.get_string_buf
local get_size_ptr = base.get_size_ptr
local value_ptr = ffi.new("char *[1]")
local errmsg = base.get_errmsg_ptr()

--- The value of nginx variable `name` for the current request, or nil when it has none.
local function var_get(name)
    local r = get_request()
    if not r then error("graygate: no request found") end
    local name_len = #name
    local value_len = get_size_ptr()
    local rc = C.ngx_http_lua_ffi_var_get(r, name, name_len, get_string_buf(name_len), 0, value_ptr, value_len, errmsg)
    if rc == 0 then
        local value = ffi_str(value_ptr[0], value_len[0])
        return value
    end
    if rc == -5 then return nil end
    error(ffi_str(errmsg[0]), 2)
end
_M.var = var_get

-- ngx.var names of headers, by lower-case header name: built once per name per worker.
local var_names = setmetatable({}, {
    __index = function(self, name)
        local var = "http_" .. gsub(name, "-", "_")
        rawset(self, name, var)
        return var
    end,
})

local headers = setmetatable({}, {
    __index = function(_, name)
        local value = var_get(var_names[name])
        return value
    end,
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
    host = lower(host)
    return host
end
_M.host_without_port = host_without_port

-- Fields most forms never read, each fetched from nginx on first use (an ngx.var read costs a
-- hash lookup and a Lua string): the query string, the peer address, TLS. A value read as nil
-- (no query string) is read again if asked again, which only costs that lookup.
local lazy = {
    args = function() return var_get("args") end,
    peer_ip = function() return identity.unwrap_mapped(var_get("remote_addr") or "") end,
    is_tls = function() return var_get("https") == "on" end,
}
local req_meta = {
    __index = function(req, key)
        local read = lazy[key]
        if read == nil then return nil end
        local value = read()
        rawset(req, key, value)
        return value
    end,
}

-- The last Host header and request target seen in this worker, and what was made of them:
-- nginx hands a new Lua string per read, but equal strings are one object in LuaJIT, so a
-- repeated host (nearly every request) costs one comparison instead of a lower-case copy.
local last_raw_host, last_host = nil, ""
local last_uri, last_path = "/", "/"

-- The fields a request gets in the access phase (req, decide's results, the identity's, the
-- header filter's), so the table is allocated once at its size instead of growing and rehashing.
local REQ_FIELDS = 12

-- A new req for the current request (access phase): host and path now, the rest when read.
function _M.new()
    local raw = var_get("http_host")
    if raw ~= last_raw_host then
        last_raw_host, last_host = raw, host_without_port(raw)
    end
    local uri = var_get("request_uri") or "/"
    if uri ~= last_uri then
        local q = find(uri, "?", 1, true)
        last_uri, last_path = uri, q and sub(uri, 1, q - 1) or uri
    end
    local req = new_tab(0, REQ_FIELDS)
    req.host = last_host
    req.path = last_path
    req.headers = headers
    -- Read by the header filter on every request: a value here spares the lazy lookup below.
    req.set_cookie = false
    -- Not `return setmetatable(...)`: a tail call to a built-in ends the compiled trace as it
    -- returns into the access phase's frame ("leaving loop in root trace").
    setmetatable(req, req_meta)
    return req
end

return _M
