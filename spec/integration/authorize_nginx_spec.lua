-- auth:access() in a real nginx, in front of a real socket.io 4 server, with
-- sessions made by a real Express app (express-session + connect-redis +
-- passport-local) in a real redis-server.  Every verdict is compared with
-- what the Express app itself says about the same cookie.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local cjson = require "cjson"

local SECRET = "keyboard cat"

describe("auth:access() in nginx", function()
    local redis, app, nginx

    setup(function()
        redis = redis_server.start {}
        app = node.start_app { REDIS_PORT = redis.port, SECRET = SECRET }
        local closed = nginx_server.free_port()
        nginx = nginx_server.start {
            workers = 2,
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        local store = passport.redis { port = %d }
        local secret = %q
        auth = passport.authorize { secret = secret, store = store,
                                    origins = { "http://good.example" } }
        auth_timeout = passport.authorize { secret = secret, store = store,
                                            accept_timeout = 0.3,
                                            success = function() end }
        auth_deferred = passport.authorize { secret = secret, store = store,
            success = function(_, accept)
                ngx.timer.at(0.5, function() accept(nil, true) end)
            end }
        auth_down = passport.authorize { secret = secret,
            store = passport.redis { port = %d, connect_timeout = 200 } }
    }
    upstream app { server 127.0.0.1:%d; }
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }
]]):format(redis.port, SECRET, closed, app.port),
            server = [[
        location /socket.io/ {
            access_by_lua_block { auth:access() }
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }
        location = /headers {
            access_by_lua_block { auth:access() }
            proxy_pass http://app;
        }
        location = /timeout { access_by_lua_block { auth_timeout:access() } content_by_lua_block { ngx.print("in") } }
        location = /deferred { access_by_lua_block { auth_deferred:access() } content_by_lua_block { ngx.print("in") } }
        location = /down { access_by_lua_block { auth_down:access() } content_by_lua_block { ngx.print("in") } }
        location = /ctx {
            access_by_lua_block { auth:access() }
            content_by_lua_block {
                local d = ngx.ctx.passport
                ngx.say(require("cjson").encode({ id = d.user.value, sid = d.session_id }))
            }
        }
]],
        }
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if app then app:stop() end
        if redis then redis:stop() end
    end)

    local function express_says(cookie)
        local _, who = node.request(app.port, "GET", "/whoami", { headers = { cookie = cookie } })
        return who.logged_in, who
    end

    local function gateway(cookie, transport, origin)
        return node.sio_connect("http://127.0.0.1:" .. nginx.port, transport or "websocket",
                                cookie, origin)
    end

    local function tamper(cookie)
        local last = cookie:sub(-1)
        return cookie:sub(1, -2) .. (last == "A" and "B" or "A")
    end

    it("lets a logged-in user through, over websocket and polling, as the app sees it", function()
        local cookie = node.login(app.port, "ann", "pw1")
        assert.is_true(express_says(cookie))
        for _, transport in ipairs { "websocket", "polling" } do
            local r = gateway(cookie, transport)
            assert.is_true(r.connected, transport .. ": " .. cjson.encode(r))
            assert.equal("true", r.hello.logged_in)
            assert.same({ value = 1, logged_in = true }, cjson.decode(r.hello.user))
        end
    end)

    it("lets user id 0 through, like passport", function()
        local cookie = node.login(app.port, "zero", "pw0")
        assert.is_true(express_says(cookie))
        assert.is_true(gateway(cookie).connected)
    end)

    it("rejects what the app rejects: no cookie, tampered, anonymous, logged out", function()
        local cases = {}
        cases[#cases + 1] = { "no cookie", nil, 401, "No session found" }
        local good = node.login(app.port, "bob", "pw2")
        cases[#cases + 1] = { "tampered", tamper(good), 401, "No session found" }
        local _, _, h = node.request(app.port, "GET", "/visit")
        cases[#cases + 1] = { "anonymous", h["set-cookie"]:match("^([^;]+)"), 401,
                              "Passport was not initialized" }
        local out = node.login(app.port, "bob", "pw2")
        node.request(app.port, "POST", "/logout", { headers = { cookie = out } })
        cases[#cases + 1] = { "logged out", out, 401, "No session found" }

        for _, c in ipairs(cases) do
            local name, cookie, status, message = c[1], c[2], c[3], c[4]
            assert.is_false(express_says(cookie or ""), name)
            assert.is_false(gateway(cookie, "websocket").connected, name)
            local r = gateway(cookie, "polling")
            assert.is_false(r.connected, name)
            local st, body = nginx:get("/socket.io/?EIO=4&transport=polling",
                                       cookie and { Cookie = cookie } or {})
            assert.equal(status, st, name)
            assert.same({ error = message }, cjson.decode(body), name)
        end
    end)

    it("replaces identity headers a client tries to spoof", function()
        local st, body = nginx:get("/headers", {
            Cookie = node.login(app.port, "bob", "pw2"),
            ["X-Passport-User"] = '{"value":1,"logged_in":true}',
            ["X-Passport-Logged-In"] = "true",
        })
        assert.equal(200, st)
        local h = cjson.decode(body)
        assert.same({ value = 2, logged_in = true }, cjson.decode(h["x-passport-user"]))
        -- a rejected request never reaches the app, spoofed headers or not
        st = nginx:get("/headers", { ["X-Passport-User"] = '{"value":1}' })
        assert.equal(401, st)
    end)

    it("puts data in ngx.ctx.passport for later phases", function()
        local cookie = node.login(app.port, "ann", "pw1")
        local st, body = nginx:get("/ctx", { Cookie = cookie })
        assert.equal(200, st)
        local _, who = express_says(cookie)
        assert.same({ id = 1, sid = who.session_id }, cjson.decode(body))
    end)

    it("rejects a foreign Origin with 403 and accepts a listed one", function()
        local cookie = node.login(app.port, "ann", "pw1")
        assert.is_false(gateway(cookie, "websocket", "http://evil.example").connected)
        local st, body = nginx:get("/headers", { Cookie = cookie, Origin = "http://evil.example" })
        assert.equal(403, st)
        assert.same({ error = "Origin not allowed" }, cjson.decode(body))
        assert.is_true(gateway(cookie, "websocket", "http://good.example").connected)
    end)

    it("answers 503 when Redis is unreachable, the details in the log only", function()
        local cookie = node.login(app.port, "ann", "pw1")
        local st, body = nginx:get("/down", { Cookie = cookie })
        assert.equal(503, st)
        assert.same({ error = "Error in session store" }, cjson.decode(body))
        assert.matches("Error in session store: redis: connect to 127.0.0.1:%d+ failed", nginx:error_log())
    end)

    it("rejects a success callback that never accepts, after accept_timeout", function()
        local cookie = node.login(app.port, "ann", "pw1")
        local t0 = require("socket").gettime()
        local st, body = nginx:get("/timeout", { Cookie = cookie })
        local took = require("socket").gettime() - t0
        assert.equal(500, st)
        assert.same({ error = "accept was not called in time" }, cjson.decode(body))
        assert.is_true(took >= 0.3 and took < 2, "took " .. took)
    end)

    -- passport.socketio's test/authorizer.withSuccess.test.js, in the gateway:
    -- success keeps accept and calls it later; until then nothing connects.
    it("waits for an accept called later (passport.socketio withSuccess)", function()
        local cookie = node.login(app.port, "ann", "pw1")
        local c = nginx:send("/deferred", { Cookie = cookie })
        c:settimeout(0.3)
        local early, err = c:receive("*l")
        assert.is_nil(early)          -- not connected while accept is pending
        assert.equal("timeout", err)
        c:settimeout(5)
        local st, body = nginx:receive(c)
        assert.equal(200, st)         -- connected once accept(null, true) ran
        assert.equal("in", body)
    end)

    -- passport.socketio's test/authorizer.test.js: not logged in is refused,
    -- logged in connects (both covered above through a real socket.io client).
    it("refuses a client that is not logged in and connects one that is", function()
        local r = gateway(nil, "websocket")
        assert.is_false(r.connected)
        assert.is_true(gateway(node.login(app.port, "ann", "pw1"), "websocket").connected)
    end)

    it("logs rejections without cookie values or secrets", function()
        local log = nginx:error_log()
        assert.matches("passport: rejected", log)
        assert.not_matches(SECRET, log, 1, true)
        assert.not_matches("s%3A", log, 1, true)
        assert.not_matches("[1-9]%d* exited on signal", log)
    end)
end)
