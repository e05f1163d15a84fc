-- Just enough RESP over ngx.socket.tcp for GET: Debian packages no lua-resty-redis, and the
-- recipe needs nothing more. Used by both recipe variants of bench/compare.mjs.
local _M = {}

local HOST = "127.0.0.1"
local PORT = tonumber(os.getenv("BENCH_REDIS_PORT") or "") or 6379

-- A cosocket to Redis; reuses an idle one from this worker's keepalive pool when release() put
-- one there (the tuned variant), so "connect" is a new TCP connection only for the published one.
function _M.connect()
    local sock = ngx.socket.tcp()
    sock:settimeouts(200, 1000, 1000) -- connect, send, read (ms)
    local ok, err = sock:connect(HOST, PORT)
    if not ok then return nil, "redis connect: " .. tostring(err) end
    return sock
end

-- GET key: the string, or nil when the key is absent; an error string second on failure.
function _M.get(sock, key)
    local ok, err = sock:send({ "*2\r\n$3\r\nGET\r\n$", #key, "\r\n", key, "\r\n" })
    if not ok then return nil, "redis send: " .. tostring(err) end
    local line, rerr = sock:receive("*l")
    if not line then return nil, "redis read: " .. tostring(rerr) end
    local kind = line:sub(1, 1)
    if kind == "$" then
        local len = tonumber(line:sub(2))
        if len < 0 then return nil end
        local data, derr = sock:receive(len + 2)
        if not data then return nil, "redis read: " .. tostring(derr) end
        return data:sub(1, len)
    elseif kind == "-" then
        return nil, "redis error: " .. line:sub(2)
    end
    return nil, "redis: unexpected reply " .. line
end

function _M.close(sock) sock:close() end

-- Back into the per-worker keepalive pool (10 s idle, 64 per worker).
function _M.release(sock)
    if not sock:setkeepalive(10000, 64) then sock:close() end
end

return _M
