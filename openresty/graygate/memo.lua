-- Answers remembered for recent string keys, per worker: ids, tokens, header values and peer
-- addresses repeat from request to request, and equal Lua strings are one object, so a table
-- lookup answers in place of the work. That work is a loop over the key's bytes (a scan, a hash,
-- an address parse), and a loop becomes a trace of its own whose exit returns into the caller's
-- frame, which LuaJIT does not compile ("NYI: return to lower frame"): without the memo the rest
-- of the request runs in the interpreter. A table holds at most MAX answers and is then emptied,
-- which bounds its memory; keys longer than the given length are answered but not kept.

local MAX = 4096

--- A function of one string key returning compute(key), remembered for recent keys of at most
--- max_length bytes. compute must not return nil (return false for "no answer").
return function(compute, max_length)
    local memo, n = {}, 0
    return function(key)
        local known = memo[key]
        if known ~= nil then return known end
        known = compute(key)
        if #key <= max_length then
            if n >= MAX then memo, n = {}, 0 end
            memo[key] = known
            n = n + 1
        end
        return known
    end
end
