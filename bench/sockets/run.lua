-- bench-sockets (issue 5): the gateway holding N authorized WebSockets
-- (passport.websocket, one nginx worker), the gateway holding N authorized
-- socket.io sockets (passport.socketio, WebSocket transport, each socket
-- joined to the room of its user's group), and socket.io 4 holding the
-- same sessions (its documented Passport recipe, the same rooms), in one
-- run:
--   RSS per idle authorized connection (whole server process, its runtime
--   included), filter_sockets_by_user over all N sockets, emit to one user,
--   and delivery to the N/2 sockets of a group, timed by the load generator
--   from the HTTP trigger to the last client: passport.websocket by filter
--   (passport.emit{ filter = "even" }), passport.socketio by room
--   (passport.emit{ room = "even", event = ... }), socket.io by room
--   (io.to("even").emit).
-- And the gateway holding POLL_N socket.io clients on HTTP long-polling only
-- (socket.io-client's transports: ["polling"]; the sio gateway's conf plus
-- lua_shared_dict passport_eio, one worker; loadgen -l: one GET pending per
-- client, pings answered by POST "3"): RSS per client, the gateway's CPU
-- while they sit idle for POLL_IDLE seconds (pingInterval 25 s), and an
-- emit to all of them (a room every socket joins), trigger -> last client.
-- And socket.io's own Redis emitter (issue 16): the gateway sio stack's
-- init_worker gets socketio_emitter = { key = EMITTER_KEY }, the Node stack
-- runs @socket.io/redis-adapter on that key (sio.js, EMITTER_KEY; its own
-- emits then go io.local, the same local work as without the adapter), and
-- a long-lived Node process (bench/sockets/emitter.js, on the load
-- generator's CPU, started once) publishes emitter.to("even").emit(...)
-- with npm @socket.io/redis-emitter when the load generator's second
-- trigger fires (SIGUSR2 -> its HTTP GET, loadgen -G/-g): the row "emitter
-- to N/2 of N by room", timed like the others from the trigger to the last
-- client (so publish -> last client), and the server's CPU per delivered
-- message over those rounds.
-- Servers and Redis run on CPU 0, the load generator on CPU 1.
-- env: N (10000), ROUNDS (7), LOADGEN (build/bench/loadgen), TUNE=0 (nginx's
-- default buffers), ONLY_GATEWAY=1 (no socket.io), NO_EMIT=1,
-- STACKS (comma list of floor,ws,sio,poll,node; default all), POLL_N (1000),
-- POLL_IDLE (30 s), POLL_DICT (the passport_eio dict's size, 10m),
-- NO_EMITTER=1 (no emitter row: no socketio_emitter in the gateway, no
-- redis-adapter in Node, no publisher; the run as before issue 16),
-- EMITTER_KEY (the emitter's key prefix, socket.io).
package.path = "lua/?.lua;spec/?.lua;bench/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"
local common = require "common"
local cjson = require "cjson"
local socket = require "socket"

local N = tonumber(os.getenv("N") or "10000")
local ROUNDS = tonumber(os.getenv("ROUNDS") or "7")
local LOADGEN = os.getenv("LOADGEN") or "build/bench/loadgen"
local SECRET = "bench-sockets secret"
local SRV_CPU, GEN_CPU = "0", "1"
local POLL_N = tonumber(os.getenv("POLL_N") or "1000")
local POLL_IDLE = tonumber(os.getenv("POLL_IDLE") or "30")
local POLL_DICT = os.getenv("POLL_DICT") or "10m"
local EMITTER = not os.getenv("NO_EMITTER") and not os.getenv("NO_EMIT")
local EMITTER_KEY = os.getenv("EMITTER_KEY") or "socket.io"

local sh = proc.sh
local function log(...) io.stderr:write(string.format(...), "\n") end

local median, rss_kb, cpu_s = common.median, common.rss_kb, common.cpu_s

local function http_get(port, path)
    return (sh(("curl -s http://127.0.0.1:%d%s"):format(port, path)))
end

---------------------------------------------------------------------------
-- Sessions: N connect-redis records (passport.user = i) and their cookies,
-- signed as express-session signs them (the compat vectors hold us to it).

log("starting redis")
-- keyspace events on (as the README recommends): logout needs no polling
local redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } }
sh("taskset -apc " .. SRV_CPU .. " " .. redis.pid .. " >/dev/null")
local dir = redis_server.tmpdir("bench-sockets")
local COOKIES = common.seed_sessions(redis, N, SECRET, dir)
log("seeded %d sessions", N)

---------------------------------------------------------------------------
-- The stacks.

local TUNE, MULTIPLEX = common.TUNE, common.MULTIPLEX

-- opts.poll: Engine.IO long-polling on (the passport_eio dict), and every
-- socket.io socket joins the room "all" too.
local function start_gateway(path, opts)
    opts = opts or {}
    local nginx = nginx_server.start {
        workers = 1,
        worker_connections = N + 1024,
        main = "worker_rlimit_nofile " .. (N + 4096) .. ";",
        log_level = os.getenv("LOG_LEVEL") or "warn",
        http = TUNE .. (os.getenv("HTTP_EXTRA") or "")
               .. (opts.poll and ("    lua_shared_dict passport_eio " .. POLL_DICT .. ";\n") or "") .. ([[
    lua_shared_dict bench 1m;
    init_by_lua_block {
        local passport = require "resty.passport"
        store = passport.redis { port = %d, pool_size = 64, multiplex = %s }
        auth = passport.authorize { secret = %q, store = store,
            deserialize_user = function(id)
                return { id = id, group = id %% 2 == 0 and "even" or "odd" }
            end }
        even = function(user) return user.group == "even" end
        -- the gateway's own socket.io server: every socket joins its
        -- group's room ("even" / "odd"; "user:<id>" is automatic)
        sio = passport.socketio { auth = auth }
        sio:of("/"):on("connection", function(socket)
            socket:join(socket.user.group)%s
            socket:emit("hello", { id = socket.user.id })
        end)
        -- for measuring: the same sessions without the Redis round trip
        local fake = { get = function(_, sid)
            return '{"cookie":{"originalMaxAge":86400000},"passport":{"user":' .. sid:sub(2) .. '}}'
        end }
        auth_nostore = passport.authorize { secret = %q, store = fake,
            deserialize_user = function(id)
                return { id = id, group = id %% 2 == 0 and "even" or "odd" }
            end }
    }
    init_worker_by_lua_block {
        require("resty.passport").init_worker { store = store, filters = { even = even }%s }
    }
]]):format(redis.port, tostring(MULTIPLEX), SECRET, opts.poll and '\n            socket:join("all")' or "",
          SECRET, opts.emitter and (", socketio_emitter = { key = %q }"):format(EMITTER_KEY) or ""),
        server = (os.getenv("SERVER_EXTRA") or "") .. [[
        location = /ws-nostore {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth_nostore)
                if not s then return end
                s:send("welcome")
                while s:recv() do end
            }
        }
        location = /ws {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth)
                if not s then return end
                s:send("welcome")
                while s:recv() do end
            }
        }
        location = /floor {
            # the floor: the same upgrade with no session and no socket layer
            content_by_lua_block {
                local key = ngx.var.http_sec_websocket_key
                local accept = ngx.encode_base64(ngx.sha1_bin(key .. "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
                local sock = ngx.req.socket(true)
                sock:send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          .. "Sec-WebSocket-Accept: " .. accept .. "\r\n\r\n\129\7welcome")
                sock:settimeouts(10000, 10000, 3600000)
                while sock:receive(2) do end
            }
        }
        location /socket.io/ { content_by_lua_block { sio:serve() } }
        location = /emit-sio {
            content_by_lua_block {
                local passport = require "resty.passport"
                local mode = ngx.shared.bench:get("mode")
                local room = mode == "user" and "user:0" or mode == "all" and "all" or "even"
                local ok, err = passport.emit { room = room, namespace = "/", event = "news", args = { { n = 1 } } }
                ngx.print(ok and ngx.shared.bench:get("expect") or ("error: " .. tostring(err)))
            }
        }
        location = /luamem {
            content_by_lua_block { collectgarbage() collectgarbage() ngx.print(collectgarbage("count")) }
        }
        location = /mode {
            content_by_lua_block {
                ngx.shared.bench:set("mode", ngx.var.arg_m)
                -- /emit-sio's answer (how many will receive), counted here,
                -- outside the timed emit, and without per-socket state
                local passport = require "resty.passport"
                local m = ngx.var.arg_m
                local function any() return true end
                ngx.shared.bench:set("expect", m == "user" and #passport.sockets_of(0)
                                               or m == "all" and #passport.filter_sockets_by_user(any)
                                               or #passport.filter_sockets_by_user(even))
                ngx.print("ok")
            }
        }
        location = /emit {
            content_by_lua_block {
                local passport = require "resty.passport"
                if ngx.shared.bench:get("mode") == "user" then
                    passport.emit { user = 0, data = '{"n":1}' }
                    ngx.print(#passport.sockets_of(0))
                else
                    -- how many will receive, then the emit itself
                    local n = #passport.filter_sockets_by_user(even)
                    passport.emit { filter = "even", data = '{"n":1}' }
                    ngx.print(n)
                end
            }
        }
        location = /filter {
            content_by_lua_block {
                local passport = require "resty.passport"
                local ffi = require "ffi"
                pcall(ffi.cdef, "int clock_gettime(int, struct timespec *); struct timespec { long s; long ns; };")
                local ts = ffi.new("struct timespec")
                local function now() ffi.C.clock_gettime(1, ts) return tonumber(ts.s) + tonumber(ts.ns) * 1e-9 end
                local reps, matched = 20, 0
                local t0 = now()
                for _ = 1, reps do matched = #passport.filter_sockets_by_user(even) end
                ngx.print(require("cjson").encode { ms = (now() - t0) * 1000 / reps, matched = matched })
            }
        }
]],
    }
    local pids = {}
    for pid in sh("pgrep -P " .. nginx.pid):gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    sh("taskset -apc " .. SRV_CPU .. " " .. nginx.pid .. " >/dev/null")
    for _, pid in ipairs(pids) do sh("taskset -apc " .. SRV_CPU .. " " .. pid .. " >/dev/null") end
    local sio = path:match("^/socket%.io/") ~= nil
    return { name = path == "/floor" and "floor" or opts.poll and "gateway-poll" or sio and "gateway-sio" or "gateway",
             port = nginx.port,
             path = os.getenv("WS_PATH") or path, pids = pids, no_emit = path == "/floor", kind = "nginx",
             sio = sio, emit_path = sio and "/emit-sio" or "/emit", error_log = function() return nginx:error_log() end,
             emitter = opts.emitter,
             stop = function() nginx:stop() end }
end

-- A Node script in the background on cpu, env its environment ("K=V ...");
-- its pid once it prints "listening" (an error if it does not in 15 s).
local function start_node(script, env, cpu, logf)
    local cmd = ("cd %s && %s taskset -c %s nohup node %s > %s 2>&1 & echo $!")
                :format(nginx_server.root, env, cpu, script, logf)
    local pid = tonumber((sh(cmd)))
    local deadline, text = socket.gettime() + 15, ""
    while socket.gettime() < deadline do
        local f = io.open(logf)
        text = f and f:read("*a") or ""
        if f then f:close() end
        if text:match("listening") then return pid end
        socket.sleep(0.05)
    end
    sh("kill " .. pid .. " 2>/dev/null")
    error(script .. " did not start: " .. text)
end

local function start_sio(opts)
    opts = opts or {}
    local port = proc.free_port()
    local env = ("PORT=%d REDIS_PORT=%d SECRET=%q"):format(port, redis.port, SECRET)
    if opts.emitter then env = env .. (" EMITTER_KEY=%q"):format(EMITTER_KEY) end
    local pid = start_node("bench/sockets/sio.js", env, SRV_CPU, dir .. "/sio.log")
    return { name = "socket.io", port = port, path = "/socket.io/?EIO=4&transport=websocket", sio = true,
             kind = "node", emit_path = "/emit", pids = { pid }, emitter = opts.emitter,
             stop = function() sh("kill " .. pid) end }
end

-- The emitter row's app: bench/sockets/emitter.js, started once, on the
-- load generator's CPU (it is the app, not the server under test; the load
-- generator waits for its answer, so the two do not run at once).
local publisher
local function start_publisher()
    local port = proc.free_port()
    local pid = start_node("bench/sockets/emitter.js",
                           ("PORT=%d REDIS_PORT=%d EMITTER_KEY=%q"):format(port, redis.port, EMITTER_KEY),
                           GEN_CPU, dir .. "/emitter.log")
    publisher = { port = port, pid = pid }
    log("emitter publisher (@socket.io/redis-emitter, key %q) on port %d, pid %d", EMITTER_KEY, port, pid)
end

---------------------------------------------------------------------------
-- One stack: hold N, measure, emit.

-- ROUNDS emits of mode (room | user | all) to the clients of the load
-- generator gen (p its output): the median trigger -> last delivery (ms)
-- of all rounds but the first (a warm-up); r gets <mode>_n and
-- <mode>_cpu_us (server CPU per delivered message).
-- Mode "emitter": the publisher's trigger (SIGUSR2) instead of the stack's,
-- to the room "even", expecting the room's size the room emits counted.
local function emits(stack, p, gen, r, mode)
    local signal = "USR1"
    if mode == "emitter" then
        assert(http_get(publisher.port, "/expect/even/" .. tostring(r.room_n)) == "ok",
               "emitter publisher: /expect")
        signal = "USR2"
    else
        http_get(stack.port, "/mode?m=" .. mode)
    end
    local times = {}
    local cpu0, delivered = cpu_s(stack.pids), 0
    for i = 1, ROUNDS do
        sh("kill -" .. signal .. " " .. gen)
        local e = cjson.decode(p:read("*l") or "null")
        log("  emit %s: %s", mode, cjson.encode(e))
        assert(e and e.event == "emit" and e.received == e.expected,
               stack.name .. " emit: " .. cjson.encode(e or {}))
        if i > 1 then times[#times + 1] = e.last_ms end -- the first warms up
        r[mode .. "_n"] = e.expected
        delivered = delivered + e.received
        socket.sleep(0.3)
    end
    r[mode .. "_cpu_us"] = (cpu_s(stack.pids) - cpu0) / delivered * 1e6
    log("  %s: server CPU %.1f us per delivered message", mode, r[mode .. "_cpu_us"])
    return median(times)
end

local function run(stack)
    socket.sleep(1)
    local rss0 = rss_kb(stack.pids)
    local lua0 = stack.kind == "nginx" and tonumber(http_get(stack.port, "/luamem"))
    local args = ("-p %d -P '%s'%s -f %s -m hold -N %d -c 100 -T 60000 -b 8 -E %s -Q %d")
                 :format(stack.port, stack.path, stack.sio and " -s" or "", COOKIES, N, stack.emit_path, stack.port)
    if stack.emitter then args = args .. (" -G /emit -g %d"):format(publisher.port) end
    local p = assert(io.popen("echo $$; exec taskset -c " .. GEN_CPU .. " " .. LOADGEN .. " " .. args))
    local gen = tonumber(p:read("*l"))
    log("%s on port %d: loadgen %s holding %d (%s)", stack.name, stack.port, tostring(gen), N, args)
    local up = cjson.decode(p:read("*l") or "null")
    assert(up and up.event == "up" and up.held == N, "hold: " .. cjson.encode(up or {}))
    log("%s: %d up in %.2f s", stack.name, up.held, up.up_s)
    socket.sleep(2)
    local rss_nogc = rss_kb(stack.pids)
    if lua0 then http_get(stack.port, "/luamem") end -- a full GC: idle is steady state
    local r = { held = up.held, rss0 = rss0, rss = rss_kb(stack.pids) }
    log("  RSS before a full GC %d kB, after %d kB", rss_nogc, r.rss)
    r.rss_conn = (r.rss - rss0) / up.held
    if lua0 then
        r.lua_conn = (tonumber(http_get(stack.port, "/luamem")) - lua0) / up.held
        log("  Lua heap per connection: %.2f kB", r.lua_conn)
    end
    r.filter = cjson.decode(http_get(stack.port, "/filter"))
    if os.getenv("NO_EMIT") or stack.no_emit then
        r.emit_group, r.emit_user, r.room_n = 0, 0, 0
    else
        r.emit_group = emits(stack, p, gen, r, "room")
        r.emit_user = emits(stack, p, gen, r, "user")
        if stack.emitter then
            r.emit_emitter = emits(stack, p, gen, r, "emitter")
            log("%-9s emitter to %d of %d by room: %.1f ms; server CPU %.1f us per delivered message", stack.name,
                r.emitter_n, N, r.emit_emitter, r.emitter_cpu_us)
        end
    end
    sh("kill -TERM " .. gen)
    p:read("*a")
    p:close()
    log("%-9s %d held: RSS %d -> %d kB (%.2f kB/conn); filter %.3f ms (%d); group %.1f ms (%d); user %.2f ms",
        stack.name, r.held, rss0, r.rss, r.rss_conn, r.filter.ms, r.filter.matched, r.emit_group,
        r.room_n, r.emit_user)
    return r
end

-- The polling stack: POLL_N clients on long-polling only (loadgen -l), each
-- with one GET pending; RSS, the gateway's CPU while they sit idle, emits.
local function run_poll(stack)
    socket.sleep(1)
    local rss0 = rss_kb(stack.pids)
    local lua0 = tonumber(http_get(stack.port, "/luamem"))
    local args = ("-p %d -P '/socket.io/?EIO=4' -l -f %s -m hold -N %d -c 100 -T 60000 -b 8 -E %s -Q %d")
                 :format(stack.port, COOKIES, POLL_N, stack.emit_path, stack.port)
    local p = assert(io.popen("echo $$; exec taskset -c " .. GEN_CPU .. " " .. LOADGEN .. " " .. args))
    local gen = tonumber(p:read("*l"))
    log("%s on port %d: loadgen %s holding %d polling clients (%s)", stack.name, stack.port, tostring(gen),
        POLL_N, args)
    local up = cjson.decode(p:read("*l") or "null")
    assert(up and up.event == "up" and up.held == POLL_N, "hold: " .. cjson.encode(up or {}))
    log("%s: %d up in %.2f s", stack.name, up.held, up.up_s)
    socket.sleep(2)
    http_get(stack.port, "/luamem") -- a full GC: idle is steady state
    local r = { held = up.held, rss0 = rss0, rss = rss_kb(stack.pids) }
    r.rss_conn = (r.rss - rss0) / up.held
    r.lua_conn = (tonumber(http_get(stack.port, "/luamem")) - lua0) / up.held
    log("  RSS %d -> %d kB (%.2f kB/client), Lua heap %.2f kB/client", rss0, r.rss, r.rss_conn, r.lua_conn)
    -- idle: every client's GET pending; the pings (every 25 s per session)
    -- are the only traffic
    local c0, t0 = cpu_s(stack.pids), socket.gettime()
    socket.sleep(POLL_IDLE)
    local c1, t1 = cpu_s(stack.pids), socket.gettime()
    r.idle_s, r.idle_cpu_s = t1 - t0, c1 - c0
    r.idle_pct = r.idle_cpu_s / r.idle_s * 100
    log("  idle %d polling clients for %.1f s: gateway CPU %.2f s = %.2f %% of one core", up.held, r.idle_s,
        r.idle_cpu_s, r.idle_pct)
    if os.getenv("NO_EMIT") then
        r.emit_all, r.emit_user = 0, 0
    else
        r.emit_all = emits(stack, p, gen, r, "all")
        r.emit_user = emits(stack, p, gen, r, "user")
    end
    sh("kill -TERM " .. gen)
    local rest = p:read("*a")
    p:close()
    local done
    for l in rest:gmatch("[^\n]+") do
        local ok2, v = pcall(cjson.decode, l)
        if ok2 and type(v) == "table" and v.event == "done" then done = v end
    end
    if done then
        r.polls, r.pongs, r.dropped = done.polls, done.pongs, done.dropped
        r.drops = {}
        for k, v in pairs(done) do
            if k:match("^drop_") and v > 0 then r.drops[k] = v end
        end
    end
    log("%-9s %d polling clients: RSS %.2f kB/client; idle CPU %.2f %%; emit to %s: %.1f ms; user %.2f ms;"
        .. " %s GETs answered, %s pongs, %s dropped", stack.name, r.held, r.rss_conn, r.idle_pct,
        tostring(r.all_n), r.emit_all, r.emit_user, tostring(r.polls), tostring(r.pongs), tostring(r.dropped))
    return r
end

-- What nginx logged at warn or above, kept for the report.
local logs = {}
local function keep_log(stack)
    if not stack.error_log then return end
    local text = stack.error_log()
    local n, first = 0, {}
    for l in text:gmatch("[^\n]+") do
        n = n + 1
        if n <= 5 then first[n] = l:sub(1, 300) end
    end
    logs[#logs + 1] = { name = stack.name, lines = n, first = first }
end

local function wanted(name)
    local list = os.getenv("STACKS")
    if not list or list == "" then return true end
    for k in list:gmatch("[^,%s]+") do
        if k == name then return true end
    end
    return false
end

local ok, err = pcall(function()
    local results = {}
    local starts = {
        { "floor", function() return start_gateway("/floor") end },
        { "ws", function() return start_gateway("/ws") end },
        { "sio", function() return start_gateway("/socket.io/?EIO=4&transport=websocket", { emitter = EMITTER }) end },
        { "poll", function() return start_gateway("/socket.io/?EIO=4", { poll = true }) end },
        { "node", function() return start_sio { emitter = EMITTER } end },
    }
    if EMITTER and (wanted("sio") or (wanted("node") and not os.getenv("ONLY_GATEWAY"))) then
        start_publisher()
    end
    for _, st in ipairs(starts) do
        if wanted(st[1]) and not (st[1] == "node" and os.getenv("ONLY_GATEWAY")) then
            local stack = st[2]()
            local ok2, res = pcall(st[1] == "poll" and run_poll or run, stack)
            keep_log(stack)
            stack.stop()
            assert(ok2, res)
            results[st[1]] = res
        end
    end
    local floor, g, gs, s, gp = results.floor, results.ws, results.sio, results.node, results.poll
    local cols = { { "ws", g }, { "sio", gs }, { "socket.io", s } }
    local function ratio(a, b)
        if a and b and a ~= 0 then return ("%.2fx"):format(b / a) end
        return "-"
    end
    local function val(r, f, fmt)
        local v = r and f(r)
        return v and (fmt or "%.3f"):format(v) or "-"
    end
    local function line(name, f, fmt, note)
        local cells = {}
        for i, c in ipairs(cols) do cells[i] = val(c[2], f, fmt) end
        local sv = s and f(s)
        print(("%-46s %10s %10s %10s %9s %9s  %s"):format(name, cells[1], cells[2], cells[3],
              ratio(g and f(g), sv), ratio(gs and f(gs), sv), note or ""))
    end
    print(("bench-sockets: %d authorized idle connections; servers and Redis on CPU %s, load generator on CPU %s"
           .. " (2 cores shared)"):format(N, SRV_CPU, GEN_CPU))
    print(("%-46s %10s %10s %10s %9s %9s"):format("", "gw ws", "gw sio", "socket.io", "io/gw ws", "io/gw sio"))
    line("RSS per idle authorized connection (kB)", function(r) return r.rss_conn end)
    if floor then
        print(("%-46s %10.3f %s"):format("  nginx's own floor (upgrade, no auth, no layer)", floor.rss_conn,
                                         "kB, same directives"))
    end
    line("  Lua heap per connection (kB)", function(r) return r.lua_conn end)
    line(("filter over %d sockets (ms)"):format(N), function(r) return r.filter and r.filter.ms end)
    line(("delivery to %d of %d, last client (ms)"):format(((g or gs or s) or {}).room_n or 0, N),
         function(r) return r.emit_group ~= 0 and r.emit_group or nil end)
    print("  gw ws: passport.emit{ filter = \"even\" }; gw sio: passport.emit{ room = \"even\", event = ... };"
          .. " socket.io: io.to(\"even\").emit")
    line("emit to one user, its client (ms)", function(r) return r.emit_user ~= 0 and r.emit_user or nil end)
    line("server CPU per delivered message, group (us)", function(r) return r.room_cpu_us end, "%.1f")
    if (gs and gs.emit_emitter) or (s and s.emit_emitter) then
        line(("emitter to %d of %d by room (ms)"):format(((gs or s) or {}).emitter_n or 0, N),
             function(r) return r.emit_emitter end)
        print(("  publish -> last client: emitter.to(\"even\").emit from @socket.io/redis-emitter 5.1 (key %q) in a"
               .. " Node process on CPU %s; gw sio: init_worker{ socketio_emitter }; socket.io:"
               .. " @socket.io/redis-adapter 8.3"):format(EMITTER_KEY, GEN_CPU))
        line("server CPU per delivered message, emitter (us)", function(r) return r.emitter_cpu_us end, "%.1f")
    end
    print("gateway directives: " .. (TUNE ~= "" and TUNE:gsub("\n", "") or "nginx defaults (TUNE=0)")
          .. "; store multiplex = " .. tostring(MULTIPLEX))
    if gp then
        print("")
        print(("gateway polling: %d socket.io clients on long-polling only (transports: [\"polling\"]; loadgen -l,"
               .. " one GET pending each; pingInterval 25 s); the gw sio conf + lua_shared_dict passport_eio %s,"
               .. " one worker")
              :format(gp.held, POLL_DICT))
        print(("  %-58s %10.3f"):format("RSS per idle polling client (kB)", gp.rss_conn))
        print(("  %-58s %10.3f"):format("  Lua heap per client (kB)", gp.lua_conn))
        print(("  %-58s %10.2f  (%.2f s of CPU in %.1f s; %s GETs answered and %s pongs in the whole hold)")
              :format(("gateway CPU, %d clients idle (%% of one core)"):format(gp.held), gp.idle_pct, gp.idle_cpu_s,
                      gp.idle_s, tostring(gp.polls), tostring(gp.pongs)))
        if gp.emit_all ~= 0 then
            print(("  %-58s %10.1f"):format(("emit to all %d, trigger -> last client (ms)"):format(gp.all_n or 0),
                                           gp.emit_all))
            print(("  %-58s %10.2f"):format("emit to one user, its client (ms)", gp.emit_user))
            print(("  %-58s %10.1f"):format("server CPU per delivered message, all (us)", gp.all_cpu_us))
        end
        print("  passport.emit{ room = \"all\", event = ... } (every socket joins \"all\"); a delivery answers"
              .. " the client's pending GET, which then polls again")
        if gp.dropped and gp.dropped > 0 then
            print(("  DROPPED: %d polling clients lost during the hold: %s"):format(gp.dropped, cjson.encode(gp.drops)))
        end
    end
    print("")
    print("targets:")
    if gs then
        print(("  gateway socket.io: RSS per idle authorized socket %.2f kB (<= 12 kB: %s)")
              :format(gs.rss_conn, gs.rss_conn <= 12 and "met" or "NOT met"))
        if s and gs.emit_group and gs.emit_group > 0 and s.emit_group > 0 then
            local x = gs.emit_group / s.emit_group
            print(("  gateway socket.io: emit to %d of %d by room %.1f ms = %.2f of socket.io's %.1f ms (<= 0.5: %s)")
                  :format(gs.room_n, N, gs.emit_group, x, s.emit_group, x <= 0.5 and "met" or "NOT met"))
        end
        if s and gs.emit_emitter and s.emit_emitter and s.emit_emitter > 0 then
            local x = gs.emit_emitter / s.emit_emitter
            print(("  gateway socket.io: emitter to %d of %d by room, publish -> last client %.1f ms = %.2f of"
                   .. " socket.io + redis-adapter's %.1f ms (<= 0.5: %s)")
                  :format(gs.emitter_n, N, gs.emit_emitter, x, s.emit_emitter, x <= 0.5 and "met" or "NOT met"))
            x = gs.emitter_cpu_us / s.emitter_cpu_us
            print(("  gateway socket.io: emitter, server CPU per delivered message %.1f us = %.2f of"
                   .. " socket.io + redis-adapter's %.1f us (<= 0.5: %s)")
                  :format(gs.emitter_cpu_us, x, s.emitter_cpu_us, x <= 0.5 and "met" or "NOT met"))
        end
    end
    if g then
        print(("  gateway ws: RSS per idle authorized connection %.2f kB (<= 8 kB: %s); filter %.3f ms (<= 5 ms: %s);"
               .. " filter + delivery %.1f ms (<= 35 ms: %s)")
              :format(g.rss_conn, g.rss_conn <= 8 and "met" or "NOT met", g.filter.ms,
                      g.filter.ms <= 5 and "met" or "NOT met", g.emit_group,
                      g.emit_group <= 35 and "met" or "NOT met"))
    end
    if gp then
        print(("  gateway polling: emit to %d polling-only clients, trigger -> last client %.1f ms (<= 50 ms: %s)")
              :format(gp.all_n or 0, gp.emit_all, gp.emit_all <= 50 and "met" or "NOT met"))
        print(("  gateway polling: %d idle polling clients, gateway CPU %.2f %% of one core (<= 5 %%: %s)")
              :format(gp.held, gp.idle_pct, gp.idle_pct <= 5 and "met" or "NOT met"))
    end
    print("")
    for _, l in ipairs(logs) do
        if l.lines == 0 then
            print(("nginx error.log (%s): empty"):format(l.name))
        else
            print(("nginx error.log (%s): %d line(s) at warn or above"):format(l.name, l.lines))
            for _, x in ipairs(l.first) do print("  " .. x) end
        end
    end
    print(cjson.encode { n = N, rounds = ROUNDS, floor = floor, gateway = g, gateway_sio = gs, socketio = s,
                         gateway_poll = gp, poll_n = POLL_N, poll_idle = POLL_IDLE, logs = logs,
                         emitter = publisher and { key = EMITTER_KEY } or nil })
end)
if publisher then sh("kill " .. publisher.pid .. " 2>/dev/null") end
redis:stop()
sh("rm -rf " .. dir)
if not ok then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
end
