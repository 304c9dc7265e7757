-- Every function csrc/passport.h exports is declared in ffi.lua's cdefs and
-- resolves in the built library: the two copies of the contract agree.
local core = require "resty.passport.ffi"

describe("the FFI contract", function()
    it("declares and resolves every RP_API function of passport.h", function()
        local f = assert(io.open("csrc/passport.h"))
        local header = f:read("*a")
        f:close()
        local names = {}
        for decl in header:gmatch("\nRP_API[^;]-%(") do
            names[#names + 1] = decl:match("([%w_]+)%s*%($")
        end
        assert.is_true(#names >= 15, "found only " .. #names .. " functions")
        for _, name in ipairs(names) do
            local ok, err = pcall(function() return core.C[name] end)
            assert(ok, name .. ": " .. tostring(err))
        end
    end)
end)
