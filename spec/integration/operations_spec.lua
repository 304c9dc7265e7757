-- Operating the gateway (a real nginx with 2 workers, redis-server, the
-- Express app, real socket.io-client): passport.metrics() counts exactly
-- across workers what the gateway did (handshakes by mode, outcome and
-- reason, store latency and errors, cache, sockets, emits, logout
-- closes, subscriber), its text passes promtool, a real Prometheus scrapes
-- it; passport.status() reports every worker and turns 503 when Redis is
-- gone; and the README's limit_req recipe refuses handshakes past the rate,
-- which socket.io-client sees as a connect_error and the metrics count.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local ws_raw = require "support.ws_raw"
local prometheus = require "support.prometheus"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "operations spec secret"

-- name{labels} value lines --> { [name{labels}] = value }
local function samples(text)
    local out = {}
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, 1) ~= "#" then
            local k, v = line:match("^(%S+) (%S+)$")
            if k then out[k] = tonumber(v) end
        end
    end
    return out
end

local function hs(mode, outcome, reason)
    return ('passport_handshakes_total{mode="%s",outcome="%s",reason="%s"}'):format(mode, outcome, reason)
end

-- n requests of path with headers, 40 connections at a time, each its own
-- (HTTP/1.0): reuseport spreads them over the workers.  Returns the count
-- of each status, and the pids that answered.
local function burst(nginx, path, headers, n)
    local statuses, pids = {}, {}
    local done = 0
    while done < n do
        local conns = {}
        for i = 1, math.min(40, n - done) do conns[i] = nginx:send(path, headers) end
        for _, c in ipairs(conns) do
            local st, _, h = nginx:receive(c)
            statuses[st] = (statuses[st] or 0) + 1
            if h and h["x-worker"] then pids[h["x-worker"]] = true end
        end
        done = done + #conns
    end
    return statuses, pids
end

describe("operating the gateway", function()
    local redis, app, nginx, prom
    local ann, bob, anon

    setup(function()
        redis = redis_server.start { config = { "notify-keyspace-events KA" } }
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        ann = node.login(app.port, "ann", "pw1")
        bob = node.login(app.port, "bob", "pw2")
        local _, _, h = node.request(app.port, "GET", "/visit")
        anon = h["set-cookie"]:match("^([^;]+)")
        local dead = redis_server.free_port()
        nginx = nginx_server.start {
            workers = 2,
            listen = "reuseport",
            http = ([[
    lua_shared_dict passport_metrics 1m;
    lua_shared_dict passport_eio 4m;
    # the README's recipe: new sessions only (no sid), per client address
    map $arg_sid $handshake_client { "" $binary_remote_addr; default ""; }
    limit_req_zone $handshake_client zone=handshakes:1m rate=1r/m;
    limit_conn_zone $binary_remote_addr zone=held:1m;
    init_by_lua_block {
        passport = require "resty.passport"
        store = passport.redis { port = %d, cache_ttl = 10000, cache_coherent = true }
        auth = passport.authorize { secret = %q, store = store }
        down = passport.authorize { secret = %q, store = passport.redis { port = %d, connect_timeout = 200 } }
        sio = passport.socketio { auth = auth }
        sio:of("/"):on("connection", function(s) s:emit("hello", s.user) end)
    }
    init_worker_by_lua_block {
        passport.init_metrics { dict = "passport_metrics" }
        passport.init_worker { store = store, logout = { configure = true } }
    }
]]):format(redis.port, SECRET, SECRET, dead),
            server = [[
        add_header X-Worker $pid always;
        location = /hs { access_by_lua_block { auth:access() } content_by_lua_block { ngx.print("ok") } }
        location = /hs_down { access_by_lua_block { down:access() } content_by_lua_block { ngx.print("ok") } }
        location = /ws {
            content_by_lua_block {
                local s = passport.websocket(auth)
                if not s then return end
                s:send("hello")
                while s:recv() do end
            }
        }
        location = /ws_limited {
            limit_conn held 1;
            limit_conn_status 429;
            content_by_lua_block {
                local s = passport.websocket(auth)
                if not s then return end
                s:send("hello")
                while s:recv() do end
            }
            log_by_lua_block { passport.count_rate_limited("terminate") }
        }
        location = /emit { content_by_lua_block {
            ngx.print(tostring(passport.emit { user = tonumber(ngx.var.arg_user), data = "news" }))
        } }
        location = /metrics { content_by_lua_block { passport.metrics() } }
        location = /status { content_by_lua_block { passport.status() } }
        location /socket.io/ {
            limit_req zone=handshakes burst=1 nodelay;
            limit_req_status 429;
            content_by_lua_block { sio:serve() }
            log_by_lua_block { passport.count_rate_limited("socketio") }
        }
]],
        }
    end)

    teardown(function()
        if prom then prom:stop() end
        if nginx then nginx:stop() end
        if app then app:stop() end
        if redis then redis:stop() end
    end)

    local function scrape()
        socket.sleep(0.25) -- every worker's additions flushed (0.1 s)
        local st, body, h = nginx:get("/metrics")
        assert.equal(200, st)
        assert.equal("text/plain; version=0.0.4; charset=utf-8", h["content-type"])
        return samples(body), body
    end

    it("counts every handshake exactly, across workers, by outcome and reason", function()
        local N = 300
        local st, pids = burst(nginx, "/hs", { Cookie = ann }, N)
        assert.same({ [200] = N }, st)
        local st2, pids2 = burst(nginx, "/hs", {}, N)
        assert.same({ [401] = N }, st2)
        assert.same({ [401] = N }, (burst(nginx, "/hs", { Cookie = anon }, N)))
        assert.same({ [503] = N }, (burst(nginx, "/hs_down", { Cookie = ann }, N)))
        for pid in pairs(pids2) do pids[pid] = true end
        local workers = 0
        for _ in pairs(pids) do workers = workers + 1 end
        assert.equal(2, workers, "both workers took handshakes")

        local m = scrape()
        assert.equal(N, m[hs("guard", "accepted", "none")])
        assert.equal(N, m[hs("guard", "refused", "no_session")])
        assert.equal(N, m[hs("guard", "refused", "no_passport")])
        assert.equal(N, m[hs("guard", "error", "store_error")])
        assert.equal(N, m['passport_store_errors_total{kind="connect"}'])
        -- ann's record: read once per worker, then from the cache; the
        -- anonymous one is cached too (a record, refused by policy)
        local hits = m['passport_cache_lookups_total{result="hit"}']
        local misses = m['passport_cache_lookups_total{result="miss"}']
        assert.equal(2 * N, hits + misses)
        assert.is_true(misses >= 2, "misses: " .. misses)
        local gets = m['passport_store_request_duration_seconds_count{op="get"}']
        assert.equal(misses + N, gets) -- + the N to the dead Redis
        assert.equal(gets, m['passport_store_request_duration_seconds_bucket{op="get",le="+Inf"}'])
        assert.equal(1, m['passport_cache_coherent{worker="0"}'])
        assert.equal(1, m['passport_cache_coherent{worker="1"}'])
        assert.equal(1, m['passport_subscriber_up{worker="0"}'])
        assert.equal(1, m['passport_subscriber_up{worker="1"}'])
    end)

    it("counts sockets, emits, deliveries and logout closes; promtool accepts the text", function()
        local before = scrape()
        local socks = {}
        for i, ck in ipairs { ann, ann, bob } do
            local c, st = ws_raw.connect(nginx.port, "/ws", { Cookie = ck })
            assert.equal(101, st)
            assert.equal("hello", c:read_frame(2).payload)
            socks[i] = c
        end
        local m = scrape()
        assert.equal(3, m['passport_sockets{protocol="websocket"}'])
        local _, n = nginx:get("/emit?user=1")
        assert.equal("2", n) -- two workers subscribed
        for i = 1, 2 do assert.equal("news", socks[i]:read_frame(2).payload) end
        socket.sleep(0.2)
        m = scrape()
        local function delta(k) return (m[k] or 0) - (before[k] or 0) end
        assert.equal(1, delta("passport_emits_published_total"))
        assert.equal(2, delta("passport_emits_received_total"))
        assert.equal(2, delta("passport_emit_deliveries_total"))

        -- ann logs out in the app: her two sockets close, bob's stays
        assert.equal(200, (node.request(app.port, "POST", "/logout", { headers = { Cookie = ann } })))
        for i = 1, 2 do assert.equal(4401, (socks[i]:read_close(5))) end
        socket.sleep(0.3)
        m = scrape()
        assert.equal(2, delta("passport_logout_closes_total"))
        assert.equal(1, m['passport_sockets{protocol="websocket"}'])
        assert.is_true(delta("passport_cache_invalidations_total") >= 2) -- both workers heard it
        socks[3]:close()

        local _, body = nginx:get("/metrics")
        local ok, out = prometheus.promtool_check(body)
        assert(ok, "promtool check metrics:\n" .. out .. "\n" .. body)
    end)

    it("is scraped by a real Prometheus", function()
        local m = scrape()
        prom = prometheus.start { target = "127.0.0.1:" .. nginx.port, metrics_path = "/metrics" }
        local want = m[hs("guard", "accepted", "none")]
        local result = assert(prom:wait_for(
            'passport_handshakes_total{mode="guard",outcome="accepted"}',
            function(r) return r[1] and tonumber(r[1].value[2]) == want end, 15))
        assert.equal("none", result[1].metric.reason)
        local up = assert(prom:query("sum(passport_subscriber_up)"))
        assert.equal("2", up[1].value[2])
    end)

    it("limit_req refuses handshakes past the rate: socket.io-client's connect_error, counted", function()
        local url = "http://127.0.0.1:" .. nginx.port
        local first = node.sio_connect(url, "polling", bob)
        assert.is_true(first.connected, cjson.encode(first))
        local second = node.sio_connect(url, "websocket", bob) -- the burst of 1
        assert.is_true(second.connected, cjson.encode(second))
        local third = node.sio_connect(url, "polling", bob)
        assert.is_false(third.connected)
        assert.equal("xhr poll error", third.error)
        assert.equal(429, third.status)
        local fourth = node.sio_connect(url, "websocket", bob)
        assert.is_false(fourth.connected)
        assert.equal("websocket error", fourth.error)
        socket.sleep(0.2)
        local m = scrape()
        assert.equal(2, m[hs("socketio", "refused", "rate_limited")])
        assert.equal(2, m[hs("socketio", "accepted", "none")])
    end)

    it("limit_conn bounds the sockets held per address: the next upgrade is a 429, counted", function()
        local accepted = scrape()[hs("terminate", "accepted", "none")]
        local c, st = ws_raw.connect(nginx.port, "/ws_limited", { Cookie = bob })
        assert.equal(101, st)
        assert.equal("hello", c:read_frame(2).payload)
        local c2, st2 = ws_raw.connect(nginx.port, "/ws_limited", { Cookie = bob })
        assert.is_nil(c2)
        assert.equal(429, st2)
        c:close()
        socket.sleep(0.2)
        local m = scrape()
        assert.equal(1, m[hs("terminate", "refused", "rate_limited")])
        assert.equal(accepted + 1, m[hs("terminate", "accepted", "none")])
    end)

    it("reports every worker's status, and 503 once Redis is gone", function()
        local st, body = nginx:get("/status")
        assert.equal(200, st, body)
        local s = cjson.decode(body)
        assert.is_true(s.ok)
        assert.equal(2, #s.workers)
        for _, w in ipairs(s.workers) do
            assert.equal("up", w.subscriber)
            assert.equal("coherent", w.cache)
            assert.equal("127.0.0.1:" .. redis.port, w.redis)
            assert.is_number(w.sockets)
        end
        redis:stop()
        redis = nil
        local deadline = socket.gettime() + 5
        repeat
            socket.sleep(0.2)
            st, body = nginx:get("/status")
        until st == 503 or socket.gettime() > deadline
        assert.equal(503, st, body)
        s = cjson.decode(body)
        assert.is_false(s.ok)
        local m = scrape()
        assert.equal(0, m['passport_cache_coherent{worker="0"}'] + m['passport_cache_coherent{worker="1"}'])
        assert.is_true(m["passport_subscriber_reconnects_total"] >= 2)
    end)
end)
