-- Test-only endpoints over graygate's Lua modules, for the conformance suites: each takes a
-- batch of cases as one JSON body and answers one JSON array, so thousands of cases cost one
-- request, not one nginx each.
local cjson = require("cjson.safe")
local murmur3 = require("graygate.murmur3")
local decide = require("graygate.decide")
local identity = require("graygate.identity")
local request = require("graygate.request")

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

-- [{ pattern = PCRE, values = [base64 UTF-8] }] -> [[matched]], as decide.lua runs a regex test.
function _M.regex()
    local cases = body_json()
    local out = {}
    for i, case in ipairs(cases) do
        local matched = {}
        for j, value in ipairs(case.values) do
            local from, _, err = ngx.re.find(ngx.decode_base64(value), case.pattern, "jou")
            if err then error("pattern " .. case.pattern .. ": " .. err) end
            matched[j] = from ~= nil
        end
        out[i] = matched
    end
    reply(out)
end

local function b64(value)
    if value == nil then return nil end
    return ngx.decode_base64(value)
end

-- Header values, query and peer travel in base64: raw bytes, as nginx would hold them.
local function request_of(case)
    local headers = {}
    for name, value in pairs(case.headers or {}) do headers[name] = b64(value) end
    return {
        host = request.host_without_port(headers["host"]),
        path = case.path,
        args = b64(case.args),
        peer_ip = identity.unwrap_mapped(case.peer),
        is_tls = case.tls == true,
        headers = headers,
        now_ms = case.nowMs,
    }
end

-- [{ form, settings, tokens = { key = value }, cases = [...] }] -> [[{ decision, identity, response headers } | { none = true }]]
-- Each group's form is compiled once, as a worker does once per version.
function _M.decide()
    local groups = body_json()
    local out = {}
    for g, group in ipairs(groups) do
        local compiled, err = decide.compile(group.form, group.settings)
        if not compiled then error(err) end
        local tokens = group.tokens or {}
        local function resolve_token(source, token)
            local value = tokens[source.keyPrefix .. token .. source.keySuffix]
            return value
        end
        local results = {}
        for i, case in ipairs(group.cases) do
            local req = request_of(case)
            local d = decide.evaluate(compiled, req, resolve_token)
            if d == nil then
                results[i] = { none = true }
            else
                local headers = {}
                for name, value in pairs(case.upstreamHeaders or {}) do headers[name:lower()] = value end
                local proxy = setmetatable({}, {
                    __index = function(_, name) return headers[name:lower()] end,
                    __newindex = function(_, name, value) headers[name:lower()] = value end,
                })
                decide.apply_headers(compiled, d, req, case.servedUpstream or d.upstream, proxy)
                results[i] = {
                    service = d.service, version = d.version, upstream = d.upstream, candidate = d.candidate or cjson.null,
                    reason = d.reason, dependsOnCaller = d.depends_on_caller, vary = d.vary or cjson.null, private = d.private,
                    stableUpstream = d.stable_upstream,
                    userId = req.user_id or cjson.null, identitySource = req.identity_source or cjson.null,
                    setCookie = req.set_cookie or cjson.null, headers = headers,
                }
            end
        end
        out[g] = results
    end
    reply(out)
end

return _M
