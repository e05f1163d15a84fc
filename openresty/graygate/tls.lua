-- graygate's TLS certificates inside nginx.
--
-- graygate's control plane reads, checks and watches the certificate files, and pushes the set
-- that loads (PEM texts and the server names of each pair) to the control socket
-- (`_M.serve_control`, POST /graygate/tls). It is kept in the `graygate_tls` shared dict with a
-- version; the certificate phase of every handshake (`_M.certificate`, ssl_certificate_by_lua)
-- compares that version with the one this worker parsed, parses a new set once per worker, and
-- sets the pair the client's server name selects: exact names first, then `*.` wildcards one
-- label deep, the first pair when nothing matches or no name was sent (as graygate's own
-- listener chooses). A renewed certificate therefore reaches new handshakes without a reload;
-- connections already open keep the certificate they were made with.
local cjson = require "cjson.safe"
local ssl = require "ngx.ssl"
local ngx = ngx
local type = type
local lower = string.lower
local find = string.find
local sub = string.sub

local _M = {}

local FORMAT = "graygate-openresty-tls/1"
local DICT = "graygate_tls"

local dict
-- This worker's parsed set, and the version it was parsed at.
local parsed_version = -1
local exact, wildcard, fallback = {}, {}, nil
-- True when the set is nginx.conf's own certificate: nothing to change in a handshake.
local placeholder = true
-- The parsed CA chain client certificates are verified against (nil: no verification).
local client_ca = nil
-- How many certificates deep a client's chain may be (OpenSSL's own default).
local VERIFY_DEPTH = 100

--- Parses a decoded set into { exact = name -> pair, wildcard = domain -> pair, fallback = pair };
--- nil and a message when OpenSSL refuses a certificate or key.
local function parse(set)
    if type(set) ~= "table" or set.format ~= FORMAT or type(set.version) ~= "number" or type(set.certificates) ~= "table" or #set.certificates == 0 then
        return nil, "not a " .. FORMAT .. " certificate set"
    end
    local by_name, by_domain, first = {}, {}, nil
    for i, entry in ipairs(set.certificates) do
        local cert, err = ssl.parse_pem_cert(entry.cert or "")
        if not cert then return nil, "certificates[" .. (i - 1) .. "].cert: " .. (err or "does not parse") end
        local key
        key, err = ssl.parse_pem_priv_key(entry.key or "")
        if not key then return nil, "certificates[" .. (i - 1) .. "].key: " .. (err or "does not parse") end
        local pair = { cert = cert, key = key }
        first = first or pair
        for _, name in ipairs(entry.names or {}) do
            -- The first pair naming a host wins, as the list's order says.
            if sub(name, 1, 2) == "*." then
                local domain = sub(name, 3)
                if by_domain[domain] == nil then by_domain[domain] = pair end
            elseif by_name[name] == nil then
                by_name[name] = pair
            end
        end
    end
    local ca
    if set.ca ~= nil then
        local err
        ca, err = ssl.parse_pem_cert(set.ca)
        if not ca then return nil, "ca: " .. (err or "does not parse") end
    end
    return { exact = by_name, wildcard = by_domain, fallback = first, placeholder = set.placeholder == true, ca = ca }
end

--- Brings this worker's parsed set up to the dict's version (parsing at most once per version).
local function refresh()
    dict = dict or ngx.shared[DICT]
    local version = dict:get("version")
    if version == nil or version == parsed_version then return end
    local set = cjson.decode(dict:get("set") or "")
    local view, err = parse(set)
    if not view then
        -- Checked when it was pushed; a set that fails here is logged once and the old one kept.
        ngx.log(ngx.ERR, "graygate: TLS certificate set ", version, " not loaded: ", err)
        parsed_version = version
        return
    end
    exact, wildcard, fallback, placeholder, client_ca = view.exact, view.wildcard, view.fallback, view.placeholder, view.ca
    parsed_version = set.version
end

--- ssl_certificate_by_lua: sets the certificate the server name selects, and asks for a client
--- certificate when a CA was pushed.
--- `verifies`: the settings ask for client certificates (written into nginx.conf), so a handshake
--- before graygate pushed the CA is refused rather than let through unverified.
function _M.certificate(verifies)
    refresh()
    if verifies and client_ca == nil then
        ngx.log(ngx.WARN, "graygate: no client CA pushed yet; handshake refused")
        return ngx.exit(ngx.ERROR)
    end
    if client_ca ~= nil then
        -- Asks the client for a certificate; the handshake goes on either way and nginx records
        -- the outcome in $ssl_client_verify, which the server block answers (495 / 496).
        local ok, err = ssl.verify_client(client_ca, VERIFY_DEPTH)
        if not ok then
            ngx.log(ngx.ERR, "graygate: could not ask for a client certificate: ", err)
            return ngx.exit(ngx.ERROR)
        end
    end
    if placeholder or fallback == nil then return end
    local pair = fallback
    local name = ssl.server_name()
    if name then
        name = lower(name)
        pair = exact[name]
        if pair == nil then
            local dot = find(name, ".", 1, true)
            if dot and dot > 1 then pair = wildcard[sub(name, dot + 1)] end
            pair = pair or fallback
        end
    end
    local ok, err = ssl.clear_certs()
    if ok then ok, err = ssl.set_cert(pair.cert) end
    if ok then ok, err = ssl.set_priv_key(pair.key) end
    if not ok then
        ngx.log(ngx.ERR, "graygate: could not set the TLS certificate: ", err)
        return ngx.exit(ngx.ERROR)
    end
end

--- The control socket's /graygate/tls: POST a set (kept if it parses and is newer), GET what is held.
function _M.serve_control()
    dict = dict or ngx.shared[DICT]
    ngx.header.content_type = "application/json"
    if ngx.req.get_method() == "POST" then
        ngx.req.read_body()
        local body = ngx.req.get_body_data()
        if not body then
            local file = ngx.req.get_body_file()
            if file then
                local f = io.open(file, "rb")
                if f then body = f:read("*a") f:close() end
            end
        end
        local set = cjson.decode(body or "")
        local view, err = parse(set)
        if not view then
            ngx.status = 400
            ngx.say(cjson.encode({ error = err }))
            return
        end
        local held = dict:get("version")
        if held ~= nil and held >= set.version then
            ngx.say(cjson.encode({ stored = false, version = held }))
            return
        end
        -- The set first, then its version: a worker that sees the version finds the set.
        local ok, serr = dict:set("set", body)
        if ok then ok, serr = dict:set("version", set.version) end
        if not ok then
            ngx.status = 500
            ngx.say(cjson.encode({ error = "graygate_tls shared dict: " .. (serr or "set failed") }))
            return
        end
        ngx.say(cjson.encode({ stored = true, version = set.version }))
        return
    end
    ngx.say(cjson.encode({ version = dict:get("version") }))
end

return _M
