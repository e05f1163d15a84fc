-- Loads every graygate module in nginx's master process, before it forks its workers:
--
--   init_by_lua_block { require("graygate.preload")() }
--
-- The workers inherit the loaded modules (package.loaded) and never open a graygate file. nginx
-- started as root runs its workers as another user (`nobody`, or the `user` directive's, such as
-- www-data), who often cannot read graygate's directory: a package installed under /root (0700),
-- a clone inside a `mktemp -d` directory. Loaded in the master, which reads them as root, the
-- modules reach the workers all the same; a worker nginx starts later (a crashed one replaced,
-- a reload's new workers) is forked from a master that has them too, since a reload runs
-- init_by_lua again in the new configuration's Lua state.
--
-- Loading a module only defines its functions and tables: timers, shared-dict keys and other
-- per-worker state start in each module's init_worker function, run in every worker.
--
-- Every file of openresty/graygate/ is listed, also those the request path loads only when a
-- feature is used (tls, token, resp), dependencies first.
local MODULES = {
    "memo",
    "murmur3",
    "identity",
    "request",
    "decide",
    "resp",
    "token",
    "metrics",
    "config",
    "balancer",
    "tls",
    "access",
}

--- Requires every module (an error names the module that failed; nginx then refuses to start,
--- which `nginx -t` shows too). Returns the list of module names.
return function()
    local require = require
    for i = 1, #MODULES do
        require("graygate." .. MODULES[i])
    end
    return MODULES
end
