-- What counting costs (issue #18): guard-mode handshakes per second
-- (auth:access() with a valid signed connect.sid cookie, the session in a
-- real redis-server) through nginx instances identical except that 'on'
-- calls passport.init_metrics{ dict = "passport_metrics" } in
-- init_worker_by_lua and 'off' does not; 'ctl', a second 'off', is the
-- control: ctl/off is what two identical instances differ by on this
-- machine, the yardstick for on/off.  Two rows: the store with no cache
-- (every handshake reads Redis; counted: the handshake, the store
-- request's histogram and its two clock reads) and with cache_ttl (all
-- handshakes but about one a second are cache hits; counted: the
-- handshake and the hit).  Run by `make bench-metrics` (part of
-- `make bench`).
--
-- Each nginx runs 1 worker on cpu 0, wrk -t1 -c50 on cpu 1 (Redis floats).
-- Every round starts the three afresh (two identical instances can differ
-- by 10-15 % for their whole life here) and runs them in a rotated order
-- (each first, middle and last in turn); printed are the medians, every round's figures and the spread,
-- handshakes/s and p50 from wrk, and the worker's CPU per handshake from
-- /proc (utime + stime), which other processes on the core disturb less
-- than the rate.  Then the cost of the counting calls themselves, timed
-- in a loop inside the 'on' worker, as a share of its CPU per handshake:
-- the effect size the rate comparison would have to resolve.
--
-- Environment: BENCH_SECONDS (per wrk run, default 2), BENCH_ROUNDS
-- (default 12: short rounds, many of them, since the noise is between
-- rounds more than within one), BENCH_CONNECTIONS (default 50).
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local common = require "common"
local cookie = require "resty.passport.cookie"

local DURATION = tonumber(os.getenv("BENCH_SECONDS") or "2")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "12")
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS") or "50")
local SECRET = "metrics bench secret"
local SID = "mT4xQ9vB2nK7wR1cY6hJ3pL8sD0fG5zA"
-- A record as connect-redis writes it for a logged-in user.
local RECORD = '{"cookie":{"originalMaxAge":86400000,"expires":"2099-01-01T00:00:00.000Z",'
    .. '"secure":true,"httpOnly":true,"path":"/","sameSite":"lax"},'
    .. '"passport":{"user":"64b7f0c2a1d3e4f5a6b7c8d9"}}'

local sh = common.sh

for _, tool in ipairs { "nginx", "redis-server", "wrk", "taskset" } do
    if not sh("command -v " .. tool):match("/") then
        io.stderr:write("metrics_bench: " .. tool .. " not found (wrk: apt-get install -y wrk)\n")
        os.exit(1)
    end
end

local median, list, spread = common.median, common.list, common.spread

local HEADER = "_ga=GA1.2.3; theme=dark; connect.sid="
    .. cookie.sign(SID, SECRET):gsub(":", "%%3A"):gsub("/", "%%2F"):gsub("%+", "%%2B") .. "; lang=en"

-- The worker's CPU time (utime + stime) so far, in seconds.
local CLK_TCK = tonumber(sh("getconf CLK_TCK")) or 100
local function cpu_of(pid)
    local f = assert(io.open("/proc/" .. pid .. "/stat"))
    local stat = f:read("*a")
    f:close()
    local rest = stat:match("^%d+ %b() (.*)$")
    local fields = {}
    for v in rest:gmatch("%S+") do fields[#fields + 1] = v end
    -- utime and stime are the 14th and 15th fields; rest starts at the 3rd
    return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
end

-- req/s, p50 ms, requests done
local function wrk(port, path, seconds)
    return common.wrk { port = port, path = path, conns = CONNS, seconds = seconds or DURATION,
                        header = "Cookie: " .. HEADER, cpu = "1" }
end

local function gateway(redis_port, metrics_on)
    return nginx_server.start {
        workers = 1,
        log_level = "warn",
        main = "worker_cpu_affinity 01;",
        http = ([[
    lua_shared_dict passport_metrics 1m;
    init_by_lua_block {
        local passport = require "resty.passport"
        local secret = %q
        auth = passport.authorize { secret = secret,
                                    store = passport.redis { port = %d, pool_size = 128 } }
        auth_cached = passport.authorize { secret = secret,
            store = passport.redis { port = %d, pool_size = 128, cache_ttl = 1000 } }
    }
    init_worker_by_lua_block {
        local passport = require "resty.passport"
        %s
    }
]]):format(SECRET, redis_port, redis_port,
           metrics_on and 'passport.init_metrics { dict = "passport_metrics" }' or "local _ = passport"),
        server = [[
        location = /hs { access_by_lua_block { auth:access() } content_by_lua_block { ngx.print("ok") } }
        location = /hsc { access_by_lua_block { auth_cached:access() } content_by_lua_block { ngx.print("ok") } }
        location = /metrics { content_by_lua_block { require("resty.passport").metrics() } }
        location = /breakdown { content_by_lua_block {
            -- what a handshake's counting calls cost in this worker, ns per call
            local metrics = require "resty.passport.metrics"
            local nginx = require "resty.passport.nginx"
            local clock = require("resty.passport.host").clock
            local K = metrics.key("passport_cache_lookups_total", { result = "hit" })
            local H = metrics.histogram_key("passport_store_request_duration_seconds", { op = "get" })
            -- the fastest of 5 runs of 100,000 calls: a run the VM or a
            -- timer interrupted says nothing about the call
            local N = 100000
            local function time(f)
                local best = math.huge
                for _ = 1, 5 do
                    ngx.update_time()
                    local t = ngx.now()
                    for _ = 1, N do f() end
                    ngx.update_time()
                    best = math.min(best, (ngx.now() - t) / N * 1e9)
                end
                return best
            end
            ngx.print(require("cjson").encode {
                count = time(function() nginx.count("guard", true) end),
                observe = time(function() metrics.observe(H, 0.0004) end),
                clock = time(function() return clock() - clock() end),
                add = time(function() metrics.add(K) end),
            })
        } }
]],
    }
end

local redis = redis_server.start {}
local gws = {} -- the round's off, on, ctl
local SIDES = { "off", "on", "ctl" }
-- the order of the three within a round (start and measurement): each
-- first, middle and last in turn, every pair in both orders
local ORDERS = { { "off", "on", "ctl" }, { "ctl", "on", "off" }, { "on", "off", "ctl" },
                 { "ctl", "off", "on" }, { "off", "ctl", "on" }, { "on", "ctl", "off" } }
local function stop_all()
    for _, side in ipairs(SIDES) do
        if gws[side] then gws[side]:stop() end
        gws[side] = nil
    end
end
local ok, err = pcall(function()
    assert(redis:call("SET", "sess:" .. SID, RECORD, "EX", "86400"))
    local loadavg1 = sh("cat /proc/loadavg"):match("^(%S+ %S+ %S+)")
    local rows = { { path = "/hs", label = "store, no cache (a Redis GET each)" },
                   { path = "/hsc", label = "store, cache_ttl = 1000 ms (hits)" } }
    for _, row in ipairs(rows) do
        for _, side in ipairs(SIDES) do
            row[side], row[side .. "_p50"], row[side .. "_cpu"] = {}, {}, {}
        end
        row.ratio, row.cpu_ratio, row.ctl_ratio, row.ctl_cpu_ratio = {}, {}, {}, {}
    end
    local done_on -- wrk's count on the round's 'on' gateway, by path
    for round = 1, ROUNDS do
        -- Fresh instances every round: two identical nginx differ by up
        -- to 10-15 % for as long as they live here (memory layout, where
        -- the JIT's code lands), so that difference is drawn anew each
        -- round instead of being read as on/off.
        stop_all()
        local order = ORDERS[(round - 1) % #ORDERS + 1]
        for _, side in ipairs(order) do
            local g = gateway(redis.port, side == "on")
            gws[side] = g
            g.worker = assert(tonumber(sh("pgrep -P " .. g.pid):match("%d+")), "no nginx worker")
            for _, path in ipairs { "/hs", "/hsc" } do
                local status, body = g:get(path, { Cookie = HEADER })
                assert(status == 200 and body == "ok", path .. ": " .. tostring(status) .. " " .. tostring(body))
            end
            assert(g:get("/metrics") == (side == "on" and 200 or 503), "metrics on/off wrong in " .. side)
        end
        done_on = { ["/hs"] = 0, ["/hsc"] = 0 }
        for _, side in ipairs(order) do
            for _, path in ipairs { "/hs", "/hsc" } do
                local _, _, n = wrk(gws[side].port, path, 1) -- warm up: pools, JIT, caches
                if side == "on" then done_on[path] = done_on[path] + n end
            end
        end
        for _, row in ipairs(rows) do
            for _, side in ipairs(order) do
                local g = gws[side]
                local c0 = cpu_of(g.worker)
                local rps, p50, n = wrk(g.port, row.path)
                row[side][round], row[side .. "_p50"][round] = rps, p50
                row[side .. "_cpu"][round] = (cpu_of(g.worker) - c0) / n * 1e6
                if side == "on" then done_on[row.path] = done_on[row.path] + n end
            end
            row.ratio[round] = row.on[round] / row.off[round]
            row.cpu_ratio[round] = row.on_cpu[round] / row.off_cpu[round]
            row.ctl_ratio[round] = row.ctl[round] / row.off[round]
            row.ctl_cpu_ratio[round] = row.ctl_cpu[round] / row.off_cpu[round]
        end
    end
    local loadavg2 = sh("cat /proc/loadavg"):match("^(%S+ %S+ %S+)")

    print(("metrics bench: %s, %d cores; guard mode auth:access() with a signed connect.sid; "
           .. "three nginx (1 worker each, cpu 0): 'on' calls passport.init_metrics, 'off' and 'ctl' "
           .. "(the control) do not, nothing else differs; wrk -t1 -c%d -d%ds (cpu 1); median of %d "
           .. "rounds, fresh instances each, the order rotated; loadavg %s -> %s")
          :format(sh("uname -m"):gsub("%s+$", ""), tonumber(sh("nproc")) or 0, CONNS, DURATION, ROUNDS,
                  loadavg1, loadavg2))
    local NAMES = { off = "metrics off", on = "metrics on", ctl = "off (ctl)" }
    for _, row in ipairs(rows) do
        print(("  %s"):format(row.label))
        for _, side in ipairs(SIDES) do
            print(("    %-11s %8.0f handshakes/s  p50 %.2f ms  worker CPU %5.1f us/handshake;"
                   .. " rounds: %s (spread %.0f %%)")
                  :format(NAMES[side], median(row[side]), median(row[side .. "_p50"]),
                          median(row[side .. "_cpu"]), list(row[side], "%.0f"), spread(row[side])))
        end
        print(("    on/off      %8.3f handshakes/s, %.3f worker CPU per handshake "
               .. "(per round: %s; CPU %s)")
              :format(median(row.ratio), median(row.cpu_ratio), list(row.ratio, "%.2f"),
                      list(row.cpu_ratio, "%.2f")))
        print(("    ctl/off     %8.3f handshakes/s, %.3f worker CPU per handshake "
               .. "(per round: %s; CPU %s): the noise")
              :format(median(row.ctl_ratio), median(row.ctl_cpu_ratio), list(row.ctl_ratio, "%.2f"),
                      list(row.ctl_cpu_ratio, "%.2f")))
    end
    -- what the last round's 'on' gateway counted (wrk's counts leave out
    -- the requests still in flight when each of its runs ended: <= 50 a run)
    local _, text = gws.on:get("/metrics")
    local function sample(name)
        local pat = name:gsub("[%-%.%+%[%]%(%)%$%^%%%?%*]", "%%%0") .. " (%S+)"
        return tonumber(text:match(pat)) or 0
    end
    print(("  counted by the last 'on' gateway: handshakes accepted %d (wrk saw %d), store requests %d "
           .. "(wrk saw %d uncached + misses), cache hits %d, misses %d")
          :format(sample('passport_handshakes_total{mode="guard",outcome="accepted",reason="none"}'),
                  done_on["/hs"] + done_on["/hsc"],
                  sample('passport_store_request_duration_seconds_count{op="get"}'), done_on["/hs"],
                  sample('passport_cache_lookups_total{result="hit"}'),
                  sample('passport_cache_lookups_total{result="miss"}')))
    -- last: these loops add to the counters read above
    local cjson = require "cjson"
    local b_on = cjson.decode((select(2, gws.on:get("/breakdown"))))
    local b_off = cjson.decode((select(2, gws.off:get("/breakdown"))))
    local function us(ns) return ns / 1000 end
    local uncached = us(b_on.count + b_on.observe + b_on.clock)
    local cached = us(b_on.count + b_on.add)
    print(("  in the 'on' worker, per call: handshake counter %.2f us, store histogram %.2f us, "
           .. "2 clock reads %.2f us, cache-hit counter %.2f us")
          :format(us(b_on.count), us(b_on.observe), us(b_on.clock), us(b_on.add)))
    print(("    = %.2f us per uncached handshake (%.1f %% of its worker CPU), %.2f us per cache hit (%.1f %%); "
           .. "the same calls in the 'off' worker: %.3f us")
          :format(uncached, uncached / median(rows[1].on_cpu) * 100, cached,
                  cached / median(rows[2].on_cpu) * 100, us(b_off.count + b_off.observe + b_off.add)))
    for _, side in ipairs(SIDES) do
        local log = gws[side]:error_log()
        if log:match("%[error%]") or log:match("%[alert%]") or log:match("%[crit%]") then
            print("nginx error log:\n" .. log)
        end
    end
end)
stop_all()
redis:stop()
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
