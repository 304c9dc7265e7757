-- Two gateway nodes behind a load balancer, with the README's nginx
-- configuration: a request that carries a sid goes to the node the sid
-- names (map $arg_sid), the rest to any node.  Real socket.io-client 4.8
-- clients with their default options (polling, then the upgrade) and
-- polling-only ones connect through it; none may meet "Session ID
-- unknown".  The same clients through a plain round-robin balancer (no
-- map) do meet it: the map is what makes the difference.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"
local sio = require "support.sio_specs"
local cookie = require "resty.passport.cookie"
local cjson = require "cjson"

local SECRET = "nodes spec secret"
local count = sio.count

local function gateway(redis_port, node)
    return nginx_server.start {
        workers = 2,
        http = ([[
    lua_shared_dict sio_log 1m;
    lua_shared_dict passport_eio 10m;
    init_by_lua_block {
        require("support.sio_app").configure {
            redis_port = %d, secret = %q, node = %q,
            -- a lenient heartbeat: nothing here is about it, and a busy
            -- machine must not close sessions on a late pong
            ping_interval = 1000, ping_timeout = 3000, connect_timeout = 3000, ack_timeout = 700,
        }
    }
]]):format(redis_port, SECRET, node),
        server = [[
        location /socket.io/ { content_by_lua_block { require("support.sio_app").io:serve() } }
        location = /who { content_by_lua_block { require("support.sio_app").who_handler() } }
]],
    }
end

-- The load balancer: with route_by_sid, the README's map; else round robin.
local function balancer(a, b, route_by_sid)
    local map = route_by_sid and ([[
    map $arg_sid $sio_node {
        default  gateways;
        ~^a\.    127.0.0.1:%d;
        ~^b\.    127.0.0.1:%d;
    }
]]):format(a.port, b.port) or [[
    map $arg_sid $sio_node { default gateways; }
]]
    return nginx_server.start {
        http = map .. ([[
    map $http_upgrade $connection_upgrade { default upgrade; "" ""; }
    upstream gateways { server 127.0.0.1:%d; server 127.0.0.1:%d; }
]]):format(a.port, b.port),
        server = [[
        location /socket.io/ {
            proxy_pass http://$sio_node;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 60s;
        }
]],
    }
end

describe("two gateway nodes behind a load balancer (polling)", function()
    local redis, a, b
    local ck

    setup(function()
        redis = redis_server.start {}
        assert(redis:seed_connect_redis("sid-ann", "1"))
        ck = "connect.sid=" .. cookie.sign("sid-ann", SECRET)
        a = gateway(redis.port, "a")
        b = gateway(redis.port, "b")
    end)

    teardown(function()
        for _, g in ipairs { a, b } do
            if g then
                g:assert_clean_log()
                g:stop()
            end
        end
        if redis then redis:stop() end
    end)

    -- n clients through lb: half with the client's defaults, half polling
    -- only; each connects, is greeted, gets an ack, then waits for the
    -- gate so that the spec can count them on each node.
    local function scenarios(lb, n, gate)
        local list = {}
        for i = 1, n do
            list[i] = {
                name = "c" .. i,
                url = "http://127.0.0.1:" .. lb.port,
                cookie = ck,
                transports = i % 2 == 0 and { "polling" } or { "polling", "websocket" },
                steps = {
                    { op = "open", expect = "hello", timeout = 5000 },
                    { op = "emit", event = "echo", args = { i }, ack = true, timeout = 3000 },
                    { op = "sleep", ms = 400 },
                    { op = "emit", event = "echo", args = { "after " .. i }, ack = true, timeout = 3000 },
                    gate and { op = "gate", file = gate, timeout = 15000 } or { op = "sleep", ms = 1 },
                },
            }
        end
        return list
    end

    -- the sockets a node holds: each worker answers /who for itself, so
    -- ask until both have answered
    local function held_on(g)
        local by_pid = {}
        for _ = 1, 40 do
            local st, body = g:get("/who")
            assert.equal(200, st)
            local w = cjson.decode(body)
            by_pid[w.pid] = w.all
        end
        local total = 0
        for _, n in pairs(by_pid) do total = total + n end
        return total
    end

    it("routes every request of a session to its node: no Session ID unknown", function()
        local lb = balancer(a, b, true)
        -- the clients run in the background: held at the gate, counted on
        -- each node, released
        local dir = redis_server.tmpdir("sionodes")
        local clients = sio.start_clients(dir, scenarios(lb, 40, dir .. "/gate"))
        local deadline = os.time() + 20
        local on_a, on_b = 0, 0
        while os.time() < deadline do
            on_a, on_b = held_on(a), held_on(b)
            if on_a + on_b >= 40 then break end
            proc.sh("sleep 0.2")
        end
        -- counted while every client is connected and has echoed twice;
        -- once they close, a GET already on its way after the client's own
        -- close packet is refused, by engine.io as here (the client ignores it)
        local unknown = {}
        for _, g in ipairs { a, b } do unknown[#unknown + 1] = count(g:error_log(), "Session ID unknown") end
        clients.open_gate("gate")
        local results = clients.result(30)
        clients.stop()
        lb:stop()

        assert.equal(40, on_a + on_b)
        -- round robin over two nodes: both hold some
        assert.is_true(on_a > 0 and on_b > 0, ("a %d, b %d"):format(on_a, on_b))
        for i, r in ipairs(results) do
            local s = r.sockets.main
            local what = cjson.encode(r)
            assert.is_nil(r.error, what)
            assert.equal(1, s.connects, what)
            assert.same({ i }, r.steps[2].ack, what)
            assert.same({ "after " .. i }, r.steps[4].ack, what)
            assert.same({}, r.engine.closes, what)
            assert.equal(i % 2 == 0 and "polling" or "websocket", r.engine.transport, what)
        end
        assert.same({ 0, 0 }, unknown)
    end)

    it("without the map, polling requests land on the other node and are refused", function()
        local lb = balancer(a, b, false)
        local before = count(a:error_log(), "Session ID unknown") + count(b:error_log(), "Session ID unknown")
        local results = sio.run_clients(scenarios(lb, 10))
        lb:stop()
        local after = count(a:error_log(), "Session ID unknown") + count(b:error_log(), "Session ID unknown")
        assert.is_true(after > before, "no refusal without the map")
        local troubled = 0
        for _, r in ipairs(results) do
            if r.sockets.main.connects ~= 1 or #r.engine.closes > 0 or r.steps[2].ack == nil then
                troubled = troubled + 1
            end
        end
        assert.is_true(troubled > 0)
    end)
end)
