-- The session store behind Redis Sentinel and Redis Cluster (issue #17):
-- store:get per second through the discovered address against a store
-- pointed at that same server directly, and a Sentinel failover under a
-- steady load of guard-mode handshakes.  Run by bench/store_bench.sh
-- (`make bench-store`), after bench/store_bench.lua.
--
-- gets/s (one nginx worker, wrk -t1 -c50, rounds alternating the rows,
-- medians; every store has pool_size 128 and a pool of its own):
--   (a) a single-address store on the Sentinel group's master
--   (b) the same master found through the sentinels (sentinels, master_name)
--   (c) a single-address store on one Cluster master, a key whose slot it owns
--   (d) the Cluster store (cluster = seeds), the same key
--   (e) the Cluster store, one of 1,000 sessions with random ids per request
--       (keys over every master), for context
-- The targets: (b)/(a) >= 0.9 and (d)/(c) >= 0.9, taken per round (the
-- two rows of a pair run back to back) and the median printed.  Also the
-- worker's CPU time per get (utime + stime from /proc), which other
-- processes on the shared cores disturb less than the rate.
--
-- Failover: a gateway (2 workers, reuseport) doing auth:access() on every
-- handshake, its store on the sentinels without a cache, so that every
-- handshake reads the master.  An open loop offers handshakes at a fixed
-- rate (a new HTTP/1.0 connection each, lua-socket non-blocking, started on
-- schedule whatever the earlier ones are doing); the master is SIGKILLed
-- after a few seconds.  The cookies are express-session's signed
-- connect.sid cookies (resty.passport.cookie.sign) for records SET as
-- connect-redis writes them: logged-in users (expected 200), an anonymous
-- session and one whose passport has no user (expected 401), a signed sid
-- with no session (401) and a forged signature (401, Redis never asked).
-- A wrong verdict is a 200 where 401 is right or a 401/403 where 200 is;
-- a 503 (store error) is counted apart.
--
-- Environment: BENCH_SECONDS (per wrk run, default 3), BENCH_CONNECTIONS
-- (default 50), BENCH_ROUNDS (default 5), BENCH_FAILOVER_RATE (handshakes/s,
-- default 500).
local ffi = require "ffi"
local socket = require "socket"
local redis_ha = require "support.redis_ha"
local nginx_server = require "support.nginx_server"
local common = require "common"
local cookie = require "resty.passport.cookie"
local slot = require "resty.passport.redis.slot"

local DURATION = tonumber(os.getenv("BENCH_SECONDS") or "3")
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS") or "50")
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "5")
local RATE = tonumber(os.getenv("BENCH_FAILOVER_RATE") or "500")
local N_SPREAD = 1000   -- sessions of row (e)
local SECRET = "store ha bench secret"
local PREFIX = "sess:"

local now = socket.gettime

pcall(ffi.cdef, "int kill(int pid, int sig);")

local median, list, sh = common.median, common.list, common.sh

-- req/s, p50 ms, requests done
local function wrk(port, path, seconds)
    return common.wrk { port = port, path = path, conns = CONNS, seconds = seconds or DURATION }
end

-- A process's CPU time (utime + stime) so far, in seconds.
local CLK_TCK = tonumber(sh("getconf CLK_TCK")) or 100
local function cpu_of(pid)
    local f = assert(io.open("/proc/" .. pid .. "/stat"))
    local stat = f:read("*a")
    f:close()
    local fields = {}
    for v in stat:match("^%d+ %b() (.*)$"):gmatch("%S+") do fields[#fields + 1] = v end
    -- utime and stime are the 14th and 15th fields; these start at the 3rd
    return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
end

-- express-session's ids: 24 random bytes, base64url (32 characters).
local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local function random_sid()
    local t = {}
    for i = 1, 32 do
        local k = math.random(64)
        t[i] = ALPHABET:sub(k, k)
    end
    return table.concat(t)
end

-- A record as connect-redis 7 writes it (SET <prefix><sid> <json> EX <ttl>):
-- express-session's cookie, then passport's field.
local function record(passport_json)
    return '{"cookie":{"originalMaxAge":86400000,"expires":"2099-01-01T00:00:00.000Z",'
        .. '"secure":true,"httpOnly":true,"path":"/","sameSite":"lax"}'
        .. (passport_json and ',"passport":' .. passport_json or "") .. "}"
end
local RECORD = record('{"user":"64b7f0c2a1d3e4f5a6b7c8d9"}')

-- The Cookie header a browser sends: express-session's signed value,
-- URL-encoded as Set-Cookie carries it, among other cookies.
local function cookie_header(value)
    local encoded = value:gsub(":", "%%3A"):gsub("/", "%%2F"):gsub("%+", "%%2B")
    return "_ga=GA1.2.3; connect.sid=" .. encoded .. "; lang=en"
end

local function lua_list(addrs)
    local out = {}
    for i, a in ipairs(addrs) do out[i] = ("{ %q, %d }"):format(a[1], a[2]) end
    return "{ " .. table.concat(out, ", ") .. " }"
end

local function machine()
    return ("%s, %d cores"):format(sh("uname -m"):gsub("%s+$", ""), tonumber(sh("nproc")) or 0)
end

local function load_avg()
    return (sh("cat /proc/loadavg"):match("^(%S+ %S+ %S+)"))
end

---------------------------------------------------------------------------
-- store:get through Sentinel and Cluster against the same server direct.

local function get_rows(ha, cl)
    -- (a)/(b): one session on the Sentinel group's master, on the replica
    -- before the sentinels are asked anything
    local sid_s = random_sid()
    assert(ha.master:call("SET", PREFIX .. sid_s, RECORD, "EX", "86400"))
    assert(ha.master:call("WAIT", "1", "2000") == 1, "replica not in sync")

    -- (c)/(d): a session whose slot the first master (by port) owns
    local masters = cl:masters()
    local m = masters[1]
    local function owned_by(mm, s)
        for _, r in ipairs(mm.ranges) do
            if s >= r[1] and s <= r[2] then return true end
        end
    end
    local sid_c
    repeat sid_c = random_sid() until owned_by(m, slot.of(PREFIX .. sid_c))
    assert(cl:keyslot(PREFIX .. sid_c) == slot.of(PREFIX .. sid_c))
    assert(m.node:call("SET", PREFIX .. sid_c, RECORD, "EX", "86400"))

    -- (e): 1,000 sessions, each written on the master of its slot
    local spread, per_master = {}, {}
    for i = 1, N_SPREAD do
        local sid = random_sid()
        local s = slot.of(PREFIX .. sid)
        for _, mm in ipairs(masters) do
            if owned_by(mm, s) then
                assert(mm.node:call("SET", PREFIX .. sid, RECORD, "EX", "86400"))
                per_master[mm.port] = (per_master[mm.port] or 0) + 1
            end
        end
        spread[i] = ("%q"):format(sid)
    end
    local counts = {}
    for _, mm in ipairs(masters) do counts[#counts + 1] = per_master[mm.port] or 0 end

    local nginx = nginx_server.start {
        workers = 1,
        log_level = "warn",
        http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        STORES = {
            a = passport.redis { port = %d, pool_size = 128, pool = "bench-a" },
            b = passport.redis { sentinels = %s, master_name = "mymaster", pool_size = 128 },
            c = passport.redis { port = %d, pool_size = 128, pool = "bench-c" },
            d = passport.redis { cluster = %s, pool_size = 128 },
        }
        STORES.e = STORES.d
        SIDS = { a = %q, b = %q, c = %q, d = %q }
        SPREAD = { %s }
    }
]]):format(ha.master.port, lua_list(ha:seed_addrs()), m.port, lua_list(cl:seed_addrs()),
           sid_s, sid_s, sid_c, sid_c, table.concat(spread, ", ")),
        server = [[
        location ~ ^/get/([a-e])$ {
            set $row $1;
            content_by_lua_block {
                local row = ngx.var.row
                local sid = SIDS[row] or SPREAD[math.random(#SPREAD)]
                local json, err = STORES[row]:get(sid)
                if not json then ngx.status = 503 return ngx.say(err or "no session") end
                ngx.print(json)
            }
        }
        location = /where {
            content_by_lua_block { ngx.print(STORES.b:address(), " ", STORES.d:address()) }
        }
]],
    }
    local ok, err = pcall(function()
        local rows = { "a", "b", "c", "d", "e" }
        for _, r in ipairs(rows) do
            local status, body = nginx:get("/get/" .. r)
            assert(status == 200 and body == RECORD, r .. ": " .. tostring(status) .. " " .. tostring(body))
        end
        local _, where = nginx:get("/where")
        local b_addr = where:match("^(%S+)")
        assert(b_addr == "127.0.0.1:" .. ha.master.port, "sentinel store uses " .. tostring(b_addr))
        -- warm up: pools filled, traces compiled, the slot map loaded
        for _, r in ipairs(rows) do wrk(nginx.port, "/get/" .. r, 1) end

        local worker = assert(tonumber(sh("pgrep -P " .. nginx.pid):match("%d+")), "no nginx worker")
        local rps, p50, cpu = {}, {}, {}
        for _, r in ipairs(rows) do rps[r], p50[r], cpu[r] = {}, {}, {} end
        local ratio_s, ratio_c, cpu_s, cpu_c = {}, {}, {}, {}
        for round = 1, ROUNDS do
            -- each pair back to back, its order swapped every round
            local order = round % 2 == 1 and { "a", "b", "c", "d", "e" } or { "b", "a", "d", "c", "e" }
            for _, r in ipairs(order) do
                local c0 = cpu_of(worker)
                local v, p, n = wrk(nginx.port, "/get/" .. r)
                rps[r][round], p50[r][round] = v, p
                cpu[r][round] = (cpu_of(worker) - c0) / n * 1e6
            end
            ratio_s[round] = rps.b[round] / rps.a[round]
            ratio_c[round] = rps.d[round] / rps.c[round]
            cpu_s[round] = cpu.b[round] / cpu.a[round]
            cpu_c[round] = cpu.d[round] / cpu.c[round]
        end

        print(("store HA bench: %s, 1 nginx worker, wrk -t1 -c%d -d%ds, %d-byte record, "
               .. "median of %d rounds (rows alternated)"):format(machine(), CONNS, DURATION,
                                                                #RECORD, ROUNDS))
        print(("  Sentinel: master + replica + 3 sentinels; Cluster: %d masters, no replicas; "
               .. "(e)'s %d keys per master: %s"):format(#masters, N_SPREAD, list(counts, "%d")))
        local labels = {
            a = "(a) single address, the Sentinel master",
            b = "(b) Sentinel discovery, the same master",
            c = "(c) single address, one Cluster master",
            d = "(d) Cluster store, the same key",
            e = "(e) Cluster store, 1,000 keys, all slots",
        }
        for _, r in ipairs(rows) do
            print(("  %-42s %8.0f gets/s  p50 %.2f ms  worker CPU %5.1f us/get  (rounds: %s)")
                  :format(labels[r], median(rps[r]), median(p50[r]), median(cpu[r]), list(rps[r], "%.0f")))
        end
        local function verdict(x) return x >= 0.9 and "met" or "NOT met" end
        local rs, rc = median(ratio_s), median(ratio_c)
        print(("  ratio (b)/(a) Sentinel / direct           %8.2f   (%s) target >= 0.90: %s")
              :format(rs, list(ratio_s, "%.2f"), verdict(rs)))
        print(("  ratio (d)/(c) Cluster / direct            %8.2f   (%s) target >= 0.90: %s")
              :format(rc, list(ratio_c, "%.2f"), verdict(rc)))
        print(("  ratio (e)/(c) Cluster all slots / direct  %8.2f   (context)")
              :format(median(rps.e) / median(rps.c)))
        print(("  worker CPU per get, (b)/(a) %.2f (%s), (d)/(c) %.2f (%s), (e)/(c) %.2f")
              :format(median(cpu_s), list(cpu_s, "%.2f"), median(cpu_c), list(cpu_c, "%.2f"),
                      median(cpu.e) / median(cpu.c)))
        local log = nginx:error_log()
        if log:match("%[error%]") or log:match("%[alert%]") or log:match("%[crit%]") then
            print("nginx error log:\n" .. log)
        end
    end)
    nginx:stop()
    if not ok then error(err, 0) end
end

---------------------------------------------------------------------------
-- The open loop: HTTP/1.0 GETs started at t0 + i / rate, each on its own
-- connection, lua-socket non-blocking + select.  tick(t) runs every pass
-- and returns true to stop offering; in-flight requests are then drained.
-- done(req) gets { cookie = i, t_sched, t_start, t_done, status | err }.

local MAX_IN_FLIGHT = 800 -- select() handles fds < 1024
local REQ_TIMEOUT = 5     -- s

local function open_loop(port, headers, rate, tick, done)
    local t0 = now()
    local i = 0
    local flight = {}    -- sock -> req
    local n_flight = 0
    local late, max_late, stopping = 0, 0, false
    local function finish(req, status, err)
        flight[req.sock] = nil
        n_flight = n_flight - 1
        req.sock:close()
        req.sock = nil
        req.t_done, req.status, req.err = now(), status, err
        done(req)
    end
    while true do
        local t = now()
        if not stopping and tick(t) then stopping = true end
        -- start every request due by now
        while not stopping and t0 + i / rate <= t and n_flight < MAX_IN_FLIGHT do
            local sched = t0 + i / rate
            i = i + 1
            local k = (i - 1) % #headers + 1
            local c = socket.tcp()
            c:settimeout(0)
            local req = {
                cookie = k, t_sched = sched, t_start = now(), sock = c, sent = 0,
                data = "GET /hs HTTP/1.0\r\nHost: gateway\r\nCookie: " .. headers[k] .. "\r\n\r\n",
                parts = {},
            }
            local lateness = req.t_start - sched
            if lateness > 0.001 then late = late + 1 end
            if lateness > max_late then max_late = lateness end
            local ok, err = c:connect("127.0.0.1", port)
            flight[c] = req
            n_flight = n_flight + 1
            if not ok and err ~= "timeout" then
                finish(req, nil, "connect: " .. tostring(err))
            end
        end
        if stopping and n_flight == 0 then break end
        local rset, wset = {}, {}
        for c, req in pairs(flight) do
            if req.sent < #req.data then wset[#wset + 1] = c else rset[#rset + 1] = c end
        end
        local wait = stopping and 0.01 or math.max(0, math.min(0.005, t0 + i / rate - now()))
        local readable, writable = socket.select(rset, wset, wait)
        for _, c in ipairs(writable) do
            local req = flight[c]
            if req then
                local n, err, partial = c:send(req.data, req.sent + 1)
                n = n or partial
                if n and n > 0 then req.sent = n end
                if err and err ~= "timeout" then finish(req, nil, "send: " .. err) end
            end
        end
        for _, c in ipairs(readable) do
            local req = flight[c]
            if req then
                -- "*a": the data once the server closed (or "closed" when
                -- this call read nothing more), else "timeout" and a part
                local data, err, partial = c:receive("*a")
                if partial and partial ~= "" then req.parts[#req.parts + 1] = partial end
                if data then req.parts[#req.parts + 1] = data end
                if data or err == "closed" then
                    local status = table.concat(req.parts):match("^HTTP/%d%.%d (%d%d%d)")
                    finish(req, tonumber(status), not status and "closed without a response" or nil)
                elseif err ~= "timeout" then
                    finish(req, nil, "receive: " .. err)
                end
            end
        end
        local t_now = now()
        for _, req in pairs(flight) do
            if t_now - req.t_start > REQ_TIMEOUT then finish(req, nil, "timeout") end
        end
    end
    return { offered = i, seconds = now() - t0, late = late, max_late = max_late }
end

---------------------------------------------------------------------------
-- A Sentinel failover under guard-mode handshakes.

local function failover(ha)
    -- the sessions, on the master, replicated before the kill
    local cookies = {} -- { header =, accept = bool, kind = }
    for _ = 1, 20 do
        local sid = random_sid()
        assert(ha.master:call("SET", PREFIX .. sid,
                              record(('{"user":"%s"}'):format(random_sid():sub(1, 24))), "EX", "86400"))
        cookies[#cookies + 1] = { sid = sid, accept = true, kind = "logged in" }
    end
    local anon, nouser, none = random_sid(), random_sid(), random_sid()
    assert(ha.master:call("SET", PREFIX .. anon, record(nil), "EX", "86400"))
    assert(ha.master:call("SET", PREFIX .. nouser, record("{}"), "EX", "86400"))
    cookies[#cookies + 1] = { sid = anon, accept = false, kind = "session without passport" }
    cookies[#cookies + 1] = { sid = nouser, accept = false, kind = "passport without user" }
    cookies[#cookies + 1] = { sid = none, accept = false, kind = "no session" }
    for _, ck in ipairs(cookies) do ck.header = cookie_header(cookie.sign(ck.sid, SECRET)) end
    local forged = cookie.sign(random_sid(), "not the secret")
    cookies[#cookies + 1] = { header = cookie_header(forged), accept = false, kind = "forged signature" }
    assert(ha.master:call("WAIT", "1", "2000") == 1, "replica not in sync")

    local gw = nginx_server.start {
        workers = 2,
        listen = "reuseport",
        log_level = "warn",
        http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        store = passport.redis { sentinels = %s, master_name = "mymaster",
                                 connect_timeout = 300, read_timeout = 1000 }
        auth = passport.authorize { secret = %q, store = store }
    }
]]):format(lua_list(ha:seed_addrs()), SECRET),
        server = [[
        location = /hs { access_by_lua_block { auth:access() } content_by_lua_block { ngx.print("ok") } }
]],
    }
    local ok, err = pcall(function()
        local headers = {}
        for i, ck in ipairs(cookies) do
            headers[i] = ck.header
            local status = gw:get("/hs", { Cookie = ck.header })
            assert(status == (ck.accept and 200 or 401),
                   ck.kind .. ": " .. tostring(status) .. " before the failover")
        end
        local _, old_port = ha:master_addr(1)
        local old = assert(ha:node(old_port))

        local PRE = 3 -- s of steady load before the kill
        local t_begin = now()
        local t_kill, t_promoted, first_ok, last_503
        local next_poll = 0
        local n503, n_ok, n_refused, total = 0, 0, 0, 0
        local wrong, failures, before = {}, {}, { total = 0, bad = 0 }
        local function tick(t)
            if not t_kill then
                if t - t_begin >= PRE then
                    t_kill = now()
                    ffi.C.kill(old.pid, 9) -- SIGKILL, no shell in between
                end
                return false
            end
            if not t_promoted and t >= next_poll then
                -- what sentinel 1 names (one loopback round trip)
                next_poll = t + 0.05
                local _, p = ha:master_addr(1)
                if p and p ~= old_port then t_promoted = now() end
            end
            if t - t_kill > 40 then return true end
            -- done once the gateway has served 2 s without a 503 since
            -- its first accepted handshake after the kill
            return first_ok and t - math.max(first_ok, last_503 or first_ok) > 2
        end
        local function done(req)
            local ck = cookies[req.cookie]
            if not t_kill or req.t_done < t_kill then
                before.total = before.total + 1
                if req.status ~= (ck.accept and 200 or 401) then before.bad = before.bad + 1 end
                if req.status == 200 and ck.accept == false then
                    wrong[#wrong + 1] = ck.kind .. " accepted (before the kill)"
                end
                return
            end
            total = total + 1
            local st = req.status
            if st == 503 then
                n503 = n503 + 1
                if not last_503 or req.t_done > last_503 then last_503 = req.t_done end
            elseif st == 200 or st == 401 or st == 403 then
                if (st == 200) ~= ck.accept then
                    wrong[#wrong + 1] = ck.kind .. " got " .. st
                elseif st == 200 then
                    n_ok = n_ok + 1
                    -- the first handshake started after the kill and let in
                    if req.t_start > t_kill and (not first_ok or req.t_done < first_ok) then
                        first_ok = req.t_done
                    end
                else
                    n_refused = n_refused + 1
                end
            else
                local why = st and ("HTTP " .. st) or req.err
                failures[why] = (failures[why] or 0) + 1
            end
        end
        local load1 = load_avg()
        local run = open_loop(gw.port, headers, RATE, tick, done)
        local new_port = ha:wait_failover(old_port, 20)
        old:kill() -- bookkeeping: already dead
        local load2 = load_avg()

        local other, n_other = {}, 0
        for why, n in pairs(failures) do
            other[#other + 1] = why .. " x" .. n
            n_other = n_other + n
        end
        print(("store HA failover: Sentinel (master + replica + 3 sentinels, quorum 2, down-after %d ms, "
               .. "failover-timeout 5000 ms), gateway 2 workers (reuseport), guard mode auth:access(), "
               .. "store on the sentinels, no cache"):format(1000))
        print(("  offered: open loop, %d handshakes/s (Lua + lua-socket non-blocking, a new HTTP/1.0 "
               .. "connection each), %d cookies round-robin: %d logged in, 4 refused (no passport, "
               .. "passport without user, no session, forged)"):format(RATE, #cookies, #cookies - 4))
        print(("  run: %.1f s, %d offered (%.0f/s achieved), %d started > 1 ms late (worst %.1f ms); "
               .. "loadavg %s -> %s"):format(run.seconds, run.offered, run.offered / run.seconds, run.late,
                                            run.max_late * 1000, load1, load2))
        print(("  before the kill: %d handshakes, %d not as expected"):format(before.total, before.bad))
        print(("  master %d SIGKILLed; sentinels named %d after       %6.2f s")
              :format(old_port, new_port, t_promoted and t_promoted - t_kill or 0 / 0))
        print(("  kill -> first accepted handshake                 %6.2f s")
              :format(first_ok and first_ok - t_kill or 0 / 0))
        print(("  kill -> last 503                                 %6.2f s")
              :format(last_503 and last_503 - t_kill or 0 / 0))
        print(("  after the kill: %d handshakes: %d accepted, %d refused (401), %d x 503, %d other%s")
              :format(total, n_ok, n_refused, n503, n_other,
                      n_other > 0 and " (" .. table.concat(other, ", ") .. ")" or ""))
        print(("  wrong verdicts                                   %6d   (target 0: %s)%s")
              :format(#wrong, #wrong == 0 and "met" or "NOT met",
                      #wrong > 0 and ": " .. table.concat(wrong, "; ", 1, math.min(#wrong, 10)) or ""))
        local log = gw:error_log()
        for _, bad in ipairs { "%[alert%]", "%[crit%]", "%[emerg%]", "runtime error" } do
            if log:match(bad) then print("nginx error log has " .. bad .. ":\n" .. log) break end
        end
        for i, ck in ipairs(cookies) do
            local status = gw:get("/hs", { Cookie = ck.header })
            assert(status == (ck.accept and 200 or 401),
                   "cookie " .. i .. " (" .. ck.kind .. "): " .. tostring(status) .. " after the failover")
        end
    end)
    gw:stop()
    if not ok then error(err, 0) end
end

---------------------------------------------------------------------------

math.randomseed(os.time() + math.floor(now() * 1000) % 100000)
local ha, cl
local ok, err = pcall(function()
    ha = redis_ha.sentinel { down_after = 1000, failover_timeout = 5000 }
    cl = redis_ha.cluster { masters = 3 }
    print(("store HA bench: loadavg at start %s"):format(load_avg()))
    get_rows(ha, cl)
    cl:stop()
    cl = nil
    failover(ha)
end)
if cl then cl:stop() end
if ha then ha:stop() end
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
