-- The rock, both ways a user gets it: `luarocks make` on the scm rockspec in
-- a clean copy of the tree (plain luajit loads it, no LD_LIBRARY_PATH), and
-- the release's source rock (`make rock`) installed with `luarocks install`
-- into an empty tree, then loaded by nginx from that tree alone.
local proc = require "support.proc"
local nginx_server = require "support.nginx_server"
local cookie = require "resty.passport.cookie"
local VERSION = require("resty.passport.ffi")._VERSION

local ROOT = nginx_server.root
local q = proc.q

local function sh(cmd)
    local out, ok = proc.sh(cmd)
    return ok and 0 or 1, out
end

describe("the rock", function()
    local tmp, rock

    setup(function()
        tmp = os.tmpname()
        os.remove(tmp)
        -- the release's rockspec has the modules' version
        assert(io.open(ROOT .. "/rockspec/lua-resty-passport-" .. VERSION .. "-1.rockspec"))
        local rc, out = sh("make --no-print-directory -C " .. q(ROOT) .. " rock BUILD=" .. q(tmp .. "/build"))
        assert(rc == 0, out)
        rock = "lua-resty-passport-" .. VERSION .. "-1.src.rock"
        -- the same files, unpacked, for luarocks make
        rc, out = sh("mkdir -p " .. tmp .. "/src && tar -xzf " .. tmp .. "/build/rock/v" .. VERSION
                     .. ".tar.gz -C " .. tmp .. "/src --strip-components=1")
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
local lib = require "resty.passport.ffi"
assert(cookie.unsign(cookie.sign("sid", "k"), "k") == "sid")
io.write(lib.path)
]]):format(tmp, tmp)
        local f = assert(io.open(tmp .. "/load.lua", "w"))
        f:write(script)
        f:close()
        rc, out = sh("cd / && env -u LD_LIBRARY_PATH -u LUA_PATH -u LUA_CPATH luajit " .. tmp .. "/load.lua")
        assert.equal(0, rc, out)
        assert.matches(tmp .. "/tree/lib/lua/5.1/librestypassport.so", out, 1, true)
    end)

    it("installs the source rock into an empty tree; nginx loads it from there", function()
        local tree = tmp .. "/release"
        local rc, out = sh("cd " .. tmp .. "/build/rock && luarocks --lua-version=5.1 install --tree="
                           .. tree .. " ./" .. rock)
        assert.equal(0, rc, out)
        local nginx = nginx_server.start {
            http = ([[
    init_by_lua_block {
        -- the rock's tree, and nothing of the repository (which the
        -- spec server's lua_package_path names)
        local tree, root = %q, %q
        local function only_tree(path, first)
            local keep = { first }
            for entry in path:gmatch("[^;]+") do
                if entry:sub(1, #root) ~= root then keep[#keep + 1] = entry end
            end
            return table.concat(keep, ";")
        end
        package.path = only_tree(package.path, tree .. "/share/lua/5.1/?.lua")
        package.cpath = only_tree(package.cpath, tree .. "/lib/lua/5.1/?.so")
        local passport = require "resty.passport"
        auth = passport.authorize {
            secret = "rock secret",
            store = { get = function(_, sid)
                if sid == "rock-sid" then
                    return '{"cookie":{"originalMaxAge":3600000,"expires":null},'
                           .. '"passport":{"user":"ann"}}'
                end
            end },
        }
    }
]]):format(tree, ROOT),
            server = [[
        location = /who {
            access_by_lua_block { auth:access() }
            content_by_lua_block {
                ngx.print(ngx.ctx.passport.user.value, " ",
                          package.searchpath("resty.passport", package.path), " ",
                          require("resty.passport.ffi").path)
            }
        }
]],
        }
        local signed = "connect.sid=" .. cookie.sign("rock-sid", "rock secret"):gsub(":", "%%3A")
        local status, body = nginx:get("/who", { Cookie = signed })
        local forged = nginx:get("/who", { Cookie = "connect.sid="
                                           .. cookie.sign("rock-sid", "other"):gsub(":", "%%3A") })
        local log = nginx:error_log()
        nginx:stop()
        assert.equal(200, status, log)
        assert.equal(("ann %s/share/lua/5.1/resty/passport.lua %s/lib/lua/5.1/librestypassport.so")
                     :format(tree, tree), body)
        assert.equal(401, forged)
    end)
end)
