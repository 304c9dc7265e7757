-- The verify hot path must stay inside compiled traces: no NYI, no abort.
local cookie = require "resty.passport.cookie"

local function trace_log(fn)
    local path = os.tmpname()
    local v = require "jit.v"
    jit.flush()
    v.on(path)
    fn()
    v.off()
    local f = assert(io.open(path))
    local log = f:read("*a")
    f:close()
    os.remove(path)
    return log
end

describe("JIT", function()
    local ring = cookie.keyring { "new", "old" }
    local header = "_ga=GA1.2.3; theme=dark; connect.sid="
        .. cookie.sign("Xk2mN8pQ4rT6vW9yB1cE3fH5jL7nP0sU", "old"):gsub(":", "%%3A")
        .. "; lang=en; csrf=abc"

    it("compiles the express_sid verify loop without aborts", function()
        local hits = 0
        local log = trace_log(function()
            for _ = 1, 5000 do
                if cookie.express_sid(header, "connect.sid", ring) then
                    hits = hits + 1
                end
            end
        end)
        assert.equal(5000, hits)
        -- Compiled as a loop trace, or (when earlier specs already made the
        -- callee hot) as a root trace of express_sid that the loop links to.
        assert.is_truthy(log:match("%[TRACE%s+%d+ jit_spec%.lua:%d+ loop%]")
                         or log:match("%[TRACE%s+%d+ cookie%.lua:%d+"), log)
        assert.not_matches("NYI", log)
        assert.not_matches("TRACE %-%-%-", log)
    end)

    it("would notice an abort (the check itself can fail)", function()
        local log = trace_log(function()
            local f = function() end
            for _ = 1, 500 do
                local _ = string.dump(f) -- not compiled by LuaJIT
            end
        end)
        assert.matches("TRACE %-%-%-", log)
    end)
end)
