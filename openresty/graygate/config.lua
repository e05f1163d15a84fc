-- graygate's routing inside nginx: the delivery envelope graygate emits (the normalized form plus
-- the upstreams as the balancer needs them), kept in a shared dict so that every worker of this
-- nginx serves the same one, and swapped without a reload.
--
-- Where envelopes come from:
--   * pushed by graygate's control plane to the internal control location (`_M.serve_control`,
--     on a unix socket in graygate's prefix directory: nothing on the network reaches it);
--   * on the Redis store, read straight from Redis (the key graygate writes, if newer, after every
--     change): one worker per nginx subscribes to graygate's channel and polls the key as a
--     backstop, so a lost message or a reconnect never leaves this nginx behind.
-- Either way graygate validated and compiled the routing before emitting it; this module only
-- checks the envelope's format and that it is newer than what is kept (a duplicate or an older
-- envelope changes nothing).
--
-- Per request: one shared dict read of a sequence number; the envelope is decoded once per new
-- sequence per worker, so no JSON is decoded on the request path in the steady state.
local cjson = require "cjson.safe"
local ngx = ngx
local shared = ngx.shared
local tonumber = tonumber
local type = type
local loaded = package.loaded

local _M = {}

local FORMAT = "graygate-openresty-delivery/1"
local DICT = "graygate_config"

local settings = {}
local dict
-- This worker's decoded view and the sequence number it was decoded at.
local view, view_seq = nil, -1
-- Builds a per-worker view from an envelope (set by the balancer module: upstream tables).
local view_builders = {}
-- This worker's keys in the dict for the version it swapped to and when (set at init_worker), so
-- the status can say what every worker serves, not only what the dict holds.
local worker_version_key, worker_at_key

--- Registers a function `f(view)` run once per new envelope in each worker, to prepare what the
--- request path reads (round-robin state, parsed servers).
function _M.on_view(f)
    view_builders[#view_builders + 1] = f
end

local function now_ms()
    return ngx.now() * 1000
end

--- Whether `env` (decoded) is newer than what the dict holds: another epoch (the store was seeded
--- again; graygate follows it, so does nginx), a higher version, or the same version compiled
--- later (a store key such as Grayscale_Range changed the form but not the version).
local function is_newer(env)
    local epoch = dict:get("epoch")
    local version = dict:get("version")
    if version == nil then return true end
    if (env.epoch or "") ~= (epoch or "") then return true end
    if env.version ~= version then return env.version > version end
    -- The same content again (another graygate of the fleet compiled the same version): a
    -- duplicate, which would only make every worker decode it once more.
    if env.digest ~= nil and env.digest == dict:get("digest") then return false end
    return (env.stamp or 0) > (dict:get("stamp") or 0)
end

--- Stores `raw` (an envelope's JSON text) when it is valid and newer. Returns true when stored,
--- false when it was not newer, or nil and an error.
function _M.accept(raw, source)
    if type(raw) ~= "string" or raw == "" then return nil, "empty envelope" end
    local env = cjson.decode(raw)
    if type(env) ~= "table" or env.format ~= FORMAT then
        return nil, "not a " .. FORMAT .. " envelope"
    end
    if type(env.version) ~= "number" or type(env.form) ~= "table" or type(env.upstreams) ~= "table" then
        return nil, "envelope without version, form or upstreams"
    end
    -- One writer at a time across this nginx's workers: the push and the Redis reader may race.
    local locked
    for _ = 1, 50 do
        locked = dict:add("lock", true, 1)
        if locked then break end
        ngx.sleep(0.001)
    end
    if not is_newer(env) then
        if locked then dict:delete("lock") end
        return false
    end
    dict:set("env", raw)
    dict:set("epoch", env.epoch or "")
    dict:set("version", env.version)
    dict:set("stamp", env.stamp or 0)
    dict:set("digest", env.digest)
    -- Once per change: the cached clock may be a whole event loop turn old.
    ngx.update_time()
    dict:set("accepted_at", now_ms())
    dict:set("source", source or "")
    dict:incr("seq", 1, 0)
    if locked then dict:delete("lock") end
    return true
end

--- This worker's view of the current envelope: `{ version, epoch, form, upstreams, seq }`, or nil
--- before the first one arrived. Decodes only when the shared dict holds a newer envelope.
local function swap(seq)
    local env = cjson.decode(dict:get("env") or "")
    if type(env) ~= "table" then return view end
    env.seq = seq
    for i = 1, #view_builders do view_builders[i](env) end
    view, view_seq = env, seq
    -- Once per version per worker: the cached clock may be a whole event loop turn old.
    ngx.update_time()
    dict:set(worker_version_key, env.version)
    dict:set(worker_at_key, now_ms())
    return view
end

function _M.current()
    local seq = dict:get("seq")
    if seq == view_seq then return view end
    if seq == nil then return nil end
    return swap(seq)
end

-- Every few ms each worker swaps by itself, off the request path: a worker that serves no request
-- for a while still holds the newest routing, and the first request after a change does not pay
-- for decoding and compiling it (a large release's sets take milliseconds). The request path's own
-- check above stays, so a request never waits for this timer.
local SWAP_EVERY = 0.005

-- A sequence number that failed here is left to the request path (which reports it), not retried
-- every few ms.
local failed_seq

local function swap_ahead(premature)
    if premature then return end
    -- The access phase's module adds the compiled rules to every view it is handed: until it is
    -- loaded in this worker (by init_worker, or lazily by the first request with a conf written by
    -- an older graygate), a view built here would lack them.
    if not loaded["graygate.access"] then return end
    local seq = dict:get("seq")
    if seq ~= nil and seq ~= view_seq and seq ~= failed_seq then
        local ok, err = pcall(swap, seq)
        if not ok then
            failed_seq = seq
            ngx.log(ngx.ERR, "graygate: cannot prepare the routing: ", err)
        end
    end
end

--- What this nginx serves: the version and epoch in the shared dict (what every worker swaps to on
--- its next request), and when it was accepted; and per worker, the version it last swapped to
--- (on its first request after the dict changed) and when.
function _M.status()
    local workers = {}
    for id = 0, ngx.worker.count() - 1 do
        workers[id + 1] = { id = id, version = dict:get("worker:" .. id .. ":version") or cjson.null, at = dict:get("worker:" .. id .. ":at") or cjson.null }
    end
    return {
        workers = workers,
        version = dict:get("version"),
        epoch = dict:get("epoch"),
        stamp = dict:get("stamp"),
        digest = dict:get("digest"),
        seq = dict:get("seq"),
        accepted_at = dict:get("accepted_at"),
        source = dict:get("source"),
        worker_pid = ngx.worker.pid(),
        worker_seq = view_seq,
        redis_error = dict:get("redis_error"),
        connections_active = tonumber(ngx.var.connections_active),
        connections_writing = tonumber(ngx.var.connections_writing),
    }
end

--- The settings graygate wrote into the conf (decoded).
function _M.settings()
    return settings
end

-- ---------------------------------------------------------------------------------------------
-- Redis: graygate's derived key, its channel and a poll.

local resp

-- The last envelope text read from Redis by this worker, and the dict's sequence number after it
-- was offered: the poll reads the same text every few seconds, and deciding it is not newer meant
-- decoding all of it (a large release's lists make that tens of milliseconds of the worker's time,
-- a latency spike for the requests it serves meanwhile). The same text again, with nothing
-- accepted since, is skipped; anything else is offered as before.
local last_raw, last_raw_seq

local function offer_from_redis(raw)
    local seq = dict:get("seq")
    if raw == last_raw and seq ~= nil and seq == last_raw_seq then return true end
    local ok, err = _M.accept(raw, "redis")
    if ok ~= nil then last_raw, last_raw_seq = raw, dict:get("seq") end
    return ok, err
end

local function redis_fetch(premature)
    if premature then return end
    local r = settings.redis
    local red, err = resp.connect(r.conn)
    if not red then
        dict:set("redis_error", err)
        return
    end
    local raw, gerr = red:get(r.key)
    if raw == nil or raw == false then
        red:close()
        dict:set("redis_error", "GET " .. r.key .. ": " .. tostring(gerr))
        return
    end
    resp.release(red, r.conn)
    dict:delete("redis_error")
    -- ngx.null: graygate has not written it yet; the last good one stays.
    if type(raw) ~= "string" then return end
    local ok, aerr = offer_from_redis(raw)
    if ok == nil then ngx.log(ngx.WARN, "graygate: ignoring the envelope in ", r.key, ": ", aerr) end
end

-- The subscriber: reads graygate's channel, rereads the key after each (re)subscribe and message.
-- A read times out after ping_ms; a PING then must be answered, else the connection is replaced
-- (a half-open socket looks connected forever).
local function redis_subscribe(premature)
    if premature then return end
    local r = settings.redis
    while not ngx.worker.exiting() do
        local red, err = resp.new(true)
        if red then
            red:set_timeouts(r.conn.connect_timeout or 1000, 1000, r.ping_ms)
            local ok, cerr = red:connect(r.conn.host, r.conn.port)
            err = cerr
            if ok then
                if r.conn.password then
                    if r.conn.username then ok, err = red:auth(r.conn.username, r.conn.password) else ok, err = red:auth(r.conn.password) end
                end
                if ok then ok, err = red:subscribe(r.channel) end
                if ok then
                    redis_fetch(false)
                    local waiting_pong = false
                    while not ngx.worker.exiting() do
                        local msg, rerr = red:read_reply()
                        if msg then
                            waiting_pong = false
                            if type(msg) == "table" and msg[1] == "message" then
                                -- graygate publishes the envelope itself when it is small, which
                                -- saves a round trip to Redis; otherwise its version, and the key is read.
                                local payload = msg[3]
                                if type(payload) == "string" and payload:byte(1) == 123 then -- "{"
                                    local ok, aerr = _M.accept(payload, "redis")
                                    if ok == nil then
                                        ngx.log(ngx.WARN, "graygate: ignoring the envelope published on ", r.channel, ": ", aerr)
                                        redis_fetch(false)
                                    end
                                else
                                    redis_fetch(false)
                                end
                            end
                        elseif rerr == "timeout" and not waiting_pong then
                            waiting_pong = true
                            local sent, perr = red:ping()
                            if sent == nil and perr ~= "timeout" then err = perr break end
                            -- The answer (a pong, or a message that came first): alive; read the
                            -- key too, which makes the poll's job on a quiet channel as well.
                            if type(sent) == "table" then
                                waiting_pong = false
                                redis_fetch(false)
                            end
                        else
                            err = rerr
                            break
                        end
                    end
                end
            end
            red:close()
        end
        if ngx.worker.exiting() then return end
        dict:set("redis_error", "subscribe: " .. tostring(err))
        ngx.sleep(0.5)
    end
end

-- ---------------------------------------------------------------------------------------------
-- Phases.

--- init_worker_by_lua: `json` is the settings graygate wrote into the conf.
function _M.init_worker(json)
    -- LuaJIT's trace limits as OpenResty's own LuaJIT ships them (stock LuaJIT's are 1000 traces of
    -- 4000 IR instructions, 512 KB of machine code), and 1000 constants a trace instead of both
    -- builds' 500: the access phase inlines the decision, the identity and the token cache into
    -- one trace, which the lower limits abort as "trace too long" until LuaJIT blacklists it, and
    -- the request path then runs in the interpreter.
    local jit_ok, jit = pcall(require, "jit")
    if jit_ok and jit and jit.opt then
        jit.opt.start("maxtrace=8000", "maxrecord=16000", "maxirconst=1000", "minstitch=3", "maxmcode=40960")
    end
    settings = cjson.decode(json) or {}
    dict = shared[DICT]
    worker_version_key = "worker:" .. ngx.worker.id() .. ":version"
    worker_at_key = "worker:" .. ngx.worker.id() .. ":at"
    if not dict then
        ngx.log(ngx.ERR, "graygate: lua_shared_dict ", DICT, " is missing; include graygate-http.conf in the http block")
        return
    end
    ngx.timer.every(SWAP_EVERY, swap_ahead)
    if settings.redis then
        resp = require "graygate.resp"
        local r = settings.redis
        -- Login tokens (tokenLookup) are looked up in the same Redis, by every worker.
        require("graygate.token").init({ redis = assert(resp.parse_url(r.url)), dict = "graygate_tokens" })
        -- One worker per nginx reads the routing: the shared dict hands what it reads to the others.
        if ngx.worker.id() == 0 then
            local conn = assert(resp.parse_url(r.url))
            conn.connect_timeout, conn.send_timeout, conn.read_timeout = 1000, 1000, r.timeout_ms or 2000
            conn.pool_size = 4
            r.conn = conn
            r.ping_ms = r.ping_ms or 1000
            ngx.timer.at(0, redis_subscribe)
            ngx.timer.every((r.poll_ms or 2000) / 1000, redis_fetch)
        end
    end
end

--- content_by_lua of the internal control location: POST /config (an envelope), GET /status.
function _M.serve_control()
    local method = ngx.req.get_method()
    local uri = ngx.var.uri
    ngx.header.content_type = "application/json"
    if uri == "/graygate/config" and method == "POST" then
        ngx.req.read_body()
        local body = ngx.req.get_body_data()
        if not body then
            local file = ngx.req.get_body_file()
            if file then
                local f = io.open(file, "rb")
                if f then body = f:read("*a") f:close() end
            end
        end
        local ok, err = _M.accept(body, "push")
        if ok == nil then
            ngx.status = 400
            ngx.say(cjson.encode({ error = err }))
            return
        end
        ngx.say(cjson.encode({ stored = ok, status = _M.status() }))
        return
    end
    if uri == "/graygate/status" then
        ngx.say(cjson.encode(_M.status()))
        return
    end
    ngx.status = 404
    ngx.say('{"error":"not found"}')
end

return _M
