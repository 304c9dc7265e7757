-- `luarocks make` builds the rock from a clean copy of the tree into a temp
-- tree, and plain luajit loads it from there (no LD_LIBRARY_PATH).
local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1; echo \"rc=$?\""))
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("rc=(%d+)%s*$"))
    return rc, out
end

describe("the rock", function()
    local tmp

    setup(function()
        tmp = os.tmpname()
        os.remove(tmp)
        assert(sh("mkdir -p " .. tmp .. "/src") == 0)
        local rc, out = sh("git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C " .. tmp .. "/src")
        assert(rc == 0, out)
    end)

    teardown(function()
        if tmp then sh("rm -rf " .. tmp) end
    end)

    it("builds with luarocks make and loads in plain luajit", function()
        local rc, out = sh("cd " .. tmp .. "/src && rm -rf build && luarocks --lua-version=5.1 make --tree="
                           .. tmp .. "/tree rockspec/lua-resty-passport-scm-1.rockspec")
        assert.equal(0, rc, out)
        local script = ([[
package.path = "%s/tree/share/lua/5.1/?.lua;" .. package.path
package.cpath = "%s/tree/lib/lua/5.1/?.so;" .. package.cpath
local cookie = require "resty.passport.cookie"
local core = require "resty.passport.core"
assert(cookie.unsign(cookie.sign("sid", "k"), "k") == "sid")
io.write(core.path)
]]):format(tmp, tmp)
        local f = assert(io.open(tmp .. "/load.lua", "w"))
        f:write(script)
        f:close()
        rc, out = sh("cd / && env -u LD_LIBRARY_PATH -u LUA_PATH -u LUA_CPATH luajit " .. tmp .. "/load.lua")
        assert.equal(0, rc, out)
        assert.matches(tmp .. "/tree/lib/lua/5.1/librestypassport.so", out, 1, true)
    end)
end)
