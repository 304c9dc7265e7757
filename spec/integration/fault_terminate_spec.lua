-- Terminate mode (passport.websocket: the gateway holds the WebSocket)
-- under abusive clients: half frames then vanish, and a reconnect storm of
-- 5,000 sockets with forged cookies mixed in.  Real nginx (2 workers), real
-- redis-server.  After each: no worker died, both answer, fds back to the
-- baseline, no socket left in either worker's registry, every valid user
-- greeted as itself, no forged cookie upgraded; after the load, worker RSS
-- within 5 % of the baseline taken after a warm-up run of the same load.
-- Reports go to stderr: stdout is busted's JSON, which the test summary reads.
local function say(s) io.stderr:write(tostring(s), "\n") end
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local fault = require "support.fault"
local cookie = require "resty.passport.cookie"
local socket = require "socket"

local SECRET = "terminate fault secret"
local RECORD = '{"cookie":{"originalMaxAge":3600000,"expires":null},"passport":{"user":"u%d"}}'

describe("terminate mode under abusive clients", function()
    local redis, nginx, lport, base
    local valid, forged = {}, {}

    setup(function()
        fault.loadgen_bin()
        redis = redis_server.start {}
        for i = 1, 3 do
            assert(redis:call("SET", "sess:TermSid" .. i, RECORD:format(i), "EX", "3600"))
            valid[i] = "connect.sid=" .. cookie.sign("TermSid" .. i, SECRET):gsub(":", "%%3A")
        end
        forged = {
            valid[1]:sub(1, -2) .. (valid[1]:sub(-1) == "A" and "B" or "A"),
            "connect.sid=" .. cookie.sign("TermSid2", "wrong"):gsub(":", "%%3A"),
            "connect.sid=s%3ATermSid3." .. ("A"):rep(43),
            "connect.sid=" .. cookie.sign("NoSuchSid", SECRET):gsub(":", "%%3A"),
        }
        lport = nginx_server.free_port()
        nginx = nginx_server.start {
            workers = 2,
            worker_connections = 16384,
            log_level = "notice",
            http = ([[
    lua_socket_log_errors off;
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = %q, store = passport.redis { port = %d,
            connect_timeout = 5000, read_timeout = 5000 } }
    }
]]):format(SECRET, redis.port),
            server = ([[
        listen 127.0.0.1:%d reuseport backlog=4096;
        location = /_pid { return 200 $pid; }
        location = /_sockets {
            content_by_lua_block {
                local n = #require("resty.passport").filter_sockets_by_user(function() return true end)
                ngx.print(ngx.worker.pid(), " ", n)
            }
        }
]] .. fault.TRIM_LOCATION .. [[
        location = /ws {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth, { idle_timeout = 30 })
                if not s then return end
                s:send(s.user.value)
                while s:recv() do end
            }
        }
]]):format(lport),
        }
        base = fault.snapshot(nginx, { listen = { nginx.port, lport }, redis = redis.port })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
    end)

    -- pid -> sockets in that worker's registry, for every worker
    local function registered()
        local counts, n = {}, 0
        for _ = 1, 80 do
            local c = socket.tcp()
            c:settimeout(2)
            if c:connect("127.0.0.1", lport) then
                c:send("GET /_sockets HTTP/1.0\r\nHost: x\r\n\r\n")
                local raw = c:receive("*a") or ""
                local pid, k = raw:match("\r\n\r\n(%d+) (%d+)")
                if pid and not counts[tonumber(pid)] then
                    counts[tonumber(pid)] = tonumber(k)
                    n = n + 1
                end
            end
            c:close()
            if n == #base.pids then break end
        end
        assert(n == #base.pids, "could not reach every worker's registry")
        return counts
    end

    local function check(label, opts)
        opts = opts or {}
        opts.probe = lport
        -- the registry empties as the sockets' handlers see the close
        local deadline = socket.gettime() + 10
        local counts
        repeat
            counts = registered()
            local left = 0
            for _, k in pairs(counts) do left = left + k end
            if left > 0 then socket.sleep(0.2) end
        until left == 0 or socket.gettime() > deadline
        for pid, k in pairs(counts) do
            assert(k == 0, label .. ": worker " .. pid .. " still has " .. k .. " sockets registered")
        end
        say("\n[terminate: " .. label .. "]\n" .. fault.invariants(nginx, opts.base or base, opts))
    end

    -- lines: 4 of 5 valid (greeted with "u<i>"), 1 of 5 forged (401)
    local function storm_lines(n)
        local lines, expect = {}, {}
        for i = 1, n do
            if i % 5 == 0 then
                lines[i] = "/ws\t" .. forged[(i / 5) % #forged + 1]
                expect[i] = false
            else
                local u = i % 3 + 1
                lines[i] = "/ws\t" .. valid[u]
                expect[i] = "u" .. u
            end
        end
        return lines, expect
    end

    local function verdicts(results, expect, label)
        for i, r in ipairs(results) do
            if expect[i] then
                assert(r.status == 101 and r.seen == expect[i], label .. ": valid #" .. i
                       .. " got " .. r.status .. " " .. r.seen .. ", not " .. expect[i])
            else
                assert(r.status == 401, label .. ": forged #" .. i .. " got " .. r.status)
            end
        end
    end

    it("greets valid users as themselves and refuses forged cookies", function()
        local lines, expect = storm_lines(500)
        local rounds, summary = fault.load(lport, lines, { conc = 100, action = "frame" })
        verdicts(rounds[1], expect, "baseline")
        say("\n[terminate: baseline] " .. summary)
        check("baseline")
    end)

    it("half frames, then the client vanishes: sockets unregistered, nothing left", function()
        local lines = {}
        for i = 1, 2000 do lines[i] = "/ws\t" .. valid[i % 3 + 1] end
        local rounds, summary = fault.load(lport, lines, { conc = 200, action = "half" })
        assert.same({ [101] = 2000 }, fault.tally(rounds[1]))
        say("\n[terminate: half frames] " .. summary)
        -- and half a handshake, then gone (FIN or RST)
        fault.half_handshakes(lport, valid[1], 300)
        check("half frames and half handshakes")
    end)

    it("a reconnect storm of 5,000 sockets, forged mixed in; RSS back", function()
        local lines, expect = storm_lines(5000)
        -- warm-up: the same load until RSS settles, then the RSS baseline.
        -- Measured (GC + malloc_trim, per worker): cold 11.6 MB, 30.2 after
        -- one run, then 35.7, 35.8, 35.9, 36.4, 36.3, 36.4 after each
        -- further run: flat once LuaJIT and malloc hold what the peak needed.
        local rss_base, history = fault.settle(nginx, lport, base.ports, function(k)
            local warm = fault.load(lport, lines, { conc = 1000, action = "hframe", rounds = 2,
                                                    timeout = 30 })
            verdicts(warm[2], expect, "warm-up " .. k)
        end)
        say("\n[terminate: RSS while warming up, kB] " .. table.concat(history, " | "))
        check("storm warm-up")

        local rounds, summary = fault.load(lport, lines, { conc = 1000, action = "hframe", rounds = 2,
                                                           timeout = 30 })
        verdicts(rounds[1], expect, "storm round 1")
        verdicts(rounds[2], expect, "storm round 2")
        say("\n[terminate: reconnect storm] " .. summary)
        check("reconnect storm")
        fault.trim(nginx, lport)
        check("RSS vs after warm-up", { base = fault.warm_baseline(base, rss_base), rss = true })
    end)
end)
