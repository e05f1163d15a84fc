-- The `req` table decide.evaluate reads, filled from nginx's variables for the current request
-- (fields documented in decide.lua). Header values are read on demand through a single shared
-- table whose lookups go to ngx.var, so a request allocates one table.

local _M = {}

function _M.new()
    error("request.new: not implemented yet")
end

return _M
