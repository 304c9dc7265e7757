-- Guard mode (auth:access() in front of the Express app's socket.io server)
-- while Redis fails: killed, frozen (DEBUG SLEEP, CLIENT PAUSE, SIGSTOP),
-- restarted under load, and replying garbage (a fake server, the one fault a
-- real Redis cannot show).  Real nginx with 2 workers, real redis-server,
-- sessions made by the real Express app.  After each fault: no worker died,
-- both workers answer, their fds are back to the baseline, valid users get
-- in again, and nothing unverified ever got in (200 only for a valid user,
-- 503 while the store is down, never 200 for a forged cookie).
-- Reports go to stderr: stdout is busted's JSON, which the test summary reads.
local function say(s) io.stderr:write(tostring(s), "\n") end
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local fault = require "support.fault"
local fake_redis = require "support.fake_redis"
local cookie = require "resty.passport.cookie"
local cjson = require "cjson"
local socket = require "socket"

local SECRET = "keyboard cat"
local READ_TIMEOUT = 400 -- ms, the store's read timeout in this nginx

local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end
local RECORD = '{"cookie":{"originalMaxAge":3600000,"expires":null,'
               .. '"httpOnly":true,"path":"/"},"passport":{"user":7}}'

-- Garbage replies, each for its own sid, with the status the gateway must
-- give: 503 for anything that is not a well-formed reply; a well-formed
-- "no such key" is a 401; the control case is a good record (200), which
-- shows the fake server does reach the gateway.
local GARBAGE = {
    { "control", bulk(RECORD), "reply", 200 },
    { "nil", "$-1\r\n", "reply", 401 },
    { "unknown type", "!oops\r\n", "reply", 503 },
    { "status", "+OK\r\n", "reply", 503 },
    { "integer", ":42\r\n", "reply", 503 },
    { "array", "*1\r\n" .. bulk(RECORD), "reply", 503 },
    { "error", "-ERR no way\r\n", "reply", 503 },
    { "bad length", "$abc\r\nxyz\r\n", "reply", 503 },
    { "negative length", "$-7\r\n", "reply", 503 },
    { "fraction", "$1.5\r\nx\r\n", "reply", 503 },
    { "huge length", "$99999999999999999999\r\n", "reply", 503 },
    { "length over max_value_size", "$2000000\r\n", "reply", 503 },
    { "short body, then close", "$300\r\n" .. RECORD:sub(1, 50), "close", 503 },
    { "short body, then hang", "$300\r\n" .. RECORD:sub(1, 50), "hang", 503 },
    { "no reply, close", "", "close", 503 },
    { "no reply, hang", "", "hang", 503 },
    { "line without CRLF, close", "$12", "close", 503 },
    { "bare LF", "$" .. #RECORD .. "\n" .. RECORD .. "\n", "close", 503 },
    { "not JSON", bulk("<html>oops</html>"), "reply", 503 },
    { "JSON, not an object", bulk("[1,2,3]"), "reply", 503 },
    { "binary", bulk("\0\1\2\255\254"), "reply", 503 },
    { "dripped, then close", "$" .. #RECORD .. "\r\n" .. RECORD:sub(1, 20), "drip", 503 },
    { "dripped whole", bulk(RECORD), "drip", 200 },
}

describe("guard mode while Redis fails", function()
    local redis, app, nginx, fake, probe, base
    local users = {} -- name -> { cookie = ..., id = ... }
    local forged = {}
    local fake_sids = {}

    setup(function()
        redis = redis_server.start {}
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        for _, u in ipairs { { "zero", "pw0", 0 }, { "ann", "pw1", 1 }, { "bob", "pw2", 2 } } do
            users[u[1]] = { cookie = node.login(app.port, u[1], u[2]), id = u[3] }
        end
        local good = users.ann.cookie
        forged = {
            good:sub(1, -2) .. (good:sub(-1) == "A" and "B" or "A"),           -- tampered
            "connect.sid=" .. cookie.sign(fault.sid_of(good), "wrong secret"):gsub(":", "%%3A"),
            "connect.sid=s%3A" .. fault.sid_of(good),                          -- unsigned
            "connect.sid=" .. fault.sid_of(good),                              -- raw sid
        }
        -- garbage cases: a correctly signed sid each, so the store is asked
        local cases = {}
        for i, g in ipairs(GARBAGE) do
            local sid = ("garbage%02d"):format(i)
            cases[sid] = { bytes = g[2], after = g[3] }
            fake_sids[i] = "connect.sid=" .. cookie.sign(sid, SECRET):gsub(":", "%%3A")
        end
        fake = fake_redis.start { cases = cases }
        probe = nginx_server.free_port()
        nginx = nginx_server.start {
            workers = 2,
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = %q,
            store = passport.redis { port = %d, connect_timeout = 400,
                                     read_timeout = %d } }
        auth_fake = passport.authorize { secret = %q,
            store = passport.redis { port = %d, connect_timeout = 400,
                                     read_timeout = %d } }
    }
    upstream app { server 127.0.0.1:%d; }
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
]]):format(SECRET, redis.port, READ_TIMEOUT, SECRET, fake.port, READ_TIMEOUT, app.port),
            server = ([[
        listen 127.0.0.1:%d reuseport;
        location = /_pid { return 200 $pid; }
        location /socket.io/ {
            access_by_lua_block { auth:access() }
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }
        location = /probe {
            access_by_lua_block { auth:access() }
            header_filter_by_lua_block { ngx.header["X-Seen-User"] = ngx.var.http_x_passport_user }
            content_by_lua_block { ngx.print(ngx.var.http_x_passport_user) }
        }
        location = /fake {
            access_by_lua_block { auth_fake:access() }
            content_by_lua_block { ngx.print(ngx.var.http_x_passport_user) }
        }
]]):format(probe),
        }
        -- warm up both workers (pools, lazy loads), then take the baseline
        fault.answering(probe)
        for _ = 1, 20 do nginx:get("/probe", { Cookie = users.ann.cookie }) end
        base = fault.snapshot(nginx, { listen = { nginx.port, probe },
                                       redis = { redis.port, fake.port }, upstream = { app.port } })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if fake then fake:stop() end
        if app then app:stop() end
        if redis then redis:stop() end
    end)

    -- n concurrent /probe requests, one per cookie in turn: list of
    -- { cookie index, status, body, seconds }.
    local function burst(cookies, n, path)
        local socks, t0 = {}, socket.gettime()
        for i = 1, n do
            local k = (i - 1) % #cookies + 1
            socks[i] = { k, nginx:send(path or "/probe", { Cookie = cookies[k] }) }
        end
        local out = {}
        for i, s in ipairs(socks) do
            local st, body = nginx:receive(s[2])
            out[i] = { k = s[1], status = st, body = body, took = socket.gettime() - t0 }
        end
        return out
    end

    local function valid_cookies()
        return { users.zero.cookie, users.ann.cookie, users.bob.cookie }
    end
    local IDS = { 0, 1, 2 }

    -- every valid user in, as itself; every forged cookie out
    local function all_good(n)
        for _, r in ipairs(burst(valid_cookies(), n or 12)) do
            assert.equal(200, r.status, "a valid user was rejected: " .. tostring(r.body))
            assert.same({ value = IDS[r.k], logged_in = true }, cjson.decode(r.body))
        end
        for _, r in ipairs(burst(forged, #forged * 2)) do
            assert.equal(401, r.status, "forged cookie #" .. r.k .. " got " .. tostring(r.status))
        end
    end

    local function check(label)
        all_good()
        local report = fault.invariants(nginx, base, { probe = probe })
        say("\n[" .. label .. "]\n" .. report)
    end

    it("serves valid users and refuses forged cookies before any fault", function()
        all_good(30)
        -- and a real socket.io client gets through to the app
        local r = node.sio_connect("http://127.0.0.1:" .. nginx.port, "websocket", users.bob.cookie)
        assert.is_true(r.connected, cjson.encode(r))
        check("baseline")
    end)

    it("Redis killed: 503 fast, never 200; back to 200 after a restart", function()
        assert.equal("OK", redis:call("SAVE")) -- the restart finds the sessions again
        redis:kill()
        local t0 = socket.gettime()
        for _, r in ipairs(burst(valid_cookies(), 12)) do
            assert.equal(503, r.status)
            assert.matches("Error in session store", cjson.decode(r.body).error, 1, true)
        end
        assert.is_true(socket.gettime() - t0 < 3, "503s took " .. (socket.gettime() - t0) .. " s")
        for _, r in ipairs(burst(forged, 8)) do assert.equal(401, r.status) end
        assert.equal(2, select(2, fault.answering(probe)))
        redis:restart()
        check("redis killed and restarted")
        assert.is_true(node.sio_connect("http://127.0.0.1:" .. nginx.port, "websocket",
                                        users.ann.cookie).connected)
    end)

    it("Redis restarted while handshakes are in flight: 200 or 503, never a wrong answer", function()
        assert.equal("OK", redis:call("SAVE"))
        local lines, expect = {}, {}
        local ids = { zero = 0, ann = 1, bob = 2 }
        for i = 1, 6000 do
            local name = ({ "zero", "ann", "bob" })[i % 3 + 1]
            if i % 4 == 0 then
                lines[i] = "/probe\t" .. forged[i % #forged + 1]
                expect[i] = false
            else
                lines[i] = "/probe\t" .. users[name].cookie
                expect[i] = ids[name]
            end
        end
        local load = fault.load_async(nginx.port, lines, { conc = 20 })
        socket.sleep(0.3)
        redis:restart()
        local rounds, summary = load:wait()
        local seen = {}
        for i, r in ipairs(rounds[1]) do
            local key = (expect[i] and "valid " or "forged ") .. r.status
            seen[key] = (seen[key] or 0) + 1
            if expect[i] then
                assert.is_true(r.status == 200 or r.status == 503,
                               "valid cookie got " .. r.status)
                if r.status == 200 then
                    assert.same({ value = expect[i], logged_in = true }, cjson.decode(r.seen))
                end
            else
                assert.equal(401, r.status, "forged cookie got " .. r.status)
            end
        end
        say("\n[restart under load] " .. summary .. "\n  " .. fault.show_tally(seen))
        check("redis restarted under load")
    end)

    local function frozen(label, freeze, thaw)
        it(label .. ": the store times out (503), the workers keep answering", function()
            local admin = assert(redis:connect())
            freeze(admin)
            socket.sleep(0.05)
            local t0 = socket.gettime()
            local rs = burst(valid_cookies(), 6)
            local took = socket.gettime() - t0
            for _, r in ipairs(rs) do
                assert.equal(503, r.status)
                -- the body says only this; why goes to the error log
                assert.same({ error = "Error in session store" }, cjson.decode(r.body))
            end
            assert.matches("Error in session store: redis: read from [^ ]+ failed: timeout",
                           nginx:error_log())
            -- all six waited concurrently: about one read timeout, not six
            assert.is_true(took < 6 * READ_TIMEOUT / 1000, "took " .. took .. " s")
            -- a request that needs no Redis is not held up meanwhile
            local t1 = socket.gettime()
            local seen = fault.answering(probe, 10)
            assert.is_true(socket.gettime() - t1 < 2, "workers slow while Redis is frozen")
            assert.is_truthy(next(seen))
            -- forged cookies never even reach the store
            for _, r in ipairs(burst(forged, 4)) do assert.equal(401, r.status) end
            thaw(admin)
            admin:close()
            check(label)
        end)
    end

    -- DEBUG SLEEP answers +OK when it wakes up: that is the thaw
    frozen("DEBUG SLEEP", function(admin)
        admin:send(redis_server.encode { "DEBUG", "SLEEP", "1.5" })
    end, function(admin)
        assert.equal("OK", redis_server.read_reply(admin))
    end)
    frozen("CLIENT PAUSE", function(admin)
        admin:send(redis_server.encode { "CLIENT", "PAUSE", "1500", "ALL" })
        assert.equal("OK", redis_server.read_reply(admin))
    end, function(admin)
        admin:send(redis_server.encode { "CLIENT", "UNPAUSE" })
        assert.equal("OK", redis_server.read_reply(admin))
    end)
    frozen("SIGSTOP", function() redis:pause() end, function() redis:resume() end)

    it("Redis replying garbage: every malformed reply is a 503, no crash, no leak", function()
        local seen = {}
        -- each case twice, concurrently, so both workers meet it
        local rs = burst(fake_sids, #fake_sids * 2, "/fake")
        for _, r in ipairs(rs) do
            local g = GARBAGE[r.k]
            seen[#seen + 1] = g[1] .. "=" .. tostring(r.status)
            assert.equal(g[4], r.status, g[1] .. ": " .. tostring(r.body))
            if r.status == 200 then
                assert.same({ value = 7, logged_in = true }, cjson.decode(r.body))
            end
        end
        say("\n[garbage] " .. table.concat(seen, ", ", 1, #GARBAGE))
        check("garbage replies")
    end)

    it("Redis replying random bytes: never a 200, never a crash", function()
        local seed = os.time()
        math.randomseed(seed)
        local cases, sids = {}, {}
        for i = 1, 200 do
            local n = math.random(1, 64)
            local b = {}
            for j = 1, n do b[j] = string.char(math.random(0, 255)) end
            -- half start like a bulk reply, so the length parser is hit too
            local bytes = (i % 2 == 0 and "$" or "") .. table.concat(b)
            local sid = ("rand%03d"):format(i)
            cases[sid] = { bytes = bytes, after = i % 3 == 0 and "hang" or "close" }
            sids[i] = "connect.sid=" .. cookie.sign(sid, SECRET):gsub(":", "%%3A")
        end
        local rf = fake_redis.start { cases = cases }
        local port = nginx_server.free_port()
        local ng = nginx_server.start {
            workers = 2,
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = %q,
            store = passport.redis { port = %d, read_timeout = 300 } }
    }
]]):format(SECRET, rf.port),
            server = ([[
        listen 127.0.0.1:%d reuseport;
        location = /_pid { return 200 $pid; }
        location = /fake { access_by_lua_block { auth:access() } content_by_lua_block { ngx.print("in") } }
]]):format(port),
        }
        local ok, err = pcall(function()
            local b = fault.snapshot(ng, { listen = { ng.port, port }, redis = rf.port })
            local tally = {}
            for i = 1, #sids, 50 do
                local socks = {}
                for j = i, math.min(i + 49, #sids) do
                    socks[#socks + 1] = ng:send("/fake", { Cookie = sids[j] })
                end
                for _, s in ipairs(socks) do
                    local st = ng:receive(s)
                    tally[st] = (tally[st] or 0) + 1
                    assert.is_true(st == 503 or st == 401, "status " .. tostring(st)
                                   .. " (seed " .. seed .. ")")
                end
            end
            say("\n[random replies, seed " .. seed .. "] " .. fault.show_tally(tally))
            say(fault.invariants(ng, b, { probe = port }))
        end)
        ng:stop()
        rf:stop()
        assert(ok, err)
    end)
end)
