-- bench/loadgen.c, the WebSocket load generator of bench-e2e, against a
-- real redis-server, an nginx guard (auth:access()) in front of the trivial
-- nginx WebSocket upstream, and the Node socket.io app: its counts must be
-- exactly what was sent, and failures must end the run, not hang it.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local proc = require "support.proc"
local cookie = require "resty.passport.cookie"
local cjson = require "cjson"
local socket = require "socket"

local ROOT = nginx_server.root
local LOADGEN = ROOT .. "/build/bench/loadgen"
local SECRET = "loadgen spec secret"
local RECORD = '{"cookie":{"originalMaxAge":3600000,"expires":"2030-01-01T00:00:00.000Z",'
    .. '"httpOnly":true,"path":"/"},"passport":{"user":%d}}'

local function write(path, lines)
    local f = assert(io.open(path, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
end

-- Runs the load generator; returns its JSON lines (the last is "done").
local function loadgen(args)
    local t0 = socket.gettime()
    local out = proc.sh(LOADGEN .. " " .. args)
    local lines = {}
    for l in out:gmatch("[^\n]+") do
        local okj, v = pcall(cjson.decode, l)
        if okj and type(v) == "table" then lines[#lines + 1] = v end
    end
    assert(#lines > 0 and lines[#lines].event == "done", "loadgen said: " .. out)
    return lines[#lines], lines, socket.gettime() - t0
end

describe("bench/loadgen", function()
    local redis, upstream, gateway, app, dir
    local good, forged, mixed

    setup(function()
        local out, built = proc.sh("cd " .. ROOT .. " && make -s build/bench/loadgen")
        assert(built, out)
        dir = redis_server.tmpdir("loadgen")
        redis = redis_server.start {}
        local goods, bads, mix = {}, {}, {}
        for i = 1, 20 do
            local sid = ("loadgen-sid-%04d-abcdefghijklmnop"):format(i)
            redis:call("SET", "sess:" .. sid, RECORD:format(i), "EX", "3600")
            local c = "theme=dark; connect.sid=" .. cookie.sign(sid, SECRET):gsub(":", "%%3A")
            -- forged: the same sid signed with another secret
            local f = "connect.sid=" .. cookie.sign(sid, "not the secret"):gsub(":", "%%3A")
            goods[#goods + 1], bads[#bads + 1] = c, f
            mix[#mix + 1] = i % 2 == 1 and c or f
        end
        good, forged, mixed = dir .. "/good.txt", dir .. "/forged.txt", dir .. "/mixed.txt"
        write(good, goods)
        write(forged, bads)
        write(mixed, mix)
        upstream = nginx_server.start {
            server = ("location / { content_by_lua_file %s/bench/e2e/ws_upstream.lua; }"):format(ROOT),
        }
        gateway = nginx_server.start {
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = %q, store = passport.redis { port = %d } }
    }
    upstream ws { server 127.0.0.1:%d; }
]]):format(SECRET, redis.port, upstream.port),
            server = [[
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        location /ws { access_by_lua_block { auth:access() } proxy_pass http://ws; }
        location /open { proxy_pass http://ws; }
        location /plain { return 200 "no upgrade here"; }
]],
        }
    end)

    teardown(function()
        if gateway then gateway:stop() end
        if upstream then upstream:stop() end
        if app then app:stop() end
        if redis then redis:stop() end
        if dir then os.execute("rm -rf " .. dir) end
    end)

    it("counts every authorized handshake in connect-rate mode (-n)", function()
        local r = loadgen(("-p %d -f %s -m connect -c 8 -n 300 -P /ws"):format(gateway.port, good))
        assert.same({ 300, 300, 0, 0 }, { r.started, r.ok, r.rejected, r.errors })
        assert.is_true(r.p50_ms > 0 and r.p50_ms <= r.p99_ms and r.p99_ms <= r.max_ms)
        assert.is_true(r.conn_per_s > 0 and r.cpu_s >= 0)
    end)

    it("runs connect-rate for a duration (-d)", function()
        local r, _, took = loadgen(("-p %d -f %s -m connect -c 8 -d 1 -P /ws"):format(gateway.port, good))
        assert.is_true(r.ok > 50, "ok " .. r.ok)
        assert.same({ 0, 0 }, { r.rejected, r.errors })
        assert.equal(r.started, r.ok)
        assert.is_true(took < 4, "took " .. took)
    end)

    it("counts 401s in rejected-rate mode, and splits a mixed file exactly", function()
        local r = loadgen(("-p %d -f %s -m reject -c 8 -d 1 -P /ws"):format(gateway.port, forged))
        assert.is_true(r.rejected > 50, "rejected " .. r.rejected)
        assert.same({ 0, 0, r.rejected }, { r.ok, r.errors, r.rejected_http })
        assert.is_true(r.rejected_per_s > 0)
        r = loadgen(("-p %d -f %s -m connect -c 1 -n 100 -P /ws"):format(gateway.port, mixed))
        assert.same({ 50, 50, 0 }, { r.ok, r.rejected, r.errors })
    end)

    it("holds N connections, then closes them on its time limit", function()
        local r, lines = loadgen(("-p %d -f %s -m hold -N 200 -c 50 -t 1 -P /ws"):format(gateway.port, good))
        assert.equal("up", lines[1].event)
        assert.equal(200, lines[1].held)
        assert.same({ 200, 0, 0 }, { r.held, r.dropped, r.errors })
    end)

    it("reports refused connections and timeouts without hanging", function()
        local closed = nginx_server.free_port()
        local r, _, took = loadgen(("-p %d -f %s -m connect -c 4 -n 20"):format(closed, good))
        assert.same({ 0, 20, 20 }, { r.ok, r.errors, r.err_refused })
        assert.is_true(took < 3, "took " .. took)
        -- a listener that never accepts: the kernel completes the TCP
        -- handshake, nobody answers the upgrade
        local mute = assert(socket.bind("127.0.0.1", 0))
        local _, mport = mute:getsockname()
        r, _, took = loadgen(("-p %d -f %s -m connect -c 3 -n 3 -T 300"):format(mport, good))
        mute:close()
        assert.same({ 0, 3, 3 }, { r.ok, r.errors, r.err_timeout })
        assert.is_true(took < 3, "took " .. took)
        -- the upgrade answered 200 without upgrading: an HTTP error, not a hang
        r = loadgen(("-p %d -f %s -m connect -c 2 -n 4 -P /plain"):format(gateway.port, good))
        assert.same({ 0, 4, 4 }, { r.ok, r.errors, r.err_http_status })
    end)

    it("completes socket.io handshakes (EIO=4 websocket, 40, 40 ack, 42 event)", function()
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        local c = node.login(app.port, "ann", "pw1")
        write(dir .. "/sio.txt", { c })
        local r = loadgen(("-p %d -f %s -m connect -s -c 4 -n 40"):format(app.port, dir .. "/sio.txt"))
        assert.same({ 40, 0, 0 }, { r.ok, r.rejected, r.errors })
        local _, lines = loadgen(("-p %d -f %s -m hold -s -N 20 -t 0.5"):format(app.port, dir .. "/sio.txt"))
        assert.equal(20, lines[1].held)
    end)
end)
