-- Test-only endpoints over graygate's Lua modules, for the conformance suites: each takes a
-- batch of cases as one JSON body and answers one JSON array, so thousands of cases cost one
-- request, not one nginx each.
local cjson = require("cjson.safe")
local murmur3 = require("graygate.murmur3")

local _M = {}

local function body_json()
    ngx.req.read_body()
    local data = ngx.req.get_body_data()
    if not data then
        local file = ngx.req.get_body_file()
        if file then
            local f = assert(io.open(file, "rb"))
            data = f:read("*a")
            f:close()
        end
    end
    return assert(cjson.decode(data or "null"))
end

local function reply(value)
    ngx.header["content-type"] = "application/json"
    ngx.print(cjson.encode(value))
end

-- [{ key = base64 bytes, seed = number }] -> [{ hash = uint32, bucket = 0..9999 }]
function _M.murmur3()
    local cases = body_json()
    local out = {}
    for i, case in ipairs(cases) do
        local key = ngx.decode_base64(case.key)
        out[i] = { hash = murmur3.hash(key, case.seed), bucket = #key > 0 and murmur3.bucket(key, case.seed) or -1 }
    end
    reply(out)
end

return _M
