-- Guard mode under abusive clients: auth:access() in a real nginx (2
-- workers) in front of a WebSocket upstream (a second nginx that completes
-- the RFC 6455 handshake and echoes the identity it was sent), with a real
-- redis-server holding the sessions.  64 KB cookies, thousands of cookies,
-- slowloris handshakes, half requests and half frames then vanish, 20,000
-- handshakes with forged and valid cookies mixed, and a reconnect storm of
-- 5,000 sockets.  After each: no worker died, both answer, their fds are
-- back to the baseline, no valid user was rejected or seen as someone else,
-- no forged cookie got in; after the load, worker RSS within 5 % of the
-- baseline taken after a warm-up of the same shape.
-- Reports go to stderr: stdout is busted's JSON, which the test summary reads.
local function say(s) io.stderr:write(tostring(s), "\n") end
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local fault = require "support.fault"
local cookie = require "resty.passport.cookie"
local cjson = require "cjson"
local socket = require "socket"

local SECRET = "keyboard cat"
local USERS = { { sid = "AbuseSpecUserZero000000000000000", id = 0 },
                { sid = "AbuseSpecUserAnn00000000000000001", id = 1 },
                { sid = "AbuseSpecUserBob00000000000000002", id = 2 } }

local function cookie_of(sid, secret)
    return "connect.sid=" .. cookie.sign(sid, secret or SECRET):gsub(":", "%%3A")
end

-- The upstream: completes the handshake, sends X-Seen-User (the identity
-- header the gateway set) in the 101 and as a first text frame, then reads
-- until the peer goes away.
local UPSTREAM = [[
        listen 127.0.0.1:%d reuseport backlog=4096;
        lua_socket_log_errors off;
        location / {
            content_by_lua_block {
                local frame = require "resty.passport.ws.frame"
                local user = ngx.var.http_x_passport_user or "-"
                local accept = frame.accept_key(ngx.var.http_sec_websocket_key or "")
                if not accept then return ngx.exit(400) end
                local sock = assert(ngx.req.socket(true))
                sock:send { "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
                            "Connection: Upgrade\r\nSec-WebSocket-Accept: ", accept,
                            "\r\nX-Seen-User: ", user, "\r\n\r\n", frame.encode("text", user) }
                sock:settimeout(60000)
                while sock:receive(1) do end
            }
        }
]]

describe("guard mode under abusive clients", function()
    local redis, up, nginx, lport, base
    local valid, expect_user = {}, {}
    local forged = {}

    setup(function()
        fault.loadgen_bin()
        redis = redis_server.start {}
        local record = '{"cookie":{"originalMaxAge":3600000,"expires":null,"httpOnly":true,'
                       .. '"path":"/"},"passport":{"user":%d}}'
        for i, u in ipairs(USERS) do
            assert(redis:call("SET", "sess:" .. u.sid, record:format(u.id), "EX", "3600"))
            valid[i] = cookie_of(u.sid)
            expect_user[i] = u.id
        end
        local good = valid[2]
        forged = {
            good:sub(1, -2) .. (good:sub(-1) == "A" and "B" or "A"),       -- last sig char
            good:sub(1, 20) .. (good:sub(21, 21) == "x" and "y" or "x") .. good:sub(22), -- a sid char
            cookie_of(USERS[2].sid, "not the secret"),                    -- wrong secret
            "connect.sid=s%3A" .. USERS[2].sid,                           -- unsigned
            "connect.sid=" .. USERS[2].sid,                               -- raw sid
            "connect.sid=s%3A" .. USERS[2].sid .. "." .. ("A"):rep(43),   -- zero signature
            cookie_of("NoSuchSession000000000000000000"),                 -- signed, no record
        }
        local uport = nginx_server.free_port()
        -- the gateway passes big Cookie headers on: the upstream takes them
        up = nginx_server.start { workers = 2, worker_connections = 16384,
                                  http = "large_client_header_buffers 4 256k;",
                                  server = UPSTREAM:format(uport) }
        up.lport = uport
        lport = nginx_server.free_port()
        nginx = nginx_server.start {
            workers = 2,
            worker_connections = 16384,
            log_level = "notice", -- crashes and alerts still show; 20,000 rejections do not
            http = ([[
    large_client_header_buffers 4 128k;
    client_header_timeout 2s;
    lua_socket_log_errors off;
    init_by_lua_block {
        local passport = require "resty.passport"
        -- generous timeouts: 1,000 handshakes at once on a shared 2-core
        -- machine; a slow Redis is fault_redis_spec's subject, not this one's
        auth = passport.authorize { secret = %q, store = passport.redis { port = %d,
            connect_timeout = 5000, read_timeout = 5000 } }
    }
    upstream ws { server 127.0.0.1:%d; }
]]):format(SECRET, redis.port, uport),
            server = ([[
        listen 127.0.0.1:%d reuseport backlog=4096;
        location = /_pid { return 200 $pid; }
]] .. fault.TRIM_LOCATION .. [[
        location /ws {
            access_by_lua_block { auth:access() }
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 60s;
        }
]]):format(lport),
        }
        base = fault.snapshot(nginx, { listen = { nginx.port, lport },
                                       redis = redis.port, upstream = { uport } })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if up then up:stop() end
        if redis then redis:stop() end
    end)

    -- n handshake lines mixing valid (3 of every 4) and forged cookies:
    -- lines, and per line the expected identity (false: must be refused).
    local function mixed(n)
        local lines, expect = {}, {}
        for i = 1, n do
            if i % 4 == 0 then
                lines[i] = "/ws\t" .. forged[(i / 4) % #forged + 1]
                expect[i] = false
            else
                local u = i % 3 + 1
                lines[i] = "/ws\t" .. valid[u]
                expect[i] = expect_user[u]
            end
        end
        return lines, expect
    end

    -- Did the upstream see this user (X-Passport-User, JSON)?
    local function is_user(seen, id)
        local ok, u = pcall(cjson.decode, seen)
        return ok and type(u) == "table" and u.value == id and u.logged_in == true
    end

    -- Every valid line upgraded as its own user; every forged one a 401.
    local function verdicts(results, expect, label)
        local t = { valid_in = 0, forged_out = 0 }
        for i, r in ipairs(results) do
            if expect[i] then
                if r.status ~= 101 then
                    local why = fault.line_with(nginx:error_log(), "rejected (") or ""
                    error(label .. ": valid cookie #" .. i .. " got " .. r.status .. "; " .. why)
                end
                assert(is_user(r.seen, expect[i]), label .. ": line " .. i .. " seen as "
                       .. r.seen .. ", not user " .. expect[i])
                t.valid_in = t.valid_in + 1
            else
                assert(r.status == 401, label .. ": forged cookie #" .. i .. " got " .. r.status)
                t.forged_out = t.forged_out + 1
            end
        end
        assert(t.valid_in + t.forged_out == #expect, label .. ": missing results")
        return t
    end

    local function check(label, opts)
        opts = opts or {}
        opts.probe = lport
        local report = fault.invariants(nginx, opts.base or base, opts)
        say("\n[" .. label .. "]\n" .. report)
    end

    it("upgrades valid users as themselves and refuses forged cookies", function()
        local lines, expect = mixed(400)
        local rounds, summary = fault.load(lport, lines, { conc = 50 })
        local t = verdicts(rounds[1], expect, "baseline")
        say("\n[baseline] " .. summary .. "; valid in " .. t.valid_in .. ", forged out " .. t.forged_out)
        check("baseline")
    end)

    it("64 KB cookies: a valid sid at the end still counts; over the limit is refused", function()
        local pad = {}
        local n = 0
        while n < 65536 - 200 do
            local c = ("pad%05d=%s"):format(#pad, ("v"):rep(40))
            pad[#pad + 1] = c
            n = n + #c + 2
        end
        local padding = table.concat(pad, "; ")
        local big_valid = padding .. "; " .. valid[3]
        assert(#big_valid <= 65536 and #big_valid > 65000)
        local over = padding .. ("x"):rep(65536 - #big_valid + 1) .. "; " .. valid[3]
        assert(#over == 65537)
        local lines = {
            "/ws\t" .. big_valid,                                     -- 101 as bob
            "/ws\t" .. over,                                           -- 401: too large
            "/ws\t" .. "connect.sid=s%3A" .. ("A"):rep(65000),         -- 401: a 64 KB sid
            "/ws\t" .. "connect.sid=" .. ("%41"):rep(21000),           -- 401: 63 KB of escapes
            "/ws\t" .. ("a=" .. ("b"):rep(200000)),                    -- nginx: too large (400/494)
        }
        local want = { 101, 401, 401, 401, 400 }
        local rounds = fault.load(lport, lines, { conc = 5 })
        for i, r in ipairs(rounds[1]) do
            assert.equal(want[i], r.status, "line " .. i)
        end
        assert.is_true(is_user(rounds[1][1].seen, expect_user[3]))
        -- the same, many at once
        local many = {}
        for i = 1, 200 do many[i] = lines[(i - 1) % 4 + 1] end
        rounds = fault.load(lport, many, { conc = 50 })
        for i, r in ipairs(rounds[1]) do
            assert.equal(want[(i - 1) % 4 + 1], r.status, "line " .. i)
        end
        check("64 KB cookies")
    end)

    it("thousands of cookies: the first connect.sid counts, as in express-session", function()
        local many = {}
        for i = 1, 5000 do many[i] = "c" .. i .. "=v" .. i end
        local crowd = table.concat(many, "; ")
        local dup_forged = {} -- 600 forged connect.sid cookies: 56 KB
        for i = 1, 600 do dup_forged[i] = forged[(i % #forged) + 1] end
        local lines = {
            "/ws\t" .. crowd .. "; " .. valid[1],                          -- 101 as zero
            "/ws\t" .. valid[2] .. "; " .. table.concat(dup_forged, "; "),  -- 101 as ann
            "/ws\t" .. table.concat(dup_forged, "; ") .. "; " .. valid[2],  -- 401: a forged one first
            "/ws\t" .. crowd,                                              -- 401: none
        }
        local want = { 101, 101, 401, 401 }
        local rounds = fault.load(lport, lines, { conc = 4 })
        for i, r in ipairs(rounds[1]) do assert.equal(want[i], r.status, "line " .. i) end
        assert.is_true(is_user(rounds[1][1].seen, expect_user[1]))
        assert.is_true(is_user(rounds[1][2].seen, expect_user[2]))
        -- hundreds of Cookie header lines (nginx joins them with "; "); past
        -- about 1,000 header lines nginx itself answers 400 before any Lua
        for _, case in ipairs { { 500, "HTTP/1.1 101 Switching Protocols" },
                                { 2000, "HTTP/1.1 400 Bad Request" } } do
            local c = socket.tcp()
            c:settimeout(10)
            assert(c:connect("127.0.0.1", lport))
            local req = { "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          .. "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          .. "Sec-WebSocket-Version: 13\r\n" }
            for i = 1, case[1] do req[#req + 1] = "Cookie: k" .. i .. "=v\r\n" end
            req[#req + 1] = "Cookie: " .. valid[3] .. "\r\n\r\n"
            assert(c:send(table.concat(req)))
            local status = c:receive("*l")
            c:close()
            assert.equal(case[2], status, case[1] .. " Cookie lines")
        end
        check("thousands of cookies")
    end)

    it("slowloris handshakes are cut by client_header_timeout; others get in meanwhile", function()
        local slow = {}
        for i = 1, 300 do
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", lport))
            -- a handshake that never ends: a header line at a time
            c:send("GET /ws HTTP/1.1\r\nHost: x\r\nCookie: " .. valid[i % 3 + 1]:sub(1, 20))
            slow[i] = c
        end
        local t0 = socket.gettime()
        local lines, expect = mixed(600)
        local rounds, summary = fault.load(lport, lines, { conc = 50 })
        verdicts(rounds[1], expect, "during slowloris")
        say("\n[slowloris] meanwhile: " .. summary)
        assert.is_true(socket.gettime() - t0 < 2, "handshakes slowed down by slowloris")
        for _, c in ipairs(slow) do c:send("x") end -- still dripping
        -- nginx closes them after client_header_timeout (2 s): 408, or just closed
        local closed = 0
        for _, c in ipairs(slow) do
            c:settimeout(4)
            local _, err, partial = c:receive("*a")
            if err == "closed" or (partial and partial ~= "") or err == nil then closed = closed + 1 end
            c:close()
        end
        assert.equal(#slow, closed)
        check("slowloris")
    end)

    it("half requests and half frames, then the client vanishes", function()
        -- half a request line or half the headers, then gone (FIN or RST)
        fault.half_handshakes(lport, valid[2], 400)
        -- upgraded, then half a masked frame, then RST: the gateway closes
        -- both sides, the upstream sees the close
        local lines = {}
        for i = 1, 1000 do lines[i] = "/ws\t" .. valid[i % 3 + 1] end
        local rounds, summary = fault.load(lport, lines, { conc = 100, action = "half" })
        assert.same({ [101] = 1000 }, fault.tally(rounds[1]))
        say("\n[half frames] " .. summary)
        check("half requests and frames")
        -- and the upstream let go of them too
        local ub = fault.snapshot(up, { listen = { up.port, up.lport } })
        for _, pid in ipairs(ub.pids) do
            assert.equal(0, ub.by[pid].client, "upstream worker still holds clients")
        end
    end)

    it("20,000 handshakes, forged and valid mixed; a 5,000-socket reconnect storm; RSS back", function()
        -- warm-up runs of exactly the load below until RSS settles (it
        -- climbs over the first runs as LuaJIT and malloc settle, then stays
        -- flat: measured after GC + malloc_trim, one worker, runs of 20,000
        -- + 2 x 5,000: 17.0, 17.6, 17.9, 18.0, 18.3, 18.3 MB), then the
        -- RSS baseline
        local storm = {}
        for i = 1, 5000 do storm[i] = "/ws\t" .. valid[i % 3 + 1] end
        local rss_base, history = fault.settle(nginx, lport, base.ports, function(k)
            local lines, expect = mixed(20000)
            verdicts(fault.load(lport, lines, { conc = 200 })[1], expect, "warm-up " .. k)
            local warm = fault.load(lport, storm, { conc = 1000, action = "hold", rounds = 2,
                                                    timeout = 30 })
            assert.same({ [101] = 5000 }, fault.tally(warm[2]))
        end)
        say("\n[RSS while warming up, kB] " .. table.concat(history, " | "))
        check("warm-up")

        local lines, expect = mixed(20000)
        local t0 = socket.gettime()
        local rounds, summary = fault.load(lport, lines, { conc = 200 })
        local took = socket.gettime() - t0
        local t = verdicts(rounds[1], expect, "20,000 mixed")
        say(("\n[20,000 mixed] %s\n  valid in %d, forged out %d, %.0f handshakes/s"):format(
            summary, t.valid_in, t.forged_out, 20000 / took))

        -- the storm: 5,000 sockets up at once, all dropped at once, all back
        rounds, summary = fault.load(lport, storm, { conc = 1000, action = "hold", rounds = 2,
                                                     timeout = 30 })
        for r = 1, 2 do
            for i, res in ipairs(rounds[r]) do
                assert(res.status == 101, "storm round " .. r .. " socket " .. i .. ": " .. res.status)
                assert(is_user(res.seen, expect_user[i % 3 + 1]), "storm: seen as " .. res.seen)
            end
        end
        fault.trace("storm verdicts")
        say("\n[reconnect storm] " .. summary)
        check("after 20,000 handshakes and the storm")
        -- RSS: against the figures after the warm-up (the same shapes of
        -- load, once), both after a GC and malloc_trim; fds against the
        -- cold baseline
        fault.trim(nginx, lport)
        check("RSS vs after warm-up", { base = fault.warm_baseline(base, rss_base), rss = true })
    end)
end)
