-- Shared by the socket.io specs (spec/integration/socketio*_spec.lua): the
-- Node reference and the gateway on the test application, the client
-- scenarios (spec/support/app/sio_client.js) run at once or in the
-- background, raw HTTP and Engine.IO/Socket.IO packets, and the comparison
-- of the reference's outcomes with the gateway's.
--
--   local sio = require "support.sio_specs"
--   SETTINGS                               -- both servers' settings, sio_reference.js's environment
--   start_reference(redis_port, env)       -- sio_reference.js with SETTINGS, env overriding (SECRET ...)
--   start_gateway(redis_port, env, opts)   -- nginx on sio_app.lua with the same: gw, why it cannot serve
--   stop_gateway(gw, check, whose)         -- stops it; with check, fails on a crash in its error log
--   run_clients(list)                      -- scenarios in one node process: their outcomes
--   start_clients(dir, list)               -- the same in the background: wait_mark(s), open_gate, result
--   scenario(srv, fields)                  -- a scenario whose "open" steps wait for the greeting
--   events(out, s, name)                   -- a socket's events (of one name) in an outcome
--   http_req(port, method, path, headers, body), http_get(port, path, headers)
--   tag(name)                              -- a new tag for the application's log: name-<n>
--   server_log(srv, tag, n)                -- the application's log of a tag (GET /log)
--   next_frame(c, timeout)                 -- a raw WebSocket's next Engine.IO packet, pings answered
--   parse(payload), shape(packet)          -- a Socket.IO packet, and its shape for comparing
--   count(text, plain)                     -- how many times plain stands in text
--   local cmp = sio.comparison(servers, ignore)  -- servers: the spec's table; ignore: more keys not compared
--   cmp.set(ref, gw, gw_err)                     -- in setup: servers.ref, and servers.gw when it serves
--   cmp.need_gateway(), cmp.both(make), cmp.agree(ref_out, gw_out), cmp.on_both(fn),
--   cmp.differences(ref_out, gw_out)
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"
local socket = require "socket"
local cjson = require "cjson"

local M = {}

local shq = proc.q
local ROOT = nginx_server.root

-- JSON null becomes nil, so fields can be tested plainly.
local denull = require("support.ws_clients").denull

---------------------------------------------------------------------------
-- The servers.

-- The settings the reference and the gateway run with, as the reference's
-- environment: the one Origin allowed, short heartbeats (pingInterval
-- 300 ms, pingTimeout 200 ms), connectTimeout 1 s and the default ack
-- timeout 700 ms.  Each spec adds its SECRET.
M.SETTINGS = {
    ORIGINS = "http://good.example",
    PING_INTERVAL = 300, PING_TIMEOUT = 200, CONNECT_TIMEOUT = 1000, ACK_TIMEOUT = 700,
}

-- SETTINGS with env's entries over them.
local function settings(env)
    local all = {}
    for k, v in pairs(M.SETTINGS) do all[k] = v end
    for k, v in pairs(env or {}) do all[k] = v end
    return all
end

-- The Node reference (spec/support/app/sio_reference.js) on a free port,
-- with its sessions in the redis-server at redis_port.  Its environment:
-- PORT, REDIS_PORT and SETTINGS, env's entries (SECRET, TRANSPORTS ...)
-- overriding them.  Returns { port, pid, stop() }.
function M.start_reference(redis_port, env)
    local self = { port = proc.free_port(), log = os.tmpname() }
    env = settings(env)
    env.PORT, env.REDIS_PORT = self.port, redis_port
    local vars = {}
    for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. shq(v) end
    self.pid = tonumber((proc.sh("cd " .. shq(ROOT) .. " && " .. table.concat(vars, " ")
        .. " nohup node spec/support/app/sio_reference.js > " .. shq(self.log) .. " 2>&1 & echo $!")))
    local deadline = socket.gettime() + 15
    while socket.gettime() < deadline do
        local text = proc.read_file(self.log) or ""
        if text:match("listening %d+") then
            function self.stop()
                proc.sh("kill " .. self.pid)
                os.remove(self.log)
            end
            return self
        end
        if not proc.alive(self.pid) then error("sio_reference.js exited:\n" .. text) end
        socket.sleep(0.05)
    end
    proc.sh("kill " .. self.pid)
    error("sio_reference.js did not start:\n" .. (proc.read_file(self.log) or ""))
end

-- The gateway: nginx with opts.workers workers (and opts.log_level) on the
-- test application (spec/support/sio_app.lua), configured like the
-- reference (SETTINGS, env's entries overriding them: SECRET, ORIGINS and
-- the four timings), with the locations /socket.io/, /log and /probe, and
-- opts.http and opts.server added to its http{} and server{}; opts.configure
-- (a table of strings, numbers and booleans: more of sio_app.configure's
-- fields, e.g. emitter_key) and opts.init_worker (true: sio_app.init_worker()
-- in init_worker_by_lua, the emit/logout/emitter subscriber), opts.listen
-- (more listen parameters: "reuseport").  Each
-- worker builds its io on first use: /probe is asked 2 * workers times.
-- Returns the nginx, and why it cannot serve socket.io when it cannot (the
-- nginx is nil when it did not start).
function M.start_gateway(redis_port, env, opts)
    local workers = opts.workers or 1
    env = settings(env)
    local more = {}
    for k, v in pairs(opts.configure or {}) do
        more[#more + 1] = ("%s = %s,"):format(k, type(v) == "string" and ("%q"):format(v) or tostring(v))
    end
    table.sort(more)
    local ok, res = pcall(nginx_server.start, {
        workers = workers,
        log_level = opts.log_level,
        listen = opts.listen,
        http = ([[
    lua_shared_dict sio_log 1m;
    init_by_lua_block {
        require("support.sio_app").configure {
            redis_port = %d, secret = %q, origins = { %q },
            ping_interval = %d, ping_timeout = %d, connect_timeout = %d, ack_timeout = %d,
            %s
        }
    }
]]):format(redis_port, env.SECRET, env.ORIGINS, env.PING_INTERVAL, env.PING_TIMEOUT, env.CONNECT_TIMEOUT,
           env.ACK_TIMEOUT, table.concat(more, " "))
            .. (opts.init_worker and [[
    init_worker_by_lua_block { require("support.sio_app").init_worker() }
]] or "") .. (opts.http or ""),
        server = [[
        location /socket.io/ { content_by_lua_block { require("support.sio_app").io:serve() } }
        location = /log { content_by_lua_block { require("support.sio_app").log_handler() } }
        location = /probe { content_by_lua_block { require("support.sio_app").probe() } }
]] .. (opts.server or ""),
    })
    if not ok then
        return nil, "nginx did not start: " .. tostring(res)
    end
    for _ = 1, 2 * workers do
        local _, body = M.http_get(res.port, "/probe")
        if body ~= "ok" then
            return res, "the gateway cannot serve socket.io: " .. tostring(body)
        end
    end
    return res
end

-- Stops a gateway node; with check, then fails when its error log shows a
-- crash, a Lua error or a worker gone on a signal ("<whose> error log has
-- ...", whose "the gateway's" by default).
function M.stop_gateway(gw, check, whose)
    local log = gw:error_log()
    gw:stop()
    if check then
        for _, bad in ipairs { "%[alert%]", "%[crit%]", "%[emerg%]", "runtime error",
                               "entry thread aborted", "exited on signal" } do
            assert(not log:match(bad), (whose or "the gateway's") .. " error log has " .. bad .. ":\n" .. log)
        end
    end
end

---------------------------------------------------------------------------
-- The clients (spec/support/app/sio_client.js).

-- Runs scenarios in one node process (concurrently); returns their outcomes.
function M.run_clients(list)
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write(cjson.encode(list))
    f:close()
    local out = proc.sh("cd " .. shq(ROOT) .. " && node spec/support/app/sio_client.js < " .. shq(file))
    os.remove(file)
    local last
    for line in out:gmatch("[^\n]+") do last = line end
    local ok, res = pcall(cjson.decode, last or "")
    assert(ok and type(res) == "table", "sio_client.js said:\n" .. out)
    return denull(res)
end

-- Scenarios in a background node process, coordinated through files in
-- dir: a scenario's "mark" step writes one (path(name); wait_mark(name),
-- wait_marks(names) wait for them), its "gate" step waits for the spec to
-- create one (open_gate(name)); result() waits for the outcomes.  stop()
-- ends the process and removes dir (a /tmp/passport-* one).
function M.start_clients(dir, list)
    local self = { dir = dir }
    function self.path(name) return self.dir .. "/" .. name end
    local f = assert(io.open(self.path("in.json"), "w"))
    f:write(cjson.encode(list))
    f:close()
    self.pid = tonumber((proc.sh("cd " .. shq(ROOT) .. " && nohup node spec/support/app/sio_client.js < "
        .. shq(self.path("in.json")) .. " > " .. shq(self.path("out.json")) .. " 2> "
        .. shq(self.path("err.txt")) .. " & echo $!")))

    function self.wait_marks(names, timeout)
        local deadline = socket.gettime() + (timeout or 10)
        for _, name in ipairs(names) do
            while not proc.read_file(self.path(name)) do
                if socket.gettime() > deadline then
                    error("the clients did not reach '" .. name .. "':\n"
                          .. (proc.read_file(self.path("err.txt")) or ""))
                end
                socket.sleep(0.02)
            end
        end
    end

    function self.wait_mark(name, timeout)
        self.wait_marks({ name }, timeout)
    end

    function self.open_gate(name)
        local g = assert(io.open(self.path(name), "w"))
        g:write("go")
        g:close()
    end

    function self.result(timeout)
        local deadline = socket.gettime() + (timeout or 10)
        while socket.gettime() < deadline do
            local text = proc.read_file(self.path("out.json")) or ""
            if text:sub(-1) == "\n" then return denull(cjson.decode(text)) end
            socket.sleep(0.02)
        end
        error("the clients gave no result:\n" .. (proc.read_file(self.path("err.txt")) or ""))
    end

    function self.stop()
        if self.pid and proc.alive(self.pid) then proc.sh("kill " .. self.pid) end
        if self.dir:match("^/tmp/passport%-") then proc.sh("rm -rf " .. shq(self.dir)) end
    end

    return self
end

-- A scenario for srv: an "open" step that connects also waits for the
-- app's greeting (expect = false to not), so outcomes do not race it.
function M.scenario(srv, fields)
    fields.url = srv.url
    for _, st in ipairs(fields.steps) do
        if st.op == "open" and st.expect == nil then st.expect = "hello" end
        if st.expect == false then st.expect = nil end
    end
    return fields
end

-- The events socket s (default "main") got in a scenario's outcome, all
-- or those named name.
function M.events(out, s, name)
    local list = {}
    for _, e in ipairs(out.sockets[s or "main"].events) do
        if not name or e.event == name then list[#list + 1] = e end
    end
    return list
end

---------------------------------------------------------------------------
-- Raw HTTP and Engine.IO.

-- A plain HTTP/1.0 request to any port: status, body, headers (lower-case
-- names).  HTTP/1.0, so that neither server answers chunked.
function M.http_req(port, method, path, headers, body)
    local c = socket.tcp()
    c:settimeout(5)
    assert(c:connect("127.0.0.1", port))
    local req = { method .. " " .. path .. " HTTP/1.0\r\nHost: 127.0.0.1\r\n" }
    for k, v in pairs(headers or {}) do req[#req + 1] = k .. ": " .. v .. "\r\n" end
    if body then req[#req + 1] = "Content-Length: " .. #body .. "\r\n" end
    req[#req + 1] = "\r\n"
    req[#req + 1] = body or ""
    c:send(table.concat(req))
    local raw, _, partial = c:receive("*a")
    c:close()
    raw = raw or partial or ""
    local head, rbody = raw:match("^(.-)\r\n\r\n(.*)$")
    assert(head, "bad response: " .. raw)
    local h = {}
    for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do h[k:lower()] = v end
    return tonumber(head:match("^HTTP/%d%.%d (%d+)")), rbody, h
end

function M.http_get(port, path, headers)
    return M.http_req(port, "GET", path, headers)
end

-- A tag no other case of this run uses, for the server-side log: the
-- name and a number.
local ntag = 0
function M.tag(name)
    ntag = ntag + 1
    return name .. "-" .. ntag
end

-- The server-side log of a tag, once it has at least n entries (within 1 s).
function M.server_log(srv, t, n)
    local log
    for _ = 1, 50 do
        local _, body = M.http_get(srv.port, "/log?tag=" .. t)
        log = cjson.decode(body)
        if #log >= (n or 0) then break end
        socket.sleep(0.02)
    end
    return log
end

-- The next Engine.IO packet from a raw WebSocket client (spec/support/
-- ws_raw.lua), answering pings: the frame ({ opcode, payload }), or nil
-- and "close <code>" / "closed" / "timeout".
function M.next_frame(c, timeout)
    local deadline = socket.gettime() + (timeout or 2)
    while true do
        local left = deadline - socket.gettime()
        if left <= 0 then return nil, "timeout" end
        local f, err = c:read_frame(left)
        if not f then return nil, err end
        if f.opcode == 8 then
            local code = #f.payload >= 2 and (f.payload:byte(1) * 256 + f.payload:byte(2)) or nil
            return nil, "close " .. tostring(code)
        end
        if f.opcode == 1 and f.payload == "2" then
            c:send_frame("text", "3")
        elseif f.opcode == 1 or f.opcode == 2 then
            return f
        end
    end
end

-- Parses a Socket.IO packet in an Engine.IO message: { eio, type, att,
-- nsp, id, data } (data JSON-decoded, nil when absent); any other
-- Engine.IO packet is { eio, text }.
function M.parse(payload)
    local p = { eio = payload:sub(1, 1) }
    if p.eio ~= "4" then
        p.text = payload:sub(2)
        return p
    end
    local s = payload:sub(2)
    p.type = tonumber(s:sub(1, 1))
    local i = 2
    if p.type == 5 or p.type == 6 then
        local n, j = s:match("^(%d+)%-()", i)
        p.att, i = tonumber(n), j
    end
    if s:sub(i, i) == "/" then
        local comma = s:find(",", i, true)
        p.nsp = s:sub(i, (comma or #s + 1) - 1)
        i = comma and comma + 1 or #s + 1
    else
        p.nsp = "/"
    end
    local id, j = s:match("^(%d+)()", i)
    if id then p.id, i = tonumber(id), j end
    if i <= #s then
        local ok, v = pcall(cjson.decode, s:sub(i))
        p.data = ok and denull(v) or { unparsed = s:sub(i) }
    end
    return p
end

-- The shape of a packet for comparing two servers: random ids become their
-- type, ack ids "number".
function M.shape(p)
    local out = {}
    for k, v in pairs(p) do out[k] = v end
    if out.id then out.id = "number" end
    if type(out.data) == "table" and type(out.data.sid) == "string" then
        out.data = { sid = "string" }
    end
    return out
end

-- How many times plain (no pattern) stands in text.
function M.count(text, plain)
    local n, i = 0, 1
    while true do
        local j = text:find(plain, i, true)
        if not j then return n end
        n, i = n + 1, j + #plain
    end
end

---------------------------------------------------------------------------
-- The reference against the gateway.

-- Not compared: timing (checked where it matters, with a tolerance), how
-- many pings came or went unanswered, error descriptions, names.
local TIMING = { at = true, t = true, done_at = true, ack_at = true, pings = true,
                 pongs_dropped = true, description = true, name = true }

-- Where two values differ: a list of "path: reference | gateway" lines.
local function diff(a, b, path, out)
    out = out or {}
    path = path or ""
    if type(a) == "table" and type(b) == "table" then
        local keys = {}
        for k in pairs(a) do keys[k] = true end
        for k in pairs(b) do keys[k] = true end
        for k in pairs(keys) do diff(a[k], b[k], path .. "." .. tostring(k), out) end
    elseif a ~= b then
        local function show(v)
            return type(v) == "table" and cjson.encode(v) or tostring(v)
        end
        out[#out + 1] = path .. ": reference " .. show(a) .. " | gateway " .. show(b)
    end
    return out
end

-- The comparison over servers, the spec's table of { port, url, name } by
-- "ref" and "gw", which set() fills in its setup (gw only when the gateway
-- serves); ignore: more keys not compared, besides the timing's.
function M.comparison(servers, ignore)
    local cmp = {}
    local skip, why = {}, nil
    for k in pairs(TIMING) do skip[k] = true end
    for k in pairs(ignore or {}) do skip[k] = true end

    -- Fills servers with the reference and the gateway (unless gw_err says
    -- why it cannot serve).
    function cmp.set(ref, gw, gw_err)
        why = gw_err
        servers.ref = { port = ref.port, url = "http://127.0.0.1:" .. ref.port, name = "ref" }
        if gw and not gw_err then
            servers.gw = { port = gw.port, url = "http://127.0.0.1:" .. gw.port, name = "gw" }
        end
    end

    -- The gateway half: fails (never pends) when the gateway cannot serve.
    function cmp.need_gateway()
        assert(servers.gw, "gateway half not run: " .. tostring(why))
    end

    -- Runs make(server) for the reference and the gateway in one node
    -- process.  make returns one scenario or a list; the result is two
    -- lists (the gateway's nil when it cannot serve).
    function cmp.both(make)
        local lists, all = {}, {}
        for _, which in ipairs { "ref", "gw" } do
            local srv = servers[which]
            if srv then
                local l = make(srv)
                if l.steps then l = { l } end
                lists[which] = { first = #all + 1, n = #l }
                for _, sc in ipairs(l) do all[#all + 1] = sc end
            end
        end
        local out = M.run_clients(all)
        local res = {}
        for which, at in pairs(lists) do
            res[which] = {}
            for i = 1, at.n do res[which][i] = out[at.first + i - 1] end
        end
        return res.ref, res.gw
    end

    local function strip(v)
        if type(v) ~= "table" then return v end
        local o = {}
        for k, x in pairs(v) do
            if not skip[k] then o[k] = strip(x) end
        end
        return o
    end

    -- Where the gateway's outcomes differ from the reference's, timing aside.
    function cmp.differences(ref_out, gw_out)
        local d = diff(strip(ref_out), strip(gw_out))
        table.sort(d)
        return d
    end

    -- The gateway's outcomes must equal the reference's, timing aside.
    function cmp.agree(ref_out, gw_out)
        cmp.need_gateway()
        local d = cmp.differences(ref_out, gw_out)
        assert(#d == 0, "the gateway differs from the reference:\n" .. table.concat(d, "\n"))
    end

    -- fn(server) for the reference, then (when it serves) for the
    -- gateway: the two results must agree.
    function cmp.on_both(fn)
        local r = fn(servers.ref)
        cmp.need_gateway()
        cmp.agree(r, fn(servers.gw))
    end

    return cmp
end

return M
