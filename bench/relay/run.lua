-- bench-relay: what the cross-worker relay costs an upgraded socket.io
-- connection, against the direct WebSocket, in one run.
--
-- One nginx, worker_processes 2, passport.socketio configured as
-- bench/sockets' gateway sio stack plus lua_shared_dict passport_eio (so
-- Engine.IO long-polling and the upgrade are on) and a Lua "echo" handler
-- that acks its arguments back.  The Node client (bench/relay/client.js,
-- socket.io-client 4.8) opens C connections with the client's default
-- transports (polling handshake, then the upgrade to a WebSocket) and C with
-- transports ["websocket"], waits until every polling one is upgraded, and
-- asks /relay-where, for each session, its home worker (from the sid:
-- "<worker id>.") and the worker holding its upgraded WebSocket (the dict's
-- g<sid> = "<worker id>u").  Three classes:
--   direct   WebSocket-only: the session lives in the request that holds
--            the WebSocket (no dict, no relay)
--   same     upgraded, the WebSocket on the home worker: the request relays
--            through the dict, the wake-ups are direct (same process)
--   other    upgraded, the WebSocket on the other worker: the relay goes
--            through the dict both ways and each way waits for the other
--            worker's host timer to pop its wake list (every TICK, 5 ms)
-- Per class: a closed loop (ECHOES sequential echoes with an ack on each
-- connection, PAR connections at a time) and an open loop (RATE echoes/s
-- spread round robin over the class's connections for OPEN_SECONDS, the
-- latency counted from the scheduled send time): RTT p50, p99, max, and the
-- gateway's CPU per echo (nginx workers, /proc/<pid>/stat, as bench/sockets
-- counts it), gross and net of the idle CPU (every worker with a polling
-- home ticks its host timer every 5 ms; measured first, for IDLE seconds,
-- with every connection held), with the ratios to the direct WebSocket.
-- nginx and Redis run on CPU SRV_CPU (0), the client on CLIENT_CPU (1).
-- env: C (100), ECHOES (50), PAR (4), RATE (500), OPEN_SECONDS (5), ROUNDS
-- (3: the phases run ROUNDS times, the classes' order turned each round,
-- the numbers pool them), IDLE (5 s), PAYLOAD (64 bytes), RELAY_DICT (16m),
-- CPU_SRC (stat; schedstat: ns resolution), LOG_LEVEL (warn), TUNE=0,
-- MULTIPLEX=0 (as bench/sockets), JSON=1 (the whole result as JSON last).
package.path = "lua/?.lua;spec/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"
local common = require "common"
local cjson = require "cjson"
local socket = require "socket"

local function env(name, default) local v = os.getenv(name) return (v and v ~= "") and v or default end
local C = tonumber(env("C", "100"))
local ECHOES = tonumber(env("ECHOES", "50"))
local PAR = tonumber(env("PAR", "4"))
local RATE = tonumber(env("RATE", "500"))
local OPEN_SECONDS = tonumber(env("OPEN_SECONDS", "5"))
local ROUNDS = tonumber(env("ROUNDS", "3"))
local IDLE = tonumber(env("IDLE", "5"))
local PAYLOAD = tonumber(env("PAYLOAD", "64"))
local DICT = env("RELAY_DICT", "16m")
local SRV_CPU, CLIENT_CPU = env("SRV_CPU", "0"), env("CLIENT_CPU", "1")
local SECRET = "bench-relay secret"
local N = 2 * C -- one browser session per connection

local sh = proc.sh
local function log(...) io.stderr:write(string.format(...), "\n") end

local CPU_SRC = env("CPU_SRC", "stat")
local function cpu_s(pids) return common.cpu_s(pids, CPU_SRC) end

---------------------------------------------------------------------------
-- Sessions: N connect-redis records and their cookies (as bench/sockets).

log("starting redis")
local redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
sh("taskset -apc " .. SRV_CPU .. " " .. redis.pid .. " >/dev/null")
local dir = redis_server.tmpdir("bench-relay")
local COOKIES = common.seed_sessions(redis, N, SECRET, dir)
log("seeded %d sessions", N)

---------------------------------------------------------------------------
-- The gateway: bench/sockets' sio stack, two workers, the dict, "echo".

local TUNE, MULTIPLEX = common.TUNE, common.MULTIPLEX

local function start_gateway()
    local nginx = nginx_server.start {
        workers = 2,
        worker_connections = N + 1024,
        main = "worker_rlimit_nofile " .. (N + 4096) .. ";",
        log_level = env("LOG_LEVEL", "warn"),
        http = TUNE .. ("    lua_shared_dict passport_eio %s;\n"):format(DICT) .. ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        store = passport.redis { port = %d, pool_size = 64, multiplex = %s }
        auth = passport.authorize { secret = %q, store = store,
            deserialize_user = function(id)
                return { id = id, group = id %% 2 == 0 and "even" or "odd" }
            end }
        even = function(user) return user.group == "even" end
        sio = passport.socketio { auth = auth }
        sio:of("/"):on("connection", function(socket)
            socket:join(socket.user.group)
            socket:emit("hello", { id = socket.user.id })
            -- the client's arguments back, in the ack
            socket:on("echo", function(...)
                local n = select("#", ...)
                local ack = select(n, ...)
                if type(ack) == "function" then ack(unpack({ ... }, 1, n - 1)) end
            end)
        end)
    }
    init_worker_by_lua_block {
        require("resty.passport").init_worker { store = store, filters = { even = even } }
    }
]]):format(redis.port, tostring(MULTIPLEX), SECRET),
        server = [[
        location /socket.io/ { content_by_lua_block { sio:serve() } }
        # for a sid: its home worker (the sid's "<worker id>." prefix), the
        # request that takes its outbox (g<sid>: "<worker id>u" once upgraded)
        # and its transport state (s<sid>); worker: who answers this
        location = /relay-where {
            content_by_lua_block {
                local sid = ngx.var.arg_sid or ""
                local dict = ngx.shared.passport_eio
                local g = dict:get("g" .. sid)
                ngx.print(require("cjson").encode {
                    sid = sid, home = tonumber(sid:match("^(%d+)%.")),
                    g = g or ngx.null, ws = g and tonumber(g:match("^(%d+)u$")) or ngx.null,
                    state = dict:get("s" .. sid) or ngx.null, worker = ngx.worker.id(),
                })
            }
        }
]],
    }
    local pids = {}
    for pid in sh("pgrep -P " .. nginx.pid):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    sh("taskset -apc " .. SRV_CPU .. " " .. nginx.pid .. " >/dev/null")
    for _, pid in ipairs(pids) do sh("taskset -apc " .. SRV_CPU .. " " .. pid .. " >/dev/null") end
    return nginx, pids
end

---------------------------------------------------------------------------
-- The run: the client says "ready" before each phase and waits for SIGUSR2;
-- the phase's server CPU is what the workers used from the signal to its
-- "done" line.

local CLASSES = { "direct", "same", "other" }
local NAMES = { direct = "direct WebSocket", same = "upgraded, same worker", other = "upgraded, other worker" }

local function report(r)
    local up = r.up
    print(("bench-relay: one nginx, worker_processes 2, both on CPU %s (Redis too); the client on CPU %s;"
           .. " %d socket.io clients polling -> upgrade + %d WebSocket-only"):format(SRV_CPU, CLIENT_CPU, C, C))
    print(("  classes: direct %d (home w0 %d, w1 %d); upgraded %d: same worker %d, other worker %d"
           .. " (WebSocket on w0 %d, w1 %d)%s")
          :format(up.classes.direct, up.direct_by_worker["0"] or 0, up.direct_by_worker["1"] or 0,
                  up.upgraded, up.classes.same, up.classes.other, up.ws_by_worker["0"] or 0,
                  up.ws_by_worker["1"] or 0,
                  (up.unclassified or 0) > 0 and ("; UNCLASSIFIED %d"):format(up.unclassified) or ""))
    print(("  connect %.2f s, all upgraded after %.2f s; payload %d bytes; %d round(s)")
          :format(up.connect_s, up.upgraded_s, PAYLOAD, ROUNDS))
    print(("  idle, all %d held: gateway CPU %.2f %% of one core (%.2f s in %.1f s; the host timers tick every"
           .. " 5 ms on a worker with polling homes)"):format(2 * C, r.idle_pct, r.idle_cpu, r.idle_s))
    for _, mode in ipairs { "closed", "open" } do
        print("")
        if mode == "closed" then
            print(("closed loop: %d sequential echoes (with an ack) per connection, %d connections at a time;"
                   .. " RTT per echo"):format(ECHOES, PAR))
        else
            print(("open loop: %d echoes/s spread over the class's connections for %.0f s; latency from the"
                   .. " scheduled send time"):format(RATE, OPEN_SECONDS))
        end
        print(("  %-24s %6s %5s %8s %8s %8s %8s %7s %9s %9s   %7s %7s %7s %7s %7s%s")
              :format("", "echoes", "lost", "p50 ms", "p99 ms", "max ms", "mean ms", "per s", "CPU us", "net us",
                      "p50 x", "p99 x", "max x", "CPU x", "net x", mode == "open" and "   lag p50/p99 ms" or ""))
        local d = r[mode].direct
        local function ratio(a, b)
            if a and b and b > 0 then return ("%.2f"):format(a / b) end
            return "-"
        end
        for _, cls in ipairs(CLASSES) do
            local x = r[mode][cls]
            if x and x.n > 0 then
                print(("  %-24s %6d %5d %8.3f %8.3f %8.2f %8.3f %7.0f %9.1f %9.1f   %7s %7s %7s %7s %7s%s")
                      :format(NAMES[cls], x.n, x.lost + x.mismatched, x.p50, x.p99, x.max, x.mean,
                              x.phase_s > 0 and x.n / x.phase_s or 0, x.cpu_us,
                              x.net_us, cls == "direct" and "1" or ratio(x.p50, d.p50),
                              cls == "direct" and "1" or ratio(x.p99, d.p99),
                              cls == "direct" and "1" or ratio(x.max, d.max),
                              cls == "direct" and "1" or ratio(x.cpu_us, d.cpu_us),
                              cls == "direct" and "1" or ratio(x.net_us, d.net_us),
                              mode == "open" and ("   %.3f / %.3f"):format(x.lag_p50 or 0, x.lag_p99 or 0) or ""))
            else
                print(("  %-24s %6s  (no connection in this class)"):format(NAMES[cls], "-"))
            end
        end
    end
    print("")
    print(("  CPU us: the gateway's CPU (both workers, %s) during the phase, per echo; net us: minus the idle"
           .. " rate over the phase's duration; x: the class over the direct WebSocket")
          :format(CPU_SRC == "schedstat" and "time on a CPU, /proc/<pid>/schedstat"
                  or "user + system, /proc/<pid>/stat, 10 ms ticks"))
    print("  per s: echoes per second in the phase; a closed loop's rate follows its RTT, and CPU per echo grows"
          .. " as the rate falls (fewer echoes per wake-up): compare CPU at one rate in the open loop")
    print("  lag: how late the client sent the echo after its scheduled time (included in the open loop's latency)")
    local e = r.end_
    local odd = {}
    if e then
        if e.disconnects > 0 then odd[#odd + 1] = ("%d disconnects during the run: %s")
                                                   :format(e.disconnects, cjson.encode(e.disconnect_reasons)) end
        if #e.errors > 0 then odd[#odd + 1] = ("client errors: %s"):format(cjson.encode(e.errors)) end
        if e.downgraded > 0 then odd[#odd + 1] = ("%d upgraded connections no longer on websocket")
                                                  :format(e.downgraded) end
    end
    for _, mode in ipairs { "closed", "open" } do
        for _, cls in ipairs(CLASSES) do
            local x = r[mode][cls]
            if x and (x.lost > 0 or x.mismatched > 0) then
                odd[#odd + 1] = ("%s %s: %d echoes lost (no ack within %d ms), %d acks with other arguments")
                                :format(mode, cls, x.lost, x.timeout_ms, x.mismatched)
            end
        end
    end
    if #odd == 0 then print("client: no lost echo, no disconnect, no error")
    else for _, l in ipairs(odd) do print("CLIENT: " .. l) end end
    if r.log.lines == 0 then
        print(("nginx error.log (%s and above): empty"):format(env("LOG_LEVEL", "warn")))
    else
        print(("nginx error.log: %d line(s) at %s or above"):format(r.log.lines, env("LOG_LEVEL", "warn")))
        for _, x in ipairs(r.log.first) do print("  " .. x) end
    end
end

local nginx, pids, client
local ok, err = pcall(function()
    nginx, pids = start_gateway()
    log("nginx on port %d, workers %s", nginx.port, table.concat(pids, ","))
    local cmd = ("echo $$; cd %s && exec env PORT=%d COOKIES=%s C=%d ECHOES=%d PAR=%d RATE=%s OPEN_SECONDS=%s"
                 .. " ROUNDS=%d PAYLOAD=%d taskset -c %s node bench/relay/client.js")
                :format(nginx_server.root, nginx.port, COOKIES, C, ECHOES, PAR, RATE, OPEN_SECONDS, ROUNDS, PAYLOAD,
                        CLIENT_CPU)
    local p = assert(io.popen(cmd))
    client = tonumber(p:read("*l"))
    local r = { closed = {}, open = {}, cpu = {} }
    local idle_rate
    while true do
        local line = p:read("*l")
        if not line then error("the client ended early") end
        local m = cjson.decode(line)
        if m.event == "up" then
            r.up = m
            log("up: %s", line)
        elseif m.event == "ready" then
            local key = m.phase .. ":" .. (m.class or "")
            log("phase %s (round %s)", key, tostring(m.round))
            local c0, t0 = cpu_s(pids), socket.gettime()
            if m.phase == "idle" then
                socket.sleep(IDLE)
                local c1, t1 = cpu_s(pids), socket.gettime()
                r.idle_cpu, r.idle_s = c1 - c0, t1 - t0
                idle_rate = r.idle_cpu / r.idle_s
                r.idle_pct = idle_rate * 100
                sh("kill -USR2 " .. client)
                assert(cjson.decode(p:read("*l")).event == "done")
            else
                sh("kill -USR2 " .. client)
                local done = cjson.decode((assert(p:read("*l"), "the client ended in a phase")))
                assert(done.event == "done", line)
                local c1, t1 = cpu_s(pids), socket.gettime()
                local acc = r.cpu[key] or { cpu = 0, s = 0, echoes = 0 }
                acc.cpu, acc.s, acc.echoes = acc.cpu + c1 - c0, acc.s + t1 - t0, acc.echoes + done.n
                r.cpu[key] = acc
                log("  %d echoes, %d lost, p50 %.3f ms, p99 %.3f ms, max %.2f ms; CPU %.2f s in %.2f s", done.n,
                    done.lost, done.p50 or 0, done.p99 or 0, done.max or 0, c1 - c0, t1 - t0)
            end
        elseif m.event == "stats" then
            -- the pooled numbers of a mode and class, over every round
            local acc = r.cpu[m.phase .. ":" .. m.class] or { cpu = 0, s = 0, echoes = 0 }
            m.cpu_us = acc.echoes > 0 and acc.cpu / acc.echoes * 1e6 or 0
            m.net_us = acc.echoes > 0 and (acc.cpu - (idle_rate or 0) * acc.s) / acc.echoes * 1e6 or 0
            m.phase_s = acc.s
            r[m.phase][m.class] = m
        elseif m.event == "end" then
            r.end_ = m
            break
        elseif m.event == "error" then
            error("client: " .. line)
        end
    end
    p:read("*a")
    p:close()
    client = nil
    -- what nginx logged at LOG_LEVEL or above
    local text = nginx:error_log()
    local n, first = 0, {}
    for l in text:gmatch("[^\n]+") do
        n = n + 1
        if n <= 10 then first[n] = l:sub(1, 400) end
    end
    r.log = { lines = n, first = first }
    report(r)
    if env("JSON", "0") == "1" then
        r.cpu = nil
        print(cjson.encode(r))
    end
end)
if client then sh("kill " .. client) end -- the run failed: the client goes too
if nginx then nginx:stop() end
redis:stop()
sh("rm -rf " .. dir)
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
