-- Hardening, round 2, guard mode (auth:access() in a real nginx, real
-- redis-server, sessions written by the real connect-redis): the identity
-- header keeps every digit, identity headers spelled with underscores are
-- cleared, error bodies carry no internals, the query fallback is used only
-- when no cookie came, and a record without a cookie object is a store error.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local node = require "support.node_app"
local proc = require "support.proc"
local cookie = require "resty.passport.cookie"
local cjson = require "cjson"
local http = require "socket.http"

local SECRET = "keyboard cat"

local function signed(sid, secret)
    return (cookie.sign(sid, secret or SECRET):gsub(":", "%%3A"))
end

describe("hardening (guard mode)", function()
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
        auth = passport.authorize { secret = %q, store = store, query_key = "sid" }
        auth_deser = passport.authorize { secret = %q, store = store,
            deserialize_user = function(u) return { id = u, nested = { user = u } } end }
        auth_down = passport.authorize { secret = %q,
            store = passport.redis { port = %d, connect_timeout = 200 } }
        auth_raise = passport.authorize { secret = %q, store = store,
            success = function() error("policy exploded") end }
        auth_deser_err = passport.authorize { secret = %q, store = store,
            deserialize_user = function() return nil, "db at 10.1.2.3:5432 refused" end }
    }
    # the README's recipe: the query_key value masked in the access log
    map $request_uri $request_uri_masked {
        "~^(?<p>[^?]*\?(?:.*&)?sid=)[^&]*(?<r>.*)$"  "${p}MASKED${r}";
        default                                       $request_uri;
    }
    log_format masked '$remote_addr - [$time_local] "$request_method $request_uri_masked" $status';
]]):format(redis.port, SECRET, SECRET, SECRET, closed, SECRET, SECRET),
            server = [[
        underscores_in_headers on;
        location = /headers {
            access_log access.log masked;
            access_by_lua_block { auth:access() }
            proxy_pass http://127.0.0.1:{{port}}/echo;
        }
        location = /deser { access_by_lua_block { auth_deser:access() } proxy_pass http://127.0.0.1:{{port}}/echo; }
        location = /down { access_by_lua_block { auth_down:access() } proxy_pass http://127.0.0.1:{{port}}/echo; }
        location = /raise { access_by_lua_block { auth_raise:access() } proxy_pass http://127.0.0.1:{{port}}/echo; }
        location = /deser_err {
            access_by_lua_block { auth_deser_err:access() }
            proxy_pass http://127.0.0.1:{{port}}/echo;
        }
        # the upstream: every request header as it arrived, names as sent
        location = /echo {
            allow 127.0.0.1;
            content_by_lua_block {
                ngx.print(require("cjson").encode(ngx.req.get_headers(0, true)))
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

    -- status, and the headers the upstream got (lower-case names; the
    -- names as sent under .raw)
    local function headers_at(path, h)
        local st, body = nginx:get(path, h)
        if st ~= 200 then return st, body end
        local raw, out = cjson.decode(body), {}
        for k, v in pairs(raw) do out[k:lower()] = v end
        out.raw = raw
        return st, out
    end

    -- The header text the app received for each seeded sid, checked by Node.
    local function node_check(cases)
        local input = os.tmpname()
        local f = assert(io.open(input, "w"))
        f:write(cjson.encode(cases))
        f:close()
        local out = proc.sh("node " .. nginx_server.root .. "/spec/support/app/identity.js check < " .. input)
        os.remove(input)
        local last = assert(out:match("([^\n]+)%s*$"), out)
        return cjson.decode(last)
    end

    it("sends every user id exactly as JavaScript reads it (vectors and random users)", function()
        local seed = os.time() % 100000
        local out = proc.sh(("NODE_PATH=%s node %s/spec/support/app/identity.js seed %d sess: 300 %d")
                            :format(redis_server.node_modules(), nginx_server.root, redis.port, seed))
        local seeded = cjson.decode(out:match("(%b[])%s*$"))
        assert.is_true(#seeded > 300)
        local cases = {}
        for _, s in ipairs(seeded) do
            for _, route in ipairs { { "/headers", "record" }, { "/deser", "deserialized" } } do
                local st, h = headers_at(route[1], { Cookie = "connect.sid=" .. signed(s.sid) })
                assert.equal(200, st, s.user)
                cases[#cases + 1] = { header = h["x-passport-user"], user = s.user, mode = route[2] }
            end
        end
        local verdict = node_check(cases)
        assert.same({}, verdict.bad, "seed " .. seed)
        assert.equal(#cases, verdict.ok)
    end)

    it("tells apart two users whose ids differ past the 14th digit", function()
        local a = redis:seed_connect_redis("big-a", '{"id":1234567890123456}')
        local b = redis:seed_connect_redis("big-b", '{"id":1234567890123499}')
        assert.truthy(a and b)
        local _, ha = headers_at("/headers", { Cookie = "connect.sid=" .. signed("big-a") })
        local _, hb = headers_at("/headers", { Cookie = "connect.sid=" .. signed("big-b") })
        assert.matches('"id":1234567890123456[,}]', ha["x-passport-user"])
        assert.matches('"id":1234567890123499[,}]', hb["x-passport-user"])
    end)

    it("clears identity headers spelled with underscores", function()
        redis:seed_connect_redis("under", "7")
        for _, h in ipairs {
            { X_Passport_User = '{"value":1,"logged_in":true}', X_Passport_Logged_In = "true" },
            { ["x_passport-user"] = '{"value":1}', ["X-PASSPORT_LOGGED_IN"] = "true" },
        } do
            -- anonymous (refused) and logged in: the app never sees a forged one
            local st = nginx:get("/headers", h)
            assert.equal(401, st)
            h.Cookie = "connect.sid=" .. signed("under")
            local st2, got = headers_at("/headers", h)
            assert.equal(200, st2)
            for name, v in pairs(got.raw) do
                name = name:lower()
                local norm = name:gsub("_", "-")
                if norm == "x-passport-user" then
                    assert.equal("x-passport-user", name)
                    assert.same({ value = 7, logged_in = true }, cjson.decode(v))
                elseif norm == "x-passport-logged-in" then
                    assert.equal("x-passport-logged-in", name)
                    assert.equal("true", v)
                end
            end
        end
    end)

    it("keeps internals out of error bodies and puts them in the log", function()
        redis:seed_connect_redis("errs", "1")
        local c = { Cookie = "connect.sid=" .. signed("errs") }
        local st, body = nginx:get("/down", c)
        assert.equal(503, st)
        assert.same({ error = "Error in session store" }, cjson.decode(body))
        st, body = nginx:get("/raise", c)
        assert.equal(500, st)
        assert.same({ error = "handshake unauthorized" }, cjson.decode(body))
        st, body = nginx:get("/deser_err", c)
        assert.equal(503, st)
        assert.same({ error = "Error in session store" }, cjson.decode(body))
        local log = nginx:error_log()
        assert.matches("connect to 127.0.0.1:%d+ failed", log)
        assert.matches("policy exploded", log, 1, true)
        assert.matches("db at 10.1.2.3:5432 refused", log, 1, true)
    end)

    it("uses the query value only when no cookie of that name came", function()
        redis:seed_connect_redis("victim-of-link", "66")
        redis:seed_connect_redis("own", "5")
        -- the signed value as a browser's encodeURIComponent sends it
        local value = cookie.sign("victim-of-link", SECRET):gsub("[^%w%-%._~]", function(ch)
            return ("%%%02X"):format(ch:byte())
        end)
        local q = "/headers?sid=" .. value
        -- no cookie at all: the query value is the credential
        local st, h = headers_at(q, {})
        assert.equal(200, st)
        assert.same({ value = 66, logged_in = true }, cjson.decode(h["x-passport-user"]))
        -- other cookies, none of that name: still the fallback
        st = headers_at(q, { Cookie = "theme=dark" })
        assert.equal(200, st)
        -- a connect.sid cookie came, badly signed (e.g. a retired secret): refused
        st = headers_at(q, { Cookie = "connect.sid=" .. signed("own", "retired") })
        assert.equal(401, st)
        -- an empty one counts as sent
        st = headers_at(q, { Cookie = "connect.sid=" })
        assert.equal(401, st)
        -- a good cookie wins over the query
        st, h = headers_at(q, { Cookie = "connect.sid=" .. signed("own") })
        assert.equal(200, st)
        assert.same({ value = 5, logged_in = true }, cjson.decode(h["x-passport-user"]))
        -- the access log holds the request, not the credential
        local log = proc.read_file(nginx.prefix .. "/access.log") or ""
        assert.matches("GET /headers%?sid=MASKED", log)
        assert.not_matches(value:match("%.(.*)$"), log, 1, true)
    end)

    it("refuses a record with no cookie object as a store error (Express fails it too)", function()
        redis:call("SET", "sess:nocookie", '{"passport":{"user":1}}', "EX", "60")
        local c = "connect.sid=" .. signed("nocookie")
        -- Express itself fails the request: its session loader throws
        local _, status = http.request { url = "http://127.0.0.1:" .. app.port .. "/whoami",
                                         headers = { cookie = c } }
        assert.equal(500, status)
        local st, body = nginx:get("/headers", { Cookie = c })
        assert.equal(503, st)
        assert.same({ error = "Error in session store" }, cjson.decode(body))
    end)
end)
