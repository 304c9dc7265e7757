-- make bench-e2e (issue 6): real WebSocket / socket.io handshakes through
-- five stacks, in one run, with the same sessions, Redis and load generator.
--
--   (1) guard      nginx + auth:access() -> the trivial nginx WebSocket upstream
--   (1c) guard-cache   the same with the coherent session cache (cache_coherent)
--   (2) terminate  nginx + passport.websocket (the gateway holds the socket)
--   (2c) terminate-cache   the same with the coherent session cache
--   (2s) sio       nginx + passport.socketio{ auth }: the gateway speaks
--                  socket.io itself (WebSocket transport); a refused
--                  handshake is upgraded and answered 44{...} CONNECT_ERROR
--   (2h) sio-http  the same with refuse = "http": a refused handshake gets
--                  a 401 (the rejected/s column shows both refusal styles)
--   (2sc) sio-cache    (2s) with the coherent session cache (not in the
--                  default rows: E2E_ROWS=...,sio-cache)
--   (3) floor      the same nginx and upstream as (1), no auth
--   (3b) ws-floor  the trivial upstream alone: one nginx serving the
--                  WebSocket itself without auth, the floor of (2)
--   (4) psio       socket.io 4 + passport.socketio 3.7.0 (io.use, connect-redis)
--   (5) recipe     socket.io 4 + its Passport recipe (io.engine.use(session),
--                  passport.session())
--   (1b) guard-sio nginx + auth:access() -> socket.io 4 without auth: what a
--                  guard-mode deployment in front of the app costs end to end
--   (2p) sio-poll  (2s) with lua_shared_dict passport_eio (E2E_EIO_DICT, 10m),
--                  so that Engine.IO long-polling is on, and socket.io-client's
--                  default connection (loadgen -u): GET handshake "0{sid..}" ->
--                  POST "40" -> GET "40{..}" (with the "42" hello) -> WebSocket
--                  with the sid: "2probe" / "3probe" / "5" -> close
--   (4p) psio-poll (4), the same default connection (socket.io's transports
--                  are polling + websocket by default)
--   (5p) recipe-poll   (5), the same
--
-- Sessions: USERS users logged in over HTTP through the Express app
-- (passport-local, express-session, connect-redis) by bench/e2e/seed.js.
-- The servers and Redis run on one core, the load generator on the other
-- (taskset); the machine has 2 cores, so they are separated, not isolated.
--
-- Environment knobs: QUICK=1 (a small run), E2E_USERS, E2E_SECONDS (per
-- connect-rate measurement), E2E_ROUNDS, E2E_CONC, E2E_HOLD, E2E_ROWS
-- (comma list of row keys), E2E_CORES ("0:1": servers:loadgen),
-- E2E_JSON (where the raw results go; default build/bench/e2e.json),
-- E2E_NGINX_HTTP (extra http{} directives for every nginx, e.g. buffer sizes),
-- E2E_RATE (the open loop's offered handshakes/s, default 1000; 0 skips it),
-- E2E_RATE_SECONDS (its length per round), E2E_RATE_CONC (its cap on
-- handshakes in flight, default 2000), E2E_EIO_DICT (the size of (2p)'s
-- lua_shared_dict passport_eio, default 10m).
--
-- Every row is measured twice per round: a closed loop of E2E_CONC clients
-- (conn/s, CPU per handshake; its latency is mostly the queue of the other
-- clients) and an open loop at E2E_RATE handshakes/s (loadgen -m rate:
-- starts on a fixed schedule, latency from the scheduled start, so a
-- server that falls behind shows as latency, not as a lower offered rate).
package.path = "spec/?.lua;lua/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local proc = require "support.proc"
local redis_server = require "support.redis_server"
local cjson = require "cjson"
local socket = require "socket"

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then return default end
    return tonumber(v) or v
end

local QUICK = env("QUICK", 0) ~= 0
local USERS = env("E2E_USERS", QUICK and 2000 or 10000)
local SECONDS = env("E2E_SECONDS", QUICK and 2 or 5)
local ROUNDS = env("E2E_ROUNDS", QUICK and 1 or 3)
local CONC = env("E2E_CONC", 50)
local HOLD = env("E2E_HOLD", USERS)
local ROWS = env("E2E_ROWS", "guard,guard-cache,terminate,terminate-cache,sio,sio-http,sio-poll,floor,ws-floor,"
                             .. "psio,psio-poll,recipe,recipe-poll,guard-sio")
local RATE = env("E2E_RATE", 1000)
local RATE_SECONDS = env("E2E_RATE_SECONDS", QUICK and 2 or 5)
local RATE_CONC = env("E2E_RATE_CONC", 2000)
local EIO_DICT = tostring(env("E2E_EIO_DICT", "10m"))
local SRV_CPU, GEN_CPU = tostring(env("E2E_CORES", "0:1")):match("^(%d+):(%d+)$")
local LOADGEN = env("LOADGEN", "build/bench/loadgen")
local JSON_OUT = env("E2E_JSON", "build/bench/e2e.json")
local SECRET = "bench-e2e secret"
local ROOT = proc.sh("pwd"):gsub("%s+$", "")
local TICK = tonumber((proc.sh("getconf CLK_TCK"))) or 100

local sh = proc.sh
local q = proc.q
local function log(...) io.stderr:write(string.format(...), "\n") end

local read_file = proc.read_file

---------------------------------------------------------------------------
-- /proc: CPU time (utime + stime, all threads) and RSS of processes

local function children(pid)
    local out = sh("pgrep -P " .. pid)
    local t = {}
    for p in out:gmatch("%d+") do t[#t + 1] = tonumber(p) end
    return t
end

local function cpu_s(pids)
    local total = 0
    for _, pid in ipairs(pids) do
        local stat = read_file("/proc/" .. pid .. "/stat")
        if stat then
            local rest = stat:match("^%d+ %b() (.*)$")
            local f = {}
            for w in rest:gmatch("%S+") do f[#f + 1] = w end
            -- fields 14 and 15 of stat; rest starts at field 3
            total = total + (tonumber(f[12]) + tonumber(f[13])) / TICK
        end
    end
    return total
end

local function rss_kb(pids)
    local total = 0
    for _, pid in ipairs(pids) do
        local status = read_file("/proc/" .. pid .. "/status") or ""
        total = total + (tonumber(status:match("VmRSS:%s*(%d+)")) or 0)
    end
    return total
end

local function pin(pid)
    sh("taskset -apc " .. SRV_CPU .. " " .. pid .. " >/dev/null")
end

---------------------------------------------------------------------------
-- nginx: our own template (the spec helper's worker_connections is too
-- small for 10,000 proxied connections)

local NGINX_CONF = [[
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
user root root;
worker_processes {{workers}};
worker_rlimit_nofile 20000;
daemon on;
master_process on;
pid {{prefix}}/nginx.pid;
error_log {{prefix}}/error.log error;
events { worker_connections 19000; }
http {
    access_log off;
    lua_socket_log_errors off;
    client_body_temp_path {{prefix}}/client_body;
    proxy_temp_path {{prefix}}/proxy;
    fastcgi_temp_path {{prefix}}/fastcgi;
    uwsgi_temp_path {{prefix}}/uwsgi;
    scgi_temp_path {{prefix}}/scgi;
    lua_package_path "{{root}}/lua/?.lua;{{root}}/lua/?/init.lua;;";
    lua_package_cpath "{{root}}/build/?.so;;";
{{extra}}
{{http}}
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
{{server}}
    }
}
]]

local running = {}
-- The error.log of every nginx stopped (non-empty ones), for the report:
-- { server = name, port = port, lines = n, text = first lines }.
local error_logs = {}

local function keep_error_log(srv)
    local text = read_file(srv.prefix .. "/error.log") or ""
    if text == "" then return end
    local n, first = 0, {}
    for l in text:gmatch("[^\n]+") do
        n = n + 1
        if n <= 200 then first[n] = l end
    end
    error_logs[#error_logs + 1] = { server = srv.name, port = srv.port, row = srv.row, lines = n,
                                    text = first }
end

local function start_nginx(name, workers, http, server)
    local prefix = redis_server.tmpdir("e2e-" .. name)
    local port = proc.free_port()
    local vars = { prefix = prefix, root = ROOT, port = port, workers = workers,
                   extra = os.getenv("E2E_NGINX_HTTP") or "",
                   http = http or "", server = server or "" }
    local conf = NGINX_CONF:gsub("{{(%w+)}}", function(k) return tostring(vars[k]) end)
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local out, ok = sh("nginx -p " .. prefix .. " -c " .. prefix
                       .. "/nginx.conf -e " .. prefix .. "/error.log")
    if not ok then error("nginx " .. name .. " failed: " .. out .. (read_file(prefix .. "/error.log") or "")) end
    local pid
    for _ = 1, 200 do
        pid = tonumber(read_file(prefix .. "/nginx.pid") or "")
        if pid and #children(pid) > 0 then break end
        socket.sleep(0.02)
    end
    assert(pid, "nginx " .. name .. " wrote no pid")
    local srv = { name = name, port = port, prefix = prefix, pid = pid, kind = "nginx" }
    function srv.pids() local t = children(pid) t[#t + 1] = pid return t end
    for _, p in ipairs(srv.pids()) do pin(p) end
    running[#running + 1] = srv
    return srv
end

local function start_node(mode, redis_port)
    local port = proc.free_port()
    local logf = os.tmpname()
    local pid = tonumber((sh(("cd %s && PORT=%d REDIS_PORT=%d MODE=%s USERS=%d SECRET=%s "
        .. "nohup taskset -c %s node bench/e2e/server.js > %s 2>&1 & echo $!")
        :format(q(ROOT), port, redis_port, mode, USERS, q(SECRET), SRV_CPU, logf))))
    local deadline = socket.gettime() + 20
    while socket.gettime() < deadline do
        if (read_file(logf) or ""):match("listening %d+") then break end
        if not proc.alive(pid) then error("node " .. mode .. " exited: " .. (read_file(logf) or "")) end
        socket.sleep(0.05)
    end
    local srv = { name = mode, port = port, pid = pid, log = logf, kind = "node" }
    function srv.pids() return { pid } end
    pin(pid)
    running[#running + 1] = srv
    return srv
end

local function stop_servers(list)
    local gone = {}
    for _, srv in ipairs(list) do
        gone[srv] = true
        if srv.kind == "nginx" then
            sh("kill -QUIT " .. srv.pid)
        else
            sh("kill " .. srv.pid)
        end
    end
    local deadline = socket.gettime() + 5
    for _, srv in ipairs(list) do
        while proc.alive(srv.pid) and socket.gettime() < deadline do socket.sleep(0.05) end
        if proc.alive(srv.pid) then
            for _, p in ipairs(children(srv.pid)) do sh("kill -KILL " .. p) end
            sh("kill -KILL " .. srv.pid)
        end
        if srv.prefix then
            keep_error_log(srv)
            sh("rm -rf " .. srv.prefix)
        end
        if srv.log then os.remove(srv.log) end
    end
    local keep = {}
    for _, srv in ipairs(running) do
        if not gone[srv] then keep[#keep + 1] = srv end
    end
    running = keep
end

local function stop_all()
    local rest = {}
    for _, srv in ipairs(running) do
        if srv.kind == "redis" then srv.obj:stop() else rest[#rest + 1] = srv end
    end
    stop_servers(rest)
    running = {}
end

---------------------------------------------------------------------------
-- the load generator

local function decode_lines(text)
    local out = {}
    for l in text:gmatch("[^\n]+") do
        local ok, v = pcall(cjson.decode, l)
        if ok and type(v) == "table" then out[#out + 1] = v end
    end
    return out
end

local function loadgen_cmd(args)
    return ("taskset -c %s %s %s"):format(GEN_CPU, LOADGEN, args)
end

-- One run to completion: the "done" object.
local function loadgen(args)
    local out = sh(loadgen_cmd(args))
    local lines = decode_lines(out)
    local done = lines[#lines]
    assert(done and done.event == "done", "loadgen: " .. out)
    return done
end

local function row_args(row)
    return ("-p %d -P %s%s%s%s -b 16"):format(row.port, q(row.path), row.sio and " -s" or "",
                                            row.poll and " -u" or "", row.close_rejects and " -x" or "")
end

---------------------------------------------------------------------------
-- the stacks

local function user_table_lua(n)
    -- The gateway's deserialize_user: the same in-memory user table the
    -- Node app has (id -> { id, username, role }), built once per worker.
    return ([[
        users = {}
        for i = 0, %d - 1 do
            users[i] = { id = i, username = "u" .. i, role = i %% 10 == 0 and "admin" or "user" }
        end
        local function deserialize_user(id) return users[id] end
]]):format(n)
end

local ROW_INFO = {
    guard = "(1) nginx guard: auth:access() -> nginx ws upstream",
    ["guard-cache"] = "(1c) the same, coherent session cache",
    ["terminate-cache"] = "(2c) the same, coherent session cache",
    terminate = "(2) nginx terminate: passport.websocket",
    sio = "(2s) nginx socket.io: passport.socketio",
    ["sio-http"] = "(2h) the same, refuse = \"http\" (401)",
    ["sio-cache"] = "(2sc) (2s), coherent session cache",
    floor = "(3) nginx, no auth -> nginx ws upstream (floor)",
    ["ws-floor"] = "(3b) the nginx ws upstream alone, no auth, no proxy",
    psio = "(4) socket.io 4 + passport.socketio 3.7.0",
    recipe = "(5) socket.io 4 + Passport recipe (io.engine.use)",
    ["guard-sio"] = "(1b) nginx guard -> socket.io 4, no auth in Node",
    ["sio-poll"] = "(2p) (2s) + passport_eio: polling -> upgrade",
    ["psio-poll"] = "(4p) (4), polling -> upgrade",
    ["recipe-poll"] = "(5p) (5), polling -> upgrade",
}
local ORDER = { "guard", "guard-cache", "terminate", "terminate-cache", "sio", "sio-http", "sio-cache",
                "sio-poll", "floor", "ws-floor", "psio", "psio-poll", "recipe", "recipe-poll", "guard-sio" }

local function wanted(key)
    for k in tostring(ROWS):gmatch("[^,%s]+") do
        if k == key then return true end
    end
    return false
end

local function admins_among(n)
    return n > 0 and math.floor((n - 1) / 10) + 1 or 0
end

local function main()
    assert(SRV_CPU, "E2E_CORES must look like 0:1")
    local results = { rows = {}, meta = {} }
    local redis = redis_server.start { config = { "notify-keyspace-events Kgx$" } } -- the coherent cache rows
    running[#running + 1] = { name = "redis", kind = "redis", pid = redis.pid, obj = redis }
    pin(redis.pid)
    local redis_pids = { redis.pid }
    local work = redis_server.tmpdir("e2e")
    results.work = work

    -- The seeding app (psio mode; its /login is the same in every mode).
    local seeder = start_node("psio", redis.port)
    local cookies, forged = work .. "/cookies.txt", work .. "/forged.txt"
    local t0 = socket.gettime()
    local out, ok = sh(("cd %s && node bench/e2e/seed.js %d %d %s %s")
                       :format(q(ROOT), seeder.port, USERS, cookies, forged))
    assert(ok, "seeding failed: " .. out)
    log("seeded %d sessions through the Express app in %.1f s", USERS, socket.gettime() - t0)
    local n_sess = redis:call("DBSIZE")
    assert(tonumber(n_sess) >= USERS, "Redis holds " .. tostring(n_sess) .. " sessions")
    stop_servers({ seeder })

    local has_ws = io.open(ROOT .. "/lua/resty/passport/websocket.lua") ~= nil
    local has_sio = io.open(ROOT .. "/lua/resty/passport/socketio.lua") ~= nil
    local function upstream_ws()
        return start_nginx("upstream", 1, "", ([[
        location / { content_by_lua_file %s/bench/e2e/ws_upstream.lua; }
]]):format(ROOT))
    end
    -- The gateway: the same conf for every nginx row; only the location
    -- the load generator uses and the upstream differ.
    local function gateway(workers, up_port, extra_http)
        return start_nginx("gateway", workers, (extra_http or "") .. ([[
    init_by_lua_block {
        local passport = require "resty.passport"
%s
        store = passport.redis { port = %d, pool_size = 64 }
        auth = passport.authorize { secret = %q, store = store, deserialize_user = deserialize_user }
        -- the coherent cache: kept true by init_worker's keyspace subscription
        store_c = passport.redis { port = %d, pool_size = 64, cache_ttl = 600000,
                                   cache_size = %d, cache_coherent = true }
        auth_c = passport.authorize { secret = %q, store = store_c, deserialize_user = deserialize_user }
%s
    }
    %s
    upstream up { server 127.0.0.1:%d; }
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection "upgrade";
    proxy_read_timeout 3600s;
    proxy_send_timeout 3600s;
]]):format(user_table_lua(USERS), redis.port, SECRET, redis.port, USERS, SECRET,
           has_sio and [[
        -- the gateway's own socket.io server (created once, per worker by fork)
        local function hello(socket) socket:emit("hello", { user = socket.user.username }) end
        sio = passport.socketio { auth = auth }
        sio:of("/"):on("connection", hello)
        sio_http = passport.socketio { auth = auth, refuse = "http" }
        sio_http:of("/"):on("connection", hello)
        sio_c = passport.socketio { auth = auth_c }
        sio_c:of("/"):on("connection", hello)]] or "",
           has_ws and ([[init_worker_by_lua_block {
        require("resty.passport").init_worker { store = store_c, channel = "passport:emit",
            filters = { admins = function(user) return user.role == "admin" end } }
    }]]) or "", up_port or 9), [[
        location /ws { access_by_lua_block { auth:access() } proxy_pass http://up; }
        location /wsc { access_by_lua_block { auth_c:access() } proxy_pass http://up; }
        location /open { proxy_pass http://up; }
        location /socket.io/ { access_by_lua_block { auth:access() } proxy_pass http://up; }
        location /term {
            content_by_lua_block {
                local passport = require "resty.passport"
                local socket = passport.websocket(ngx.var.arg_c and auth_c or auth)
                if not socket then return end
                socket:send("hello " .. socket.user.username)
                while true do
                    local msg = socket:recv()
                    if not msg then break end
                end
            }
        }
        location = /emit {
            content_by_lua_block {
                local ok, err = require("resty.passport").emit { filter = "admins", data = "news" }
                ngx.print(ok and "-1" or ("error: " .. tostring(err)))
            }
        }
        location /sio/ { content_by_lua_block { sio:serve() } }
        location /sio-http/ { content_by_lua_block { sio_http:serve() } }
        location /sioc/ { content_by_lua_block { sio_c:serve() } }
        location = /emit-sio {
            content_by_lua_block {
                local ok, err = require("resty.passport").emit { filter = "admins", namespace = "/",
                                                                 event = "news", args = { { n = 1 } } }
                ngx.print(ok and "-1" or ("error: " .. tostring(err)))
            }
        }
]])
    end

    local function pids_of(servers)
        return function()
            local t = {}
            for _, srv in ipairs(servers) do
                for _, p in ipairs(srv.pids()) do t[#t + 1] = p end
            end
            return t
        end
    end
    local SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
    -- A row's own processes.  hold: the gateway proxies 2 sockets per
    -- connection, and a process may hold 20,000 fds here, so 10,000 held
    -- proxied connections need 2 workers (both on the servers' core).
    local function build(key, hold)
        local row
        if key == "guard" or key == "guard-cache" or key == "floor" then
            local up = upstream_ws()
            local gw = gateway(hold and 2 or 1, up.port)
            local path = ({ guard = "/ws", ["guard-cache"] = "/wsc", floor = "/open" })[key]
            row = { servers = { gw, up }, port = gw.port, path = path }
        elseif key == "terminate" or key == "terminate-cache" then
            local gw = gateway(1)
            row = { servers = { gw }, port = gw.port, path = key == "terminate" and "/term" or "/term?c=1",
                    emit = "/emit", emit_expected = true }
        elseif key == "sio" or key == "sio-http" or key == "sio-cache" then
            assert(has_sio, "row " .. key .. ": no lua/resty/passport/socketio.lua in this tree")
            local gw = gateway(1)
            local base = ({ sio = "/sio/", ["sio-http"] = "/sio-http/", ["sio-cache"] = "/sioc/" })[key]
            row = { servers = { gw }, port = gw.port, path = base .. "?EIO=4&transport=websocket", sio = true,
                    emit = "/emit-sio", emit_expected = true,
                    -- its authorized path is (2s)'s: no second hold
                    no_hold = key == "sio-http" }
        elseif key == "sio-poll" then
            assert(has_sio, "row " .. key .. ": no lua/resty/passport/socketio.lua in this tree")
            -- the same conf as (2s), plus the dict that turns polling on
            local gw = gateway(1, nil, ("    lua_shared_dict passport_eio %s;\n"):format(EIO_DICT))
            row = { servers = { gw }, port = gw.port, path = "/sio/?EIO=4", sio = true, poll = true,
                    emit = "/emit-sio", emit_expected = true }
        elseif key == "psio-poll" or key == "recipe-poll" then
            local node = start_node(key:match("^(%a+)"), redis.port)
            row = { servers = { node }, port = node.port, path = "/socket.io/?EIO=4", sio = true, poll = true,
                    emit = "/emit", close_rejects = key == "recipe-poll", native_filter = true }
        elseif key == "ws-floor" then
            local up = upstream_ws()
            row = { servers = { up }, port = up.port, path = "/ws" }
        elseif key == "psio" or key == "recipe" then
            local node = start_node(key, redis.port)
            row = { servers = { node }, port = node.port, path = SIO_PATH, sio = true, emit = "/emit",
                    close_rejects = key == "recipe", native_filter = true }
        elseif key == "guard-sio" then
            local node = start_node("noauth", redis.port)
            local gw = gateway(hold and 2 or 1, node.port)
            row = { servers = { gw, node }, port = gw.port, path = SIO_PATH, sio = true }
        end
        row.key, row.label, row.pids = key, ROW_INFO[key], pids_of(row.servers)
        for _, srv in ipairs(row.servers) do srv.row = key .. (hold and " (hold)" or "") end
        return row
    end
    local function cat(a, b)
        local t = {}
        for _, v in ipairs(a) do t[#t + 1] = v end
        for _, v in ipairs(b) do t[#t + 1] = v end
        return t
    end
    local rows = {}
    for _, key in ipairs(ORDER) do
        if wanted(key) then rows[key] = build(key, false) end
    end

    local active = {}
    for _, key in ipairs(ORDER) do
        local row = rows[key]
        if wanted(key) and row then
            row.key, row.label = key, ROW_INFO[key]
            -- a probe: 20 handshakes must all succeed
            local probe = loadgen(row_args(row) .. (" -f %s -m connect -c 4 -n 20 -T 3000"):format(cookies))
            if probe.ok == 20 then
                active[#active + 1] = row
            else
                row.pending = ("probe: %d of 20 handshakes ok (%d rejected, %d errors)")
                              :format(probe.ok, probe.rejected, probe.errors)
                log("row %s left out: %s", key, row.pending)
            end
            results.rows[key] = row
        end
    end

    -- Warm-up (JITs, pools), then connect-rate and rejected-rate in rounds,
    -- the rows interleaved so drift on the shared VM hits them alike.
    for _, row in ipairs(active) do
        loadgen(row_args(row) .. (" -f %s -m connect -c %d -d 1"):format(cookies, CONC))
        row.connect, row.reject = {}, {}
    end
    for round = 1, ROUNDS do
        for _, row in ipairs(active) do
            local pids = cat(row.pids(), redis_pids)
            local c0 = cpu_s(pids)
            local r = loadgen(row_args(row) .. (" -f %s -m connect -c %d -d %s"):format(cookies, CONC, SECONDS))
            r.server_cpu_s = cpu_s(pids) - c0
            row.connect[round] = r
            c0 = cpu_s(pids)
            local j = loadgen(row_args(row) .. (" -f %s -m reject -c %d -d %s"):format(forged, CONC, SECONDS / 2))
            j.server_cpu_s = cpu_s(pids) - c0
            row.reject[round] = j
            -- the same handshake unloaded: one client, so no queueing
            row.single = row.single or {}
            row.single[round] = loadgen(row_args(row) .. (" -f %s -m connect -c 1 -d 1"):format(cookies))
            log("round %d %-10s %8.0f conn/s p50 %6.2f p99 %6.2f ms, cpu %.0f us/handshake, "
                .. "%8.0f rejected/s, errors %d/%d", round, row.key, r.conn_per_s, r.p50_ms, r.p99_ms,
                r.ok > 0 and r.server_cpu_s / r.ok * 1e6 or 0, j.rejected_per_s, r.errors, j.errors)
            -- the open loop: RATE handshakes/s on a fixed schedule
            if RATE > 0 then
                row.open = row.open or {}
                c0 = cpu_s(pids)
                local o = loadgen(row_args(row) .. (" -f %s -m rate -R %s -d %s -c %d")
                                  :format(cookies, RATE, RATE_SECONDS, RATE_CONC))
                o.server_cpu_s = cpu_s(pids) - c0
                row.open[round] = o
                log("round %d %-10s open loop %.0f/s offered, %.0f/s done: p50 %6.2f p99 %6.2f max %6.2f ms"
                    .. " (from the schedule; from connect() p50 %.2f p99 %.2f), %d late (max %.2f ms), %d failed,"
                    .. " %d rejected, cpu %.0f us/handshake", round, row.key, RATE, o.conn_per_s, o.p50_ms,
                    o.p99_ms, o.max_ms, o.svc_p50_ms, o.svc_p99_ms, o.late, o.late_max_ms, o.failed,
                    o.rejected, o.ok > 0 and o.server_cpu_s / o.ok * 1e6 or 0)
            end
        end
    end

    -- Hold: HOLD authorized idle connections per row on fresh processes
    -- (memory one row freed is not handed back to the OS, so a shared
    -- process would bias the next row), RSS, then filter + emit.
    for _, row in ipairs(active) do stop_servers(row.servers) end
    local function hold_row(rate_row)
        local row = build(rate_row.key, true)
        socket.sleep(1)
        local pids = row.pids()
        local rss0 = rss_kb(pids)
        local emit = ""
        if row.emit then
            emit = (" -E %s -Q %d"):format(row.emit, row.port)
            if row.emit_expected then emit = emit .. " -e " .. admins_among(HOLD) end
        end
        local cmd = "echo $$; exec " .. loadgen_cmd(row_args(row) .. (" -f %s -m hold -N %d -c 100 -T 30000%s")
                                                     :format(cookies, HOLD, emit))
        local p = assert(io.popen(cmd))
        local pid = tonumber(p:read("*l"))
        local up = cjson.decode(p:read("*l") or "null")
        assert(up and up.event == "up", "hold: no up line")
        socket.sleep(2)
        local hold = { up = up, rss0_kb = rss0, rss_kb = rss_kb(pids) }
        if row.emit then
            if row.native_filter then
                hold.filter_native = sh(("curl -s http://127.0.0.1:%d/filter-native"):format(row.port))
            end
            sh("kill -USR1 " .. pid)
            hold.emit = cjson.decode(p:read("*l") or "null")
        end
        sh("kill -TERM " .. pid)
        local rest = p:read("*a")
        p:close()
        local lines = decode_lines(rest)
        hold.done = lines[#lines]
        rate_row.hold = hold
        stop_servers(row.servers)
        log("hold %-10s %d up in %.1f s, RSS %d -> %d kB (%.1f kB/conn)%s", row.key, up.held, up.up_s,
            rss0, hold.rss_kb, (hold.rss_kb - rss0) / math.max(up.held, 1),
            hold.emit and ("; emit to %d/%d in %.1f ms"):format(hold.emit.received, hold.emit.expected,
                                                                 hold.emit.last_ms) or "")
    end
    for _, rate_row in ipairs(active) do
        -- a row whose authorized path is another's (sio-http) is not held again
        if not rate_row.no_hold then hold_row(rate_row) end
    end
    results.active = active
    return results
end

---------------------------------------------------------------------------
-- the report

local function median(list)
    local t = {}
    for i, v in ipairs(list) do t[i] = v end
    table.sort(t)
    return t[math.ceil(#t / 2)]
end

local function summarize(row)
    local s = {}
    local function med(tbl, f)
        local vals = {}
        for i, r in ipairs(tbl) do vals[i] = f(r) end
        return median(vals)
    end
    s.conn = med(row.connect, function(r) return r.conn_per_s end)
    s.p50 = med(row.connect, function(r) return r.p50_ms end)
    s.p99 = med(row.connect, function(r) return r.p99_ms end)
    s.cpu_us = med(row.connect, function(r) return r.server_cpu_s / math.max(r.ok, 1) * 1e6 end)
    s.server_share = med(row.connect, function(r) return r.server_cpu_s / r.elapsed_s end)
    s.gen_share = med(row.connect, function(r) return r.cpu_s / r.elapsed_s end)
    s.gen_us = med(row.connect, function(r) return r.cpu_s / math.max(r.ok, 1) * 1e6 end)
    s.rej = med(row.reject, function(r) return r.rejected_per_s end)
    s.p50_1 = med(row.single, function(r) return r.p50_ms end)
    s.p99_1 = med(row.single, function(r) return r.p99_ms end)
    s.rej_cpu_us = med(row.reject, function(r) return r.server_cpu_s / math.max(r.rejected, 1) * 1e6 end)
    if row.open and row.open[1] then
        local o = row.open
        s.open = {
            done = med(o, function(r) return r.conn_per_s end),
            p50 = med(o, function(r) return r.p50_ms end),
            p99 = med(o, function(r) return r.p99_ms end),
            max = med(o, function(r) return r.max_ms end),
            svc_p50 = med(o, function(r) return r.svc_p50_ms end),
            svc_p99 = med(o, function(r) return r.svc_p99_ms end),
            cpu_us = med(o, function(r) return r.server_cpu_s / math.max(r.ok, 1) * 1e6 end),
            server_share = med(o, function(r) return r.server_cpu_s / r.elapsed_s end),
            in_flight = med(o, function(r) return r.max_in_flight end),
            late_max = med(o, function(r) return r.late_max_ms end),
        }
        local late, failed, rejected, started = 0, 0, 0, 0
        for _, r in ipairs(o) do
            late, failed = late + r.late, failed + r.failed
            rejected, started = rejected + r.rejected, started + r.started
        end
        s.open.late, s.open.failed, s.open.rejected, s.open.started = late, failed + rejected, rejected, started
    end
    s.errors = 0
    for _, r in ipairs(row.connect) do s.errors = s.errors + r.errors end
    for _, r in ipairs(row.reject) do s.errors = s.errors + r.errors + r.ok end
    if row.hold then
        local held = row.hold.up.held
        s.held = held
        s.rss_mb = row.hold.rss_kb / 1024
        s.rss_conn = (row.hold.rss_kb - row.hold.rss0_kb) / math.max(held, 1)
        if row.hold.emit then
            s.emit_ms = row.hold.emit.last_ms
            s.emit_n = row.hold.emit.received
            s.emit_expected = row.hold.emit.expected
        end
        s.filter_native = row.hold.filter_native
    end
    row.summary = s
    return s
end

local function fmt(v, f)
    if v == nil then return "-" end
    return (f or "%.0f"):format(v)
end

local function report(results)
    local meta = {
        date = os.date("!%Y-%m-%d"),
        cpu = (sh("grep -m1 'model name' /proc/cpuinfo"):match(":%s*(.-)%s*$")),
        cores = tonumber((sh("nproc"))),
        nginx = (sh("nginx -v 2>&1"):match("nginx/([%d.]+)")),
        redis = (sh("redis-server --version"):match("v=([%d.]+)")),
        node = (sh("node --version"):gsub("%s+$", "")),
    }
    local npm = {}
    for _, p in ipairs { "socket.io", "passport.socketio", "express-session", "connect-redis", "passport", "redis" } do
        local pj = read_file("node_modules/" .. p .. "/package.json") or "{}"
        npm[#npm + 1] = p .. "@" .. (cjson.decode(pj).version or "?")
    end
    meta.npm = table.concat(npm, " ")
    results.meta = meta

    print(("bench-e2e: %s, %d cores (shared VM), %s; nginx %s, Redis %s, node %s")
          :format(meta.cpu or "?", meta.cores or 0, meta.date, meta.nginx or "?", meta.redis or "?", meta.node))
    print("  " .. meta.npm)
    print(("  %d users logged in over HTTP by the Express app; loadgen -c %d, %d round(s) of %ss connect-rate"
           .. " + %ss rejected-rate per row, interleaved; medians"):format(USERS, CONC, ROUNDS, SECONDS, SECONDS / 2))
    print(("  servers + Redis on cpu %s, the load generator on cpu %s: the 2 cores are shared by both sides")
          :format(SRV_CPU, GEN_CPU))
    print("  nginx: 1 worker per instance; for the hold, gateways that proxy get 2 (20,000 fds per process here)")
    print(("  hold: %d authorized idle connections per row; RSS = server processes (nginx master + workers "
           .. "summed; node), without Redis"):format(HOLD))
    print("")
    local hdr = ("  %-50s %8s %7s %7s %9s %9s %8s %8s %9s %6s %6s %7s %7s")
        :format("stack", "conn/s", "p50 ms", "p99 ms", "rejected/s", "RSS MB", "KB/conn", "CPU us", "emit ms",
                "srv%", "gen%", "p50@1", "p99@1")
    print(hdr)
    local base
    for _, key in ipairs(ORDER) do
        local row = results.rows[key]
        if row and row.key == "psio" and row.connect then base = summarize(row) end
    end
    for _, key in ipairs(ORDER) do
        local row = results.rows[key]
        if row then
            if row.connect then
                local s = row.summary or summarize(row)
                print(("  %-50s %8s %7s %7s %9s %9s %8s %8s %9s %6s %6s %7s %7s"):format(row.label,
                    fmt(s.conn), fmt(s.p50, "%.2f"), fmt(s.p99, "%.2f"), fmt(s.rej), fmt(s.rss_mb, "%.1f"),
                    fmt(s.rss_conn, "%.1f"), fmt(s.cpu_us), fmt(s.emit_ms, "%.1f"),
                    fmt(s.server_share * 100), fmt(s.gen_share * 100), fmt(s.p50_1, "%.2f"),
                    fmt(s.p99_1, "%.2f")))
            else
                print(("  %-50s pending: %s"):format(row.label, row.pending or "not run"))
            end
        end
    end
    if RATE > 0 then
        print("")
        print(("  open loop: %s handshakes/s offered on a fixed schedule for %ss per round (loadgen -m rate, "
               .. "at most %d in flight); latency from the scheduled start"):format(RATE, RATE_SECONDS, RATE_CONC))
        print(("  %-50s %8s %7s %7s %8s %9s %9s %8s %6s %6s %6s %8s"):format("stack", "done/s", "p50 ms", "p99 ms",
              "max ms", "svc p50", "svc p99", "CPU us", "srv%", "late", "failed", "inflight"))
        for _, key in ipairs(ORDER) do
            local row = results.rows[key]
            local o = row and row.summary and row.summary.open
            if o then
                print(("  %-50s %8s %7s %7s %8s %9s %9s %8s %6s %6s %6s %8s"):format(row.label, fmt(o.done),
                      fmt(o.p50, "%.2f"), fmt(o.p99, "%.2f"), fmt(o.max, "%.1f"), fmt(o.svc_p50, "%.2f"),
                      fmt(o.svc_p99, "%.2f"), fmt(o.cpu_us), fmt(o.server_share * 100), fmt(o.late),
                      fmt(o.failed), fmt(o.in_flight)))
            end
        end
        print("  done/s: authorized handshakes completed per second; svc: latency from the actual connect() "
              .. "(the server's share);")
        print("  late: starts > 1 ms behind schedule (the generator or the in-flight cap held them back; "
              .. "still timed from the schedule),")
        print("  failed: errors of any kind (+ rejections, which a valid cookie must not get), summed over "
              .. "rounds; inflight: the most handshakes open at once (median)")
    end
    if base then
        print("")
        local term = results.rows.terminate and results.rows.terminate.summary
        print("  each figure / the same figure of (4)" .. (term and "; CPU/(2): CPU per handshake / (2)'s:" or ":"))
        print(("  %-50s %8s %7s %7s %9s %9s %8s %8s %9s %7s %7s %7s"):format("stack", "conn/s", "p50", "p99",
              "rejected/s", "RSS", "KB/conn", "CPU/hs", "emit", "p50@R", "p99@R", "CPU/(2)"))
        local function r(a, b) if a and b and b ~= 0 then return ("%.2f"):format(a / b) end return "-" end
        local bo = base.open or {}
        for _, key in ipairs(ORDER) do
            local row = results.rows[key]
            if row and row.summary then
                local s = row.summary
                local so = s.open or {}
                print(("  %-50s %8s %7s %7s %9s %9s %8s %8s %9s %7s %7s %7s"):format(row.label,
                      r(s.conn, base.conn), r(s.p50, base.p50), r(s.p99, base.p99), r(s.rej, base.rej),
                      r(s.rss_mb, base.rss_mb), r(s.rss_conn, base.rss_conn), r(s.cpu_us, base.cpu_us),
                      r(s.emit_ms, base.emit_ms), r(so.p50, bo.p50), r(so.p99, bo.p99),
                      r(s.cpu_us, term and term.cpu_us)))
            end
        end
    end
    print("")
    print("  conn/s: authorized handshakes (connect -> welcome -> close) per second at -c " .. CONC
          .. "; CPU us: server processes + Redis CPU (/proc/<pid>/stat) per authorized handshake;")
    print("  srv% / gen%: CPU of servers+Redis / of the load generator over the connect-rate run "
          .. "(100 = one core busy); emit: filter 1 in 10 users (admins) + one message each, "
          .. "HTTP trigger -> last delivery;")
    print("  p50@1 / p99@1: the same handshake with one client (no queueing); at -c " .. CONC
          .. " a closed loop waits about " .. CONC .. " / (conn/s) per handshake")
    print("  (2p)/(4p)/(5p) (loadgen -u): a handshake is socket.io-client's default connection: GET handshake,"
          .. " POST \"40\", GET \"40{..}\"")
    print("    (the hello \"42\" comes with it), close that keep-alive connection, WebSocket with the sid,"
          .. " 2probe/3probe/5, close; (2p): lua_shared_dict passport_eio " .. EIO_DICT)
    for _, key in ipairs(ORDER) do
        local row = results.rows[key]
        local s = row and row.summary
        if s and s.emit_n then
            print(("  emit %-15s delivered %d/%d%s"):format(key, s.emit_n, s.emit_expected,
                  s.filter_native and ("; passport.socketio's filterSocketsByUser found " .. s.filter_native
                                       .. " sockets (socket.io 4 has no sockets.connected)") or ""))
        end
    end
    -- The issue's targets, from this run.
    local t = {}
    local function S(key) return results.rows[key] and results.rows[key].summary end
    print("")
    print("  targets (issue 6):")
    for _, key in ipairs { "guard", "guard-cache", "terminate", "terminate-cache" } do
        local s = S(key)
        if s and base then
            t[#t + 1] = ("  %-15s CPU/handshake %.1fx lower than (4) (>= 10: %s); conn/s %.1fx (>= 10: %s)")
                :format(key, base.cpu_us / s.cpu_us, base.cpu_us / s.cpu_us >= 10 and "met" or "NOT met",
                        s.conn / base.conn, s.conn / base.conn >= 10 and "met" or "not met")
            local term = key:match("^terminate")
            local floor = term and S("ws-floor") or S("floor")
            if floor then
                t[#t + 1] = ("  %-15s cost vs the no-auth floor %s: CPU/handshake %.2fx, conn/s %.2fx (<= 1.25: %s)")
                    :format(key, term and S("ws-floor") and "(3b)" or "(3)",
                            s.cpu_us / floor.cpu_us, floor.conn / s.conn,
                            (s.cpu_us / floor.cpu_us <= 1.25 and floor.conn / s.conn <= 1.25) and "met" or "NOT met")
            end
            t[#t + 1] = ("  %-15s p99 %.2f ms at %d concurrent (< 5 ms: %s)")
                :format(key, s.p99, CONC, s.p99 < 5 and "met" or "NOT met")
            if s.rss_conn and base.rss_conn then
                t[#t + 1] = ("  %-15s RSS per idle authorized connection %.1f KB = %.2f of (4)'s %.1f KB (<= 0.5: %s)")
                    :format(key, s.rss_conn, s.rss_conn / base.rss_conn, base.rss_conn,
                            s.rss_conn / base.rss_conn <= 0.5 and "met" or "NOT met")
            end
        elseif s then
            t[#t + 1] = ("  %-15s no (4) psio row in this run to compare with"):format(key)
        elseif results.rows[key] then
            t[#t + 1] = ("  %-15s pending"):format(key)
        end
    end
    print(table.concat(t, "\n"))

    -- The gateway's own socket.io server against passport.socketio and
    -- the plain terminate row.
    local sio, term = S("sio"), S("terminate")
    if sio then
        print("")
        print("  targets (socket.io in the gateway):")
        if base then
            local x = sio.cpu_us / base.cpu_us
            print(("  sio             CPU/authorized handshake %.0f us = %.3f of (4)'s %.0f us (<= 1/6 = 0.167: %s)")
                  :format(sio.cpu_us, x, base.cpu_us, x <= 1 / 6 and "met" or "NOT met"))
        end
        if term then
            local x = sio.cpu_us / term.cpu_us
            print(("  sio             CPU/authorized handshake %.2fx (2) terminate's %.0f us (<= 1.3: %s)")
                  :format(x, term.cpu_us, x <= 1.3 and "met" or "NOT met"))
        end
        local sc, tc = S("sio-cache"), S("terminate-cache")
        if sc and base then
            print(("  sio-cache       CPU/authorized handshake %.0f us = %.3f of (4)'s%s")
                  :format(sc.cpu_us, sc.cpu_us / base.cpu_us,
                          tc and (", %.2fx (2c)'s"):format(sc.cpu_us / tc.cpu_us) or ""))
        end
        if sio.rss_conn then
            print(("  sio             RSS per idle authorized socket.io socket %.1f KB%s")
                  :format(sio.rss_conn, base and base.rss_conn and (" = %.2f of (4)'s %.1f KB")
                          :format(sio.rss_conn / base.rss_conn, base.rss_conn) or ""))
        end
        if sio.open and base and base.open then
            print(("  sio             open loop at %s/s: p50 %.2f ms, p99 %.2f ms; (4): p50 %.2f ms, p99 %.2f ms")
                  :format(RATE, sio.open.p50, sio.open.p99, base.open.p50, base.open.p99))
        end
    end
    -- socket.io-client's default connection (polling, then the upgrade):
    -- the gateway against both Node stacks doing the same.
    local sp = S("sio-poll")
    if sp then
        print("")
        print("  targets (socket.io-client's default connection: polling handshake, POST 40, GET 40{..},"
              .. " upgrade, close):")
        for _, key in ipairs { "psio-poll", "recipe-poll" } do
            local n = S(key)
            if n then
                local x = sp.cpu_us / n.cpu_us
                print(("  sio-poll        CPU/authorized connection %.0f us = %.3f of %s's %.0f us (<= 1/4 = 0.25: %s);"
                       .. " conn/s %.0f = %.2fx its %.0f")
                      :format(sp.cpu_us, x, key, n.cpu_us, x <= 0.25 and "met" or "NOT met", sp.conn,
                              sp.conn / n.conn, n.conn))
                if sp.open and n.open then
                    print(("  sio-poll        open loop at %s/s: p50 %.2f ms, p99 %.2f ms;"
                           .. " %s: p50 %.2f ms, p99 %.2f ms")
                          :format(RATE, sp.open.p50, sp.open.p99, key, n.open.p50, n.open.p99))
                end
            end
        end
        if sio then
            print(("  sio-poll        against its WebSocket-only row (2s): CPU/connection %.2fx (%.0f us),"
                   .. " conn/s %.2fx")
                  :format(sp.cpu_us / sio.cpu_us, sio.cpu_us, sp.conn / sio.conn))
        end
        if sp.errors > 0 or (sp.open and sp.open.failed > 0) then
            print(("  sio-poll        errors: %d in the closed loops, %d failed in the open loop (see the JSON's err_*;"
                   .. " and the error.log below)"):format(sp.errors, sp.open and sp.open.failed or 0))
        end
    end
    -- Refusals: connect_error (upgrade, open packet, 40 -> 44{...}) or HTTP.
    local refusal_rows = {}
    for _, key in ipairs { "sio", "sio-http", "sio-poll", "terminate", "psio", "psio-poll", "recipe", "recipe-poll" } do
        local s = S(key)
        if s then
            refusal_rows[#refusal_rows + 1] = ("%s %.0f/s at %.0f us CPU each"):format(key, s.rej, s.rej_cpu_us)
        end
    end
    if S("sio") or S("sio-http") then
        print("  refusals (forged cookies, -c " .. CONC .. "): " .. table.concat(refusal_rows, "; "))
        print("    sio: upgraded, open packet, 40 -> 44{\"message\":...}; sio-http: HTTP 401; terminate: 401;"
              .. " psio: 44 after the upgrade; recipe: socket closed")
        if sp or S("psio-poll") or S("recipe-poll") then
            print("    sio-poll, psio-poll: polling handshake, POST 40, 44{...} in the GET; recipe-poll: 401 to the"
                  .. " handshake GET")
        end
    end
    -- Anything the nginx instances logged at level error or above.
    print("")
    if #error_logs == 0 then
        print("  nginx error.log (level error): empty for every instance")
    else
        for _, e in ipairs(error_logs) do
            print(("  nginx error.log of %s (%s, port %d): %d line(s)"):format(e.server, e.row or "?", e.port,
                  e.lines))
            for i = 1, math.min(#e.text, 5) do print("    " .. e.text[i]:sub(1, 300)) end
        end
    end
end

local ok, res = xpcall(main, debug.traceback)
stop_all()
if not ok then
    io.stderr:write(res, "\n")
    os.exit(1)
end
local results = res
report(results)
-- raw results for the record
local function plain(v, seen)
    if type(v) == "function" then return nil end
    if type(v) ~= "table" then return v end
    if seen[v] then return nil end
    seen[v] = true
    local out = {}
    for k, x in pairs(v) do
        if k ~= "servers" then out[k] = plain(x, seen) end
    end
    return out
end
local dump = { meta = results.meta, rows = plain(results.rows, {}), error_logs = error_logs,
               settings = { users = USERS, seconds = SECONDS, rounds = ROUNDS, conc = CONC, hold = HOLD,
                            rate = RATE, rate_seconds = RATE_SECONDS, rate_conc = RATE_CONC,
                            eio_dict = EIO_DICT } }
sh("mkdir -p " .. q(JSON_OUT:match("^(.*)/") or "."))
local f = io.open(JSON_OUT, "w")
if f then f:write(cjson.encode(dump)) f:close() end
if results.work then sh("rm -rf " .. q(results.work)) end
