-- Redis Sentinel, for real: a master, a replica and three redis-sentinel
-- processes; the Express app writes its sessions through connect-redis on
-- node-redis's Sentinel client; the gateway (2 workers) finds the master
-- through the sentinels.  Under a steady handshake load, the master is
-- killed: handshakes fail with 503 only while the sentinels fail over, no
-- verdict is ever wrong (each cookie's expected verdict is the app's own,
-- read from /whoami before the kill), sessions written before the kill are
-- read after it, and a logout after the failover closes the user's socket.
-- No nginx reload.  Then the faults: a sentinel that is down, one that
-- lies (names a replica, or an address where nothing listens), and the
-- options that are refused.
local redis_ha = require "support.redis_ha"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local ws_raw = require "support.ws_raw"
local socket = require "socket"
local http = require "socket.http"
local proc = require "support.proc"

local SECRET = "sentinel spec secret"

-- The gateway: guard mode on /hs, terminate mode on /ws, the master in use
-- on /where.  sentinels: the Lua list of { host, port } source.
local function gateway(sentinels, extra)
    return nginx_server.start {
        workers = 2,
        http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        store = passport.redis { sentinels = %s, master_name = "mymaster",
                                 connect_timeout = 300, read_timeout = 1000,
                                 cache_ttl = 30000, cache_coherent = true, %s }
        auth = passport.authorize { secret = %q, store = store }
    }
    init_worker_by_lua_block {
        require("resty.passport").init_worker { store = store, logout = { configure = true } }
    }
]]):format(sentinels, extra or "", SECRET),
        server = [[
        location = /hs { access_by_lua_block { auth:access() } content_by_lua_block { ngx.print("ok") } }
        location = /where { content_by_lua_block { store:get("none"); ngx.print(tostring(store:address())) } }
        location = /ws {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth)
                if not s then return end
                s:send("hello")
                while s:recv() do end
            }
        }
]],
    }
end

local function lua_list(addrs)
    local out = {}
    for i, a in ipairs(addrs) do out[i] = ("{ %q, %d }"):format(a[1], a[2]) end
    return "{ " .. table.concat(out, ", ") .. " }"
end

local function handshake(port, cookie)
    local _, status = http.request {
        url = "http://127.0.0.1:" .. port .. "/hs",
        headers = { Cookie = cookie },
        sink = function() return 1 end,
    }
    return status
end

describe("Redis Sentinel", function()
    local ha, app, nginx
    local users = {} -- { cookie, accepted = the app's verdict }

    setup(function()
        ha = redis_ha.sentinel { down_after = 1000, failover_timeout = 5000 }
        local roots = {}
        for i, s in ipairs(ha.sentinels) do roots[i] = "127.0.0.1:" .. s.port end
        app = node.start_app { REDIS_SENTINELS = table.concat(roots, ","),
                               REDIS_MASTER_NAME = "mymaster", SECRET = SECRET }
        for _, who in ipairs { { "ann", "pw1" }, { "bob", "pw2" }, { "zero", "pw0" } } do
            users[#users + 1] = { cookie = (node.login(app.port, who[1], who[2])), name = who[1] }
        end
        for _ = 1, 3 do -- anonymous sessions: records the gateway must refuse
            local _, _, headers = node.request(app.port, "GET", "/visit")
            users[#users + 1] = { cookie = headers["set-cookie"]:match("^([^;]+)"), name = "anonymous" }
        end
        for _, u in ipairs(users) do
            local _, who = node.request(app.port, "GET", "/whoami", { headers = { Cookie = u.cookie } })
            u.accepted = who.logged_in
        end
        local addrs = {}
        for i, s in ipairs(ha.sentinels) do addrs[i] = { "127.0.0.1", s.port } end
        nginx = gateway(lua_list(addrs))
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if app then app:stop() end
        if ha then ha:stop() end
    end)

    it("follows a failover: 503 only in the window, no wrong verdict, logout after it closes sockets", function()
        assert.equal(6, #users)
        local _, master_port = ha:master_addr(1)
        assert.equal("127.0.0.1:" .. master_port, select(2, nginx:get("/where")))

        -- ann's socket, held across the failover
        local ws, status = ws_raw.connect(nginx.port, "/ws", { Cookie = users[1].cookie })
        assert.equal(101, status)
        assert.equal("hello", ws:read_frame(2).payload)

        local wrong, errors, total = {}, 0, 0
        local t_kill, first_ok, last_err
        local function one(i)
            local u = users[i % #users + 1]
            local st = handshake(nginx.port, u.cookie)
            total = total + 1
            local now = socket.gettime()
            if st == 503 then
                errors = errors + 1
                last_err = now
                assert(t_kill, "a 503 before the master was killed")
            elseif (st == 200) ~= u.accepted or (st ~= 200 and st ~= 401) then
                wrong[#wrong + 1] = u.name .. " got " .. tostring(st)
            elseif t_kill and not first_ok and st == 200 then
                first_ok = now
            end
        end
        local i = 0
        local t_end = socket.gettime() + 1
        while socket.gettime() < t_end do i = i + 1; one(i) end

        t_kill = ha:kill_master()
        local deadline = t_kill + 30
        -- until the sentinels have promoted the replica and the gateway has
        -- served 2 s without an error since
        while socket.gettime() < deadline do
            i = i + 1
            one(i)
            local now = socket.gettime()
            if first_ok and now - (last_err or first_ok) > 2 and now - first_ok > 2 then break end
        end
        local new_port = ha:wait_failover(master_port, 20)
        print(("\n  failover: master killed -> first accepted handshake %.2f s; "
               .. "503s %d of %d handshakes; last 503 %.2f s after the kill; wrong verdicts %d")
              :format((first_ok or 0) - t_kill, errors, total, (last_err or t_kill) - t_kill, #wrong))
        assert.same({}, wrong)
        assert.truthy(first_ok, "no handshake accepted after the kill")
        assert.is_true(first_ok - t_kill < 15)
        assert.truthy(errors > 0, "the kill went unnoticed: no 503 at all")

        -- every session written before the kill, read from the new master
        assert.equal("127.0.0.1:" .. new_port, select(2, nginx:get("/where")))
        for _, u in ipairs(users) do
            assert.equal(u.accepted and 200 or 401, handshake(nginx.port, u.cookie))
        end

        -- a logout through the app (its Sentinel client on the new master)
        local st
        for _ = 1, 50 do
            st = node.request(app.port, "POST", "/logout", { headers = { Cookie = users[1].cookie } })
            if st == 200 then break end
            socket.sleep(0.2)
        end
        assert.equal(200, st)
        local code, reason = ws:read_close(10)
        assert.equal(4401, code)
        assert.equal("session ended", reason)
        ws:close()
        -- and the coherent cache, started over, serves no stale record
        assert.equal(401, handshake(nginx.port, users[1].cookie))
        assert.equal(200, handshake(nginx.port, users[2].cookie))
        nginx:assert_clean_log()
    end)
end)

describe("Redis Sentinel faults", function()
    local ha, nginx, fake

    setup(function()
        ha = redis_ha.sentinel { down_after = 1000, failover_timeout = 5000 }
    end)

    teardown(function()
        if fake then proc.sh("kill " .. fake) end
        if nginx then nginx:stop() end
        if ha then ha:stop() end
    end)

    local function sessions()
        ha.master:call("SET", "sess:fault1", '{"cookie":{"originalMaxAge":null},"passport":{"user":1}}')
    end

    it("skips a sentinel that is down, and one that names a replica or a dead address", function()
        sessions()
        -- a lying sentinel (Node, spec/support/app/fake_sentinel.js):
        -- it names the replica as the master
        local liar = nginx_server.free_port()
        local dead = nginx_server.free_port()
        local down = nginx_server.free_port()
        local pid = proc.sh("cd " .. proc.q(nginx_server.root) .. " && nohup node spec/support/app/fake_sentinel.js "
                            .. liar .. " 127.0.0.1 " .. ha.replica.port .. " >/dev/null 2>&1 & echo $!")
        fake = tonumber(pid)
        local t = socket.gettime() + 5
        while socket.gettime() < t do
            local c = socket.connect("127.0.0.1", liar)
            if c then c:close() break end
            socket.sleep(0.05)
        end
        nginx = nginx_server.start {
            workers = 1,
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        liar = passport.redis { sentinels = { { "127.0.0.1", %d }, { "127.0.0.1", %d },
                                              { "127.0.0.1", %d } },
                                master_name = "mymaster", connect_timeout = 300 }
        nomaster = passport.redis { sentinels = { { "127.0.0.1", %d } }, master_name = "othermaster" }
        dead = passport.redis { sentinels = { { "127.0.0.1", %d } }, master_name = "mymaster" }
    }
]]):format(down, liar, ha.sentinels[2].port, ha.sentinels[1].port, dead),
            server = [[
        location = /get { content_by_lua_block {
            local s = ({ liar = liar, nomaster = nomaster, dead = dead })[ngx.var.arg_s]
            local v, err = s:get("fault1")
            ngx.print(v and "found" or ("error: " .. tostring(err)))
        } }
]],
        }
        -- down, then the liar (a replica), then a real sentinel: found
        local _, body = nginx:get("/get?s=liar")
        assert.equal("found", body)
        local _, b2 = nginx:get("/get?s=nomaster")
        if not b2:find("no master", 1, true) then print(nginx:error_log()) end
        assert.matches("no master for 'othermaster'", b2, 1, true)
        assert.matches("knows no master named 'othermaster'", b2, 1, true)
        local _, b3 = nginx:get("/get?s=dead")
        assert.matches("no master for 'mymaster'", b3, 1, true)
        nginx:assert_clean_log()
    end)

    it("refuses bad options at configuration time", function()
        local redis = require "resty.passport.store.redis"
        assert.has_error(function() redis.new { sentinels = {} } end,
            "bad option 'sentinels' to 'redis.new' (needs nginx: outside nginx the hiredis client talks to one server)")
        assert.has_error(function() redis.new { master_name = "x" } end,
            "bad option 'master_name' to 'redis.new' (needs sentinels or cluster)")
        assert.has_error(function() redis.new { sentinels = { { "h", 1 } }, port = 6379 } end,
            "bad option 'port' to 'redis.new' (the address comes from sentinels)")
        assert.has_error(function() redis.new { sentinels = { { "h", 1 } }, cluster = { { "h", 1 } } } end,
            "bad option 'cluster' to 'redis.new' (give sentinels or cluster, not both)")
    end)
end)
