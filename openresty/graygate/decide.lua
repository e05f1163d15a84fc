-- graygate's rules inside OpenResty: evaluates the normalized form graygate emits
-- (src/openresty/form.ts; field by field in docs/openresty.md). The form was validated and
-- compiled by graygate, so nothing here checks it; compile() prepares it once per form version
-- per worker (sets, sorted ranges, CIDR words, ngx.re patterns), and evaluate() is the per-request
-- path: no JSON, no string building, no closures.
--
-- Usage (the access phase):
--   local decide = require("graygate.decide")
--   local request = require("graygate.request")
--   local compiled = decide.compile(cjson.decode(form_json), cjson.decode(settings_json))  -- once per version
--   local req = request.new()                     -- one table per request, filled from ngx.var
--   local decision = decide.evaluate(compiled, req, resolve_token)
--   if not decision then return ngx.exit(404) end -- no service takes the request
--   -- decision.upstream is where to go; decision.stable_upstream on fallback
--
-- `req` fields read by evaluate (request.new() fills them from nginx; tests build them by hand):
--   host        string   Host header without port, lower case; "" when none
--   path        string   the request target's path as sent (not decoded), without the query
--   peer_ip     string   the connected peer (IPv4-mapped IPv6 unwrapped to a.b.c.d)
--   is_tls      boolean  the client's connection to nginx is TLS
--   headers     table    headers[lower-case name] -> first value, raw bytes, or nil
--   args        string   the raw query string without "?", or nil
--   now_ms      number   optional: the clock for timeWindow rules (default ngx.now() * 1000)
-- and written by evaluate (per request results; read them after it returns):
--   user_id          string  the caller's id as the rules saw it (UTF-8), or nil
--   identity_source  string  which source gave it (`header:x-user-id`, `anonymous`...), or nil
--   set_cookie       string  Set-Cookie value of a newly minted anonymous id, or nil
--   client_ip        string  the caller's address as graygate trusts it (computed when read)
--
-- resolve_token(source, token) -> user id string or nil: the tokenLookup source (the form's
-- source table, with keyPrefix/keySuffix, TTLs, deadline) and a well-formed token; may yield
-- (cosockets). nil means unknown (the caller gets no id from this source).
--
-- The decision: a shared, read-only table (never modify it), one per rule / split part:
--   service            string   service name
--   version            string   "stable" | "candidate"
--   upstream           string   upstream name to forward to
--   candidate          string   the candidate's upstream name when version is candidate, else nil
--   reason             string   the rule's name ("rule 2" when unnamed), "split", "idle", "full", "no rule matched"
--   depends_on_caller  boolean
--   vary               string   Vary value to add, or nil
--   private            boolean  the response must be Cache-Control: private
--   stable_upstream    string   the service's stable upstream (fail safe target)
--   stable             table    the service's stable decision (use it when the candidate cannot take the request)

local _M = { FORMAT = "graygate-openresty/1", SETTINGS_FORMAT = "graygate-openresty-settings/1" }

-- form: the decoded normalized form; settings: the decoded normalized settings (or nil: no
-- trusted proxies, no version header). Returns the compiled form (a table evaluate takes), or
-- nil and an error for a form of another format.
function _M.compile(form, settings)
    error("decide.compile: not implemented yet")
end

-- Returns the decision for req, or nil when no service takes it (answer 404).
function _M.evaluate(compiled, req, resolve_token)
    error("decide.evaluate: not implemented yet")
end

-- Response headers the decision calls for (header_filter phase), on `headers` (ngx.header or a
-- table with the same get/set behaviour): the version header (when configured; "stable" when
-- served_upstream is not the decided candidate), Vary merged, Cache-Control rewritten to private
-- (release `cache: private`, or a minted anonymous id), and the anonymous Set-Cookie appended.
function _M.apply_headers(compiled, decision, req, served_upstream, headers)
    error("decide.apply_headers: not implemented yet")
end

return _M
