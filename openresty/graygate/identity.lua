-- Who the caller is, as the Node data plane decides it: the form's identity sources in order
-- (header, cookie, query, clientIp, tokenLookup through the resolver the caller passes), then
-- the anonymous cookie. Also the caller's address through trusted proxies (X-Forwarded-For).

local _M = {}

-- is_canonical_user_id(value) -> boolean: what a store value must look like to be a user id
-- (1..256 printable ASCII, no leading zero on a number); for token resolvers.
function _M.is_canonical_user_id(value)
    error("identity.is_canonical_user_id: not implemented yet")
end

return _M
