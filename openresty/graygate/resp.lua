-- A small Redis client over nginx cosockets: what graygate's data plane needs from Redis (GET,
-- SET/DEL for tests, EVAL/EVALSHA, PUBLISH, SUBSCRIBE with read_reply, AUTH/SELECT, PING) and a
-- per-worker keepalive pool. Debian packages no lua-resty-redis, so this module carries the few
-- hundred lines of RESP it takes; where lua-resty-redis is installed, `resp.new()` hands out its
-- object instead (same methods, same return conventions), so a user who has it keeps it.
--
-- Conventions (those of lua-resty-redis, so either implementation fits the same code):
--   * a method returns the reply, or nil and an error string;
--   * a missing value (a nil bulk string or nil array) is ngx.null, never nil;
--   * a Redis error reply is `false, "ERR ..."` for single commands.
--
-- Usage:
--   local resp = require "graygate.resp"
--   local red, err = resp.connect({ host = "127.0.0.1", port = 6379, password = nil, db = 0,
--                                   connect_timeout = 200, send_timeout = 1000, read_timeout = 1000 })
--   if not red then ... end
--   local v, err = red:get("TOKEN_abc")        -- ngx.null when absent
--   resp.release(red)                           -- back to the pool; or red:close() after an error
--
-- `resp.connect` sends AUTH and SELECT only on a new connection (not one reused from the pool);
-- the pool is keyed by host, port, db and a hash of the password, so connections with different
-- credentials never mix.
local ngx = ngx
local tcp = ngx.socket.tcp
local null = ngx.null
local sub = string.sub
local byte = string.byte
local tonumber = tonumber
local tostring = tostring
local type = type
local select = select
local setmetatable = setmetatable
local concat = table.concat
local new_tab
do
    local ok, nt = pcall(require, "table.new")
    new_tab = ok and nt or function() return {} end
end

local _M = { _VERSION = "1" }

-- lua-resty-redis when installed (e.g. OpenResty's bundle); nil otherwise.
local resty_redis
do
    local ok, mod = pcall(require, "resty.redis")
    if ok and type(mod) == "table" and mod.new then resty_redis = mod end
end
_M.using_resty_redis = resty_redis ~= nil

local mt = { __index = {} }
local methods = mt.__index

--- A client object with no connection yet (lua-resty-redis's own when `force_builtin` is not set and it is installed).
function _M.new(force_builtin)
    if resty_redis and not force_builtin then return resty_redis:new() end
    local sock, err = tcp()
    if not sock then return nil, err end
    return setmetatable({ _sock = sock, _subscribed = false }, mt)
end

function methods:set_timeouts(connect, send, read)
    return self._sock:settimeouts(connect, send, read)
end

function methods:set_timeout(ms)
    return self._sock:settimeout(ms)
end

function methods:connect(host, port, opts)
    self._subscribed = false
    return self._sock:connect(host, port, opts)
end

function methods:get_reused_times()
    return self._sock:getreusedtimes()
end

--- Back into this worker's keepalive pool; refused (and the connection closed) while subscribed
--- or after a protocol error, since such a connection has replies pending that the next user would read.
function methods:set_keepalive(idle_ms, pool_size)
    if self._subscribed then
        self._sock:close()
        return nil, "subscribed connection: closed, not pooled"
    end
    if self._broken then
        self._sock:close()
        return nil, "connection in an unknown state: closed, not pooled"
    end
    return self._sock:setkeepalive(idle_ms, pool_size)
end

function methods:close()
    return self._sock:close()
end

-- One RESP command as a table of pieces for a single send (no string concatenation in Lua).
local function build(args, n)
    local out = new_tab(1 + n * 5, 0)
    local i = 1
    out[i] = "*" .. n .. "\r\n"
    for k = 1, n do
        local a = args[k]
        if type(a) ~= "string" then a = tostring(a) end
        out[i + 1] = "$"
        out[i + 2] = #a
        out[i + 3] = "\r\n"
        out[i + 4] = a
        out[i + 5] = "\r\n"
        i = i + 5
    end
    return out
end

-- Reads one reply. Returns value, err; an error reply is (false, message).
local function read_reply(self)
    local sock = self._sock
    local line, err = sock:receive("*l")
    if not line then
        self._broken = true
        return nil, err
    end
    local kind = byte(line, 1)
    if kind == 36 then -- '$' bulk string
        local len = tonumber(sub(line, 2))
        if not len then
            self._broken = true
            return nil, "bad bulk length"
        end
        if len < 0 then return null end
        local data, derr = sock:receive(len + 2)
        if not data then
            self._broken = true
            return nil, derr
        end
        return sub(data, 1, len)
    elseif kind == 43 then -- '+' status
        return sub(line, 2)
    elseif kind == 45 then -- '-' error
        return false, sub(line, 2)
    elseif kind == 58 then -- ':' integer
        return tonumber(sub(line, 2))
    elseif kind == 42 then -- '*' array
        local n = tonumber(sub(line, 2))
        if not n then
            self._broken = true
            return nil, "bad array length"
        end
        if n < 0 then return null end
        local vals = new_tab(n, 0)
        for i = 1, n do
            local v, verr = read_reply(self)
            if v == nil then return nil, verr end
            if v == false then
                -- An error inside an array (e.g. EXEC) is kept as lua-resty-redis does: {false, msg}.
                vals[i] = { false, verr }
            else
                vals[i] = v
            end
        end
        return vals
    end
    self._broken = true
    return nil, "unexpected reply: " .. line
end

--- Sends any command: red:command("GET", "k"). Returns the reply.
function methods:command(...)
    local n = select("#", ...)
    local ok, err = self._sock:send(build({ ... }, n))
    if not ok then
        self._broken = true
        return nil, err
    end
    return read_reply(self)
end

function methods:read_reply()
    return read_reply(self)
end

local function define(name)
    local upper = name:upper()
    methods[name] = function(self, ...)
        return self:command(upper, ...)
    end
end
for _, name in ipairs({ "get", "set", "del", "mget", "exists", "expire", "eval", "evalsha", "script", "publish",
    "ping", "auth", "select", "info", "incr", "hget", "hset", "hgetall" }) do
    define(name)
end

--- SUBSCRIBE: the connection is then only for read_reply() (messages) until unsubscribe().
function methods:subscribe(...)
    local n = select("#", ...)
    local args = { "SUBSCRIBE", ... }
    local ok, err = self._sock:send(build(args, n + 1))
    if not ok then
        self._broken = true
        return nil, err
    end
    self._subscribed = true
    -- One confirmation per channel: return the first, read the others so the next read is a message.
    local first, ferr = read_reply(self)
    if not first then return first, ferr end
    for _ = 2, n do
        local r, rerr = read_reply(self)
        if not r then return r, rerr end
    end
    return first
end

function methods:unsubscribe(...)
    local n = select("#", ...)
    local args = { "UNSUBSCRIBE", ... }
    local ok, err = self._sock:send(build(args, n + 1))
    if not ok then
        self._broken = true
        return nil, err
    end
    local res, rerr = read_reply(self)
    if not res then return res, rerr end
    -- With no channel named, Redis answers one reply per channel; the last one has count 0.
    if type(res) == "table" and res[3] == 0 then self._subscribed = false end
    return res
end

-- ---------------------------------------------------------------------------------------------
-- Connection settings and the pooled connect used by graygate's modules.

--- Parses redis://[user:password@]host[:port][/db] (and rediss:// is refused: no TLS here).
--- Returns a settings table or nil and an error naming what is wrong.
function _M.parse_url(url)
    if type(url) ~= "string" then return nil, "redis url: expected a string" end
    local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
    if scheme ~= "redis" then
        return nil, "redis url: only redis://host:port[/db] is supported by the OpenResty data plane (got " .. tostring(scheme) .. "://)"
    end
    local userinfo, hostpart = rest:match("^(.*)@([^@]*)$")
    if not userinfo then hostpart = rest end
    local hostport, path = hostpart:match("^([^/]*)(.*)$")
    local host, port
    if hostport:sub(1, 1) == "[" then
        host, port = hostport:match("^%[([^%]]+)%]:?(%d*)$")
    else
        host, port = hostport:match("^([^:]*):?(%d*)$")
    end
    if not host or host == "" then return nil, "redis url: no host" end
    local settings = { host = host, port = tonumber(port) or 6379, db = 0 }
    if path ~= "" and path ~= "/" then
        local db = tonumber(path:match("^/(%d+)$"))
        if not db then return nil, "redis url: the path must be a database number" end
        settings.db = db
    end
    if userinfo then
        local user, pass = userinfo:match("^([^:]*):(.*)$")
        if user then
            settings.username = user ~= "" and ngx.unescape_uri(user) or nil
            settings.password = ngx.unescape_uri(pass)
        else
            settings.password = ngx.unescape_uri(userinfo)
        end
    end
    return settings
end

local function pool_name(s)
    local name = s.pool_name
    if name then return name end
    name = "graygate-redis:" .. s.host .. ":" .. s.port .. ":" .. (s.db or 0)
    if s.password then name = name .. ":" .. ngx.crc32_long((s.username or "") .. "\0" .. s.password) end
    s.pool_name = name
    return name
end

--- A connected, authenticated client for `s` (from parse_url, plus optional connect_timeout,
--- send_timeout, read_timeout in ms, pool_size): reused from this worker's pool when one is idle.
--- `timeout_ms`, when given, is each of the three timeouts instead (a caller with a deadline).
function _M.connect(s, timeout_ms)
    local red, err = _M.new(s.force_builtin)
    if not red then return nil, err end
    if timeout_ms then
        red:set_timeouts(timeout_ms, timeout_ms, timeout_ms)
    else
        red:set_timeouts(s.connect_timeout or 200, s.send_timeout or 1000, s.read_timeout or 1000)
    end
    local ok, cerr = red:connect(s.host, s.port, { pool = pool_name(s), pool_size = s.pool_size or 32 })
    if not ok then return nil, "redis connect: " .. tostring(cerr) end
    if (red:get_reused_times() or 0) == 0 then
        if s.password then
            local res, aerr
            if s.username then
                res, aerr = red:auth(s.username, s.password)
            else
                res, aerr = red:auth(s.password)
            end
            if not res then
                red:close()
                return nil, "redis auth: " .. tostring(aerr)
            end
        end
        if s.db and s.db ~= 0 then
            local res, serr = red:select(s.db)
            if not res then
                red:close()
                return nil, "redis select: " .. tostring(serr)
            end
        end
    end
    return red
end

--- Returns a connection to this worker's pool (idle 30 s, up to pool_size kept).
function _M.release(red, s)
    local ok, err = red:set_keepalive((s and s.idle_timeout) or 30000, (s and s.pool_size) or 32)
    if not ok then red:close() end
    return ok, err
end

--- EVALSHA with the script's text as fallback when Redis answers NOSCRIPT (after a restart or
--- SCRIPT FLUSH). `sha` is the script's SHA1 hex (ngx.sha1_bin + to hex, computed once by the caller).
function _M.eval_cached(red, sha, script, nkeys, ...)
    local res, err = red:evalsha(sha, nkeys, ...)
    if res == false and err and sub(err, 1, 8) == "NOSCRIPT" then
        return red:eval(script, nkeys, ...)
    end
    return res, err
end

--- The SHA1 of a script as Redis names it (lowercase hex).
function _M.sha1_hex(script)
    local bin = ngx.sha1_bin(script)
    local out = new_tab(20, 0)
    for i = 1, 20 do out[i] = string.format("%02x", byte(bin, i)) end
    return concat(out)
end

return _M
