-- Prometheus metrics (resty.passport.metrics) inside a real nginx: counts
-- kept in a lua_shared_dict add up exactly across two workers, the text
-- passes promtool, a real Prometheus scrapes it and reads the same values
-- back, and an unconfigured module counts nothing and serves 503.
local socket = require "socket"
local cjson = require "cjson"
local nginx_server = require "support.nginx_server"
local prometheus = require "support.prometheus"
local metrics = require "resty.passport.metrics"

local now = socket.gettime

-- Three label sets of passport_handshakes_total, and durations that fall
-- in the 0.0005, 0.005, 0.25 and +Inf buckets.
local COMBOS = {
    { mode = "socketio", outcome = "accepted", reason = "none" },
    { mode = "guard", outcome = "refused", reason = "bad_cookie" },
    { mode = "terminate", outcome = "error", reason = "store_timeout" },
}
local DURATIONS = { 0.0001, 0.003, 0.2, 2 }
local REQUESTS, CONCURRENCY = 2000, 20

local HTTP = [[
    lua_shared_dict passport_metrics 1m;
    init_by_lua_block {
        -- keys are built before configure(): they need no dict
        METRICS = require "resty.passport.metrics"
        KEYS = {}
        HIST = METRICS.histogram_key("passport_store_request_duration_seconds", { op = "get" })
    }
    init_worker_by_lua_block {
        require("resty.passport.metrics").configure { dict = "passport_metrics" }
    }
]]

local SERVER = [[
        location = /count {
            content_by_lua_block {
                local a = ngx.req.get_uri_args()
                local id = a.mode .. " " .. a.outcome .. " " .. a.reason
                local k = KEYS[id]
                if not k then
                    k = METRICS.key("passport_handshakes_total",
                                    { mode = a.mode, outcome = a.outcome, reason = a.reason })
                    KEYS[id] = k
                end
                assert(METRICS.add(k))
                assert(METRICS.observe(HIST, tonumber(a.d)))
                ngx.header["X-Worker"] = ngx.worker.id()
                ngx.say(k)
            }
        }
        location = /fill {
            content_by_lua_block {
                local m = METRICS
                local w = ngx.worker.id()
                assert(m.set_gauge(m.key("passport_cache_coherent", { worker = w }), 1))
                assert(m.set_gauge(m.key("passport_subscriber_up", { worker = w }), 0))
                local sockets = m.gauge("passport_sockets")
                assert(sockets:add({ protocol = "websocket" }, 3))
                assert(sockets:add({ protocol = "websocket" }, -1))
                assert(sockets:set({ protocol = "engineio" }, 0))
                assert(m.counter("passport_cache_invalidations_total"):inc())
                assert(m.counter("passport_emit_drops_total"):inc({ reason = 'quo"te\\back\nline' }))
                assert(m.counter("passport_redis_discoveries_total"):inc({ mode = "sentinel", outcome = "ok" }, 2))
                assert(m.add(m.key("passport_emits_published_total"), 5))
                ngx.say("filled by ", w)
            }
        }
        location = /metrics {
            content_by_lua_block { require("resty.passport.metrics").serve() }
        }
]]

-- The samples of an exposition text: sample text (name{labels}) -> number.
local function samples(text)
    local out = {}
    for line in text:gmatch("[^\n]+") do
        if line:sub(1, 1) ~= "#" then
            local k, v = line:match("^(.-) (%S+)$")
            assert(k, "bad sample line: " .. line)
            out[k] = tonumber(v)
        end
    end
    return out
end

local function handshake_key(c)
    return ('passport_handshakes_total{mode="%s",outcome="%s",reason="%s"}')
        :format(c.mode, c.outcome, c.reason)
end

-- Stops nginx first (a failed assertion must not leave it running), then
-- checks its log, kept until read.
local function stop_clean(nginx)
    if not nginx then return end
    nginx:stop(true) -- keeps the prefix: the log is read below
    local ok, err = pcall(nginx.assert_clean_log, nginx)
    nginx:stop()     -- no pid left: removes the prefix
    assert(ok, err)
end

-- The error a call raised (it must raise).
local function raised(fn)
    local ok, err = pcall(fn)
    assert.is_false(ok)
    return tostring(err)
end

describe("metrics inside nginx (2 workers, configured in init_worker)", function()
    local nginx, prom
    local text -- the last /metrics body

    setup(function()
        nginx = nginx_server.start { workers = 2, listen = "reuseport", http = HTTP, server = SERVER }
    end)

    teardown(function()
        if prom then prom:stop() end
        stop_clean(nginx)
    end)

    it("counts exactly under concurrency, every worker adding to the same samples", function()
        local t0 = now()
        local per_worker, expect, by_d = {}, {}, {}
        local i = 0
        while i < REQUESTS do
            local conns = {}
            for j = 1, math.min(CONCURRENCY, REQUESTS - i) do
                i = i + 1
                local c = COMBOS[i % #COMBOS + 1]
                local d = DURATIONS[i % #DURATIONS + 1]
                local key = handshake_key(c)
                expect[key] = (expect[key] or 0) + 1
                by_d[d] = (by_d[d] or 0) + 1
                conns[j] = nginx:send(("/count?mode=%s&outcome=%s&reason=%s&d=%s")
                                      :format(c.mode, c.outcome, c.reason, d))
            end
            for j = 1, #conns do
                local status, body, headers = nginx:receive(conns[j])
                assert.equal(200, status, body)
                local w = headers["x-worker"]
                per_worker[w] = (per_worker[w] or 0) + 1
            end
        end
        assert.truthy(per_worker["0"] and per_worker["1"],
                      "both workers served: " .. cjson.encode(per_worker))

        -- each worker's additions reach the dict within 0.1 s (its flush)
        socket.sleep(0.3)
        local status, body = nginx:get("/metrics")
        assert.equal(200, status)
        text = body
        local s = samples(body)
        local total = 0
        for key, n in pairs(expect) do
            assert.equal(n, s[key], key)
            total = total + s[key]
        end
        assert.equal(REQUESTS, total)

        -- histogram: cumulative buckets, _count = +Inf bucket, _sum
        local H = "passport_store_request_duration_seconds"
        local function bucket(le) return s[H .. '_bucket{op="get",le="' .. le .. '"}'] end
        local fast, mid, slow, over = by_d[0.0001], by_d[0.003], by_d[0.2], by_d[2]
        assert.equal(fast, bucket("0.0005"))
        assert.equal(fast, bucket("0.0025"))
        assert.equal(fast + mid, bucket("0.005"))
        assert.equal(fast + mid, bucket("0.1"))
        assert.equal(fast + mid + slow, bucket("0.25"))
        assert.equal(fast + mid + slow, bucket("1"))
        assert.equal(REQUESTS, bucket("+Inf"))
        assert.equal(REQUESTS, s[H .. '_count{op="get"}'])
        local sum = fast * 0.0001 + mid * 0.003 + slow * 0.2 + over * 2
        assert.near(sum, s[H .. '_sum{op="get"}'], 1e-6)
        assert(now() - t0 < 10, "took " .. (now() - t0) .. " s")
    end)

    it("renders text that promtool accepts: gauges, histograms, escaped label values", function()
        local status, body = nginx:get("/fill")
        assert.equal(200, status, body)
        -- /metrics may land on the other worker: the filling worker's
        -- additions reach the dict within 0.1 s (its flush)
        socket.sleep(0.3)
        local headers
        status, body, headers = nginx:get("/metrics")
        assert.equal(200, status)
        assert.equal("text/plain; version=0.0.4; charset=utf-8", headers["content-type"])
        text = body

        local ok, out = prometheus.promtool_check(body)
        assert(ok, "promtool check metrics:\n" .. out .. "\n" .. body)

        -- every defined metric has its HELP and TYPE, in definition order
        local last = 0
        for _, def in ipairs(metrics.DEFINITIONS) do
            local help = body:find("# HELP " .. def.name .. " ", 1, true)
            local at = body:find("# TYPE " .. def.name .. " " .. def.type .. "\n", 1, true)
            assert(help and at and help < at, "no HELP or TYPE for " .. def.name)
            assert(help > last, def.name .. " out of order")
            last = at
        end
        -- no sample yet: HELP and TYPE only
        assert.matches("# TYPE passport_redis_redirects_total counter\n# HELP passport_metrics_errors_total",
                       body, 1, true)

        local s = samples(body)
        local w = body:match('passport_cache_coherent{worker="(%d)"}')
        assert.truthy(w)
        assert.equal(1, s['passport_cache_coherent{worker="' .. w .. '"}'])
        assert.equal(0, s['passport_subscriber_up{worker="' .. w .. '"}'])
        assert.equal(2, s['passport_sockets{protocol="websocket"}'])
        assert.equal(0, s['passport_sockets{protocol="engineio"}'])
        assert.equal(1, s["passport_cache_invalidations_total"])
        assert.equal(2, s['passport_redis_discoveries_total{mode="sentinel",outcome="ok"}'])
        assert.equal(5, s["passport_emits_published_total"])
        assert.equal(1, s['passport_emit_drops_total{reason="quo\\"te\\\\back\\nline"}'])
        -- the workers' loss counters, reserved by configure()
        assert.equal(0, s['passport_metrics_errors_total{worker="0"}'])
        assert.equal(0, s['passport_metrics_errors_total{worker="1"}'])
    end)

    it("is scraped by a real Prometheus, which reads back the same values", function()
        local rendered = samples(text)
        prom = prometheus.start { target = "127.0.0.1:" .. nginx.port, metrics_path = "/metrics" }

        local result = assert(prom:wait_for("passport_handshakes_total", function(r)
            return #r == #COMBOS
        end, 15))
        for _, r in ipairs(result) do
            local m = r.metric
            assert.equal("passport", m.job)
            local key = handshake_key(m)
            assert.equal(rendered[key], tonumber(r.value[2]), key)
        end

        local count = assert(prom:query('passport_store_request_duration_seconds_count{op="get"}'))
        assert.equal(REQUESTS, tonumber(count[1].value[2]))
        local inf = assert(prom:query('passport_store_request_duration_seconds_bucket{le="+Inf"}'))
        assert.equal(REQUESTS, tonumber(inf[1].value[2]))

        -- the escaped label value arrives unescaped
        local drops = assert(prom:query("passport_emit_drops_total"))
        assert.equal(1, #drops)
        assert.equal('quo"te\\back\nline', drops[1].metric.reason)

        local targets = assert(prom:targets())
        assert.equal(1, #targets)
        assert.equal("up", targets[1].health, targets[1].lastError)
        assert.equal("", targets[1].lastError)

        local dir = prom.dir
        prom:stop()
        prom = nil
        assert.is_nil(io.open(dir .. "/prometheus.yml"))
    end)
end)

describe("metrics not configured", function()
    local nginx

    setup(function()
        nginx = nginx_server.start {
            http = "    lua_shared_dict passport_metrics 1m;\n",
            server = [[
        location = /count {
            content_by_lua_block {
                local m = require "resty.passport.metrics"
                local k = m.key("passport_handshakes_total", { mode = "guard", outcome = "accepted", reason = "none" })
                local h = m.histogram_key("passport_store_request_duration_seconds", { op = "get" })
                local function nothing(...) return select("#", ...) == 0 end
                local all = nothing(m.add(k)) and nothing(m.observe(h, 0.1))
                    and nothing(m.set_gauge(m.key("passport_sockets", { protocol = "websocket" }), 1))
                    and nothing(m.counter("passport_cache_invalidations_total"):inc())
                    and nothing(m.gauge("passport_sockets"):add({ protocol = "websocket" }, 1))
                ngx.say(tostring(m.enabled()), " ", tostring(all), " ", #ngx.shared.passport_metrics:get_keys(0))
            }
        }
        location = /configure_missing {
            content_by_lua_block {
                local m = require "resty.passport.metrics"
                local ok, err = pcall(function() m.configure { dict = "missing" } end)
                ngx.say(tostring(ok), "|", err, "|", tostring(m.enabled()))
            }
        }
        location = /metrics {
            content_by_lua_block { require("resty.passport.metrics").serve() }
        }
]],
        }
    end)

    teardown(function()
        stop_clean(nginx)
    end)

    it("counts nothing, and serve() answers 503", function()
        local status, body = nginx:get("/count")
        assert.equal(200, status, body)
        assert.equal("false true 0\n", body)
        status, body = nginx:get("/metrics")
        assert.equal(503, status)
        assert.matches("^passport metrics: not configured[^\n]*\n$", body)
    end)

    it("raises at the caller when the dict is not in nginx.conf, and stays off", function()
        local status, body = nginx:get("/configure_missing")
        assert.equal(200, status, body)
        assert.matches("^false|content_by_lua%(nginx%.conf:%d+%):%d+: bad argument #1 to 'configure' "
                       .. "%(no lua_shared_dict missing in nginx%.conf[^|]*|false\n$", body)
        assert.equal(503, (nginx:get("/metrics")))
    end)

    it("raises on misuse, at the caller, with what is wrong (plain LuaJIT)", function()
        local here = "metrics_spec%.lua:%d+: bad argument "
        assert.matches(here .. "#1 to 'key' %(no metric named passport_nope%)",
                       raised(function() metrics.key("passport_nope") end))
        assert.matches(here .. "#2 to 'key' %(unknown label mod for passport_handshakes_total "
                       .. "%(labels: mode, outcome, reason%)%)",
                       raised(function()
                           metrics.key("passport_handshakes_total", { mod = "guard", outcome = "x", reason = "y" })
                       end))
        assert.matches(here .. "#2 to 'key' %(missing label reason for passport_handshakes_total",
                       raised(function()
                           metrics.key("passport_handshakes_total", { mode = "guard", outcome = "x" })
                       end))
        assert.matches(here .. "#2 to 'key' %(passport_sockets needs labels protocol%)",
                       raised(function() metrics.key("passport_sockets") end))
        assert.matches(here .. "#2 to 'key' %(unknown label worker for passport_logout_closes_total %(no labels%)%)",
                       raised(function() metrics.key("passport_logout_closes_total", { worker = 1 }) end))
        assert.matches(here .. "#2 to 'key' %(label kind of passport_store_errors_total needs a string or number",
                       raised(function() metrics.key("passport_store_errors_total", { kind = true }) end))
        assert.matches(here .. "#1 to 'key' %(passport_store_request_duration_seconds is a histogram: "
                       .. "use histogram_key%)",
                       raised(function() metrics.key("passport_store_request_duration_seconds", { op = "get" }) end))
        assert.matches(here .. "#1 to 'histogram_key' %(passport_handshakes_total is a counter, not a histogram%)",
                       raised(function() metrics.histogram_key("passport_handshakes_total", {}) end))
        assert.matches(here .. "#1 to 'counter' %(passport_sockets is a gauge, not a counter%)",
                       raised(function() metrics.counter("passport_sockets") end))
        assert.matches(here .. "#1 to 'gauge' %(passport_handshakes_total is a counter, not a gauge%)",
                       raised(function() metrics.gauge("passport_handshakes_total") end))
        assert.matches(here .. "#1 to 'configure' %(table expected, got string%)",
                       raised(function() metrics.configure("passport_metrics") end))
        assert.matches(here .. "#1 to 'configure' %(no lua_shared_dict outside nginx%)",
                       raised(function() metrics.configure { dict = "passport_metrics" } end))
        -- off: counting is a no-op, misuse of a convenience call included
        assert.is_false(metrics.enabled())
        assert.is_nil(metrics.add("anything"))
        assert.is_nil(metrics.counter("passport_logout_closes_total"):inc(nil, -1))
        assert.is_nil(metrics.render())
        -- keys are the sample text, values escaped
        assert.equal('passport_emit_drops_total{reason="a\\\\b\\"c\\nd"}',
                     metrics.key("passport_emit_drops_total", { reason = 'a\\b"c\nd' }))
        assert.equal('passport_cache_coherent{worker="3"}', metrics.key("passport_cache_coherent", { worker = 3 }))
    end)
end)

describe("metrics with a full dict (configured in init_by_lua)", function()
    local nginx

    setup(function()
        nginx = nginx_server.start {
            workers = 2,
            listen = "reuseport",
            http = [[
    lua_shared_dict passport_metrics 32k;
    init_by_lua_block {
        METRICS = require "resty.passport.metrics"
        METRICS.configure { dict = "passport_metrics" }
        KEY = METRICS.key("passport_handshakes_total", { mode = "engineio", outcome = "accepted", reason = "none" })
    }
]],
            server = [[
        location = /count {
            content_by_lua_block {
                assert(METRICS.add(KEY))
                ngx.header["X-Worker"] = ngx.worker.id()
            }
        }
        location = /flood {
            content_by_lua_block {
                local lost, why = 0
                for i = 1, 1000 do
                    local k = METRICS.key("passport_emit_drops_total", { reason = "r" .. i })
                    local ok, err = METRICS.add(k)
                    if not ok then lost, why = lost + 1, err end
                end
                ngx.header["X-Worker"] = ngx.worker.id()
                ngx.header["X-Lost"] = lost
                ngx.say(why)
            }
        }
        location = /metrics {
            content_by_lua_block { require("resty.passport.metrics").serve() }
        }
]],
        }
    end)

    teardown(function()
        stop_clean(nginx)
    end)

    local function scrape()
        local status, body = nginx:get("/metrics")
        assert.equal(200, status, body)
        return samples(body), body
    end

    it("loses only new samples, evicts none, and counts the losses once per worker", function()
        local KEY = handshake_key { mode = "engineio", outcome = "accepted", reason = "none" }
        local seen = {}
        for _ = 1, 100 do
            local status, _, headers = nginx:get("/count")
            assert.equal(200, status)
            seen[headers["x-worker"]] = true
        end
        assert.truthy(seen["0"] and seen["1"], "both workers counted")
        assert.equal(100, scrape()[KEY])

        local status, body, headers = nginx:get("/flood")
        assert.equal(200, status, body)
        assert.equal("no memory\n", body)
        local lost, w = tonumber(headers["x-lost"]), headers["x-worker"]
        assert(lost > 0 and lost < 1000, lost)

        -- the old counter was neither evicted nor reset, and still counts
        for _ = 1, 10 do
            assert.equal(200, (nginx:get("/count")))
        end
        local s, text = scrape()
        assert.equal(110, s[KEY])
        local drops = 0
        for k, v in pairs(s) do
            if k:find("^passport_emit_drops_total") then drops = drops + v end
        end
        assert.equal(1000 - lost, drops)
        assert.equal(lost, s['passport_metrics_errors_total{worker="' .. w .. '"}'])
        assert.equal(0, s['passport_metrics_errors_total{worker="' .. (w == "0" and 1 or 0) .. '"}'])
        local ok, out = prometheus.promtool_check(text)
        assert(ok, out)

        local _, logged = nginx:error_log():gsub("passport: metrics: cannot update", "")
        assert.equal(1, logged)
    end)
end)
