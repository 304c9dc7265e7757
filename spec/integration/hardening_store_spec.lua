-- Hardening, round 2, in the stores (real nginx, real redis-server): a
-- cached record never outlives its key, and a shdict delete that lands
-- during a backend fetch stays deleted.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local cookie = require "resty.passport.cookie"
local resp = require "resty.passport.redis.resp"
local socket = require "socket"

local SECRET = "hardening store secret"

local function cookie_of(sid)
    return "connect.sid=" .. cookie.sign(sid, SECRET):gsub(":", "%%3A")
end

describe("hardening (cache lifetime and the shdict store)", function()
    local redis, nginx
    -- A Redis played by the spec itself, so that it can answer what a real
    -- one only does by chance (a key gone between GET and PTTL, an error)
    -- and see each command before it answers: nginx waits on it, so one
    -- loop serves both sides.
    local fake, fake_port
    local conns = {} -- accepted connections -> their command parser

    setup(function()
        redis = redis_server.start {}
        fake = assert(socket.bind("127.0.0.1", 0))
        fake_port = select(2, fake:getsockname())
        nginx = nginx_server.start {
            workers = 1,
            http = ([[
    lua_shared_dict sessions 1m;
    init_by_lua_block {
        local passport = require "resty.passport"
        auth = passport.authorize { secret = %q,
            store = passport.redis { port = %d, cache_ttl = 5000 } }
        fake = { cached = passport.redis { port = %d, cache_ttl = 5000 },
                 plain = passport.redis { port = %d } }
        local backend = { get = function(_, sid)
            ngx.sleep(tonumber(ngx.shared.sessions:get("delay") or 0))
            if ngx.shared.sessions:get("gone") then return nil end
            return '{"cookie":{},"passport":{"user":"' .. sid .. '"}}'
        end }
        local shdict = require "resty.passport.store.shdict"
        shd = shdict.new { dict = "sessions", ttl = 60000, backend = backend }

        -- Another worker's delete landing between get()'s check of the
        -- generation and its set: a dict whose set() runs one first (the
        -- window has no yield, so one worker cannot hit it otherwise).
        late = shdict.new { dict = "sessions", ttl = 60000, prefix = "late:",
                            backend = backend }
        local real = ngx.shared.sessions
        late.dict = {
            get = function(_, ...) return real:get(...) end,
            incr = function(_, ...) return real:incr(...) end,
            delete = function(_, ...) return real:delete(...) end,
            set = function(_, key, ...)
                if RACE then RACE = false late:delete(key:sub(6)) end
                return real:set(key, ...)
            end,
        }
    }
]]):format(SECRET, redis.port, fake_port, fake_port),
            server = [[
        location = /a { access_by_lua_block { auth:access() } content_by_lua_block { ngx.print("in") } }
        location = /fake { content_by_lua_block {
            local json, err = fake[ngx.var.arg_store]:get(ngx.var.arg_sid)
            ngx.print(tostring(json or err))
        } }
        location = /shd/get { content_by_lua_block { ngx.print(tostring(shd:get(ngx.var.arg_sid))) } }
        location = /shd/del { content_by_lua_block { shd:delete(ngx.var.arg_sid) ngx.print("ok") } }
        location = /shd/set { content_by_lua_block {
            local d = ngx.shared.sessions
            d:set("delay", ngx.var.arg_delay or 0)
            d:set("gone", ngx.var.arg_gone == "1")
            ngx.print("ok")
        } }
        location = /late { content_by_lua_block {
            RACE = true
            ngx.print(tostring(late:get(ngx.var.arg_sid)), " ",
                      tostring(ngx.shared.sessions:get("late:" .. ngx.var.arg_sid)))
        } }
]],
        }
    end)

    teardown(function()
        for c in pairs(conns) do c:close() end
        if fake then fake:close() end
        if nginx then nginx:stop() end
        if redis then redis:stop() end
    end)

    -- Requests path, playing Redis meanwhile: once nginx has sent as many
    -- commands as there are replies, they all go back at once.  Returns
    -- the body and the commands nginx sent ("GET sess:x").
    local function via_fake(path, replies)
        local c = nginx:send(path)
        local seen, answered = {}, false
        local deadline = socket.gettime() + 5
        while socket.gettime() < deadline do
            local watch = { c, fake }
            for s in pairs(conns) do watch[#watch + 1] = s end
            for _, s in ipairs((socket.select(watch, nil, 0.1))) do
                if s == c then
                    local status, body = nginx:receive(c)
                    assert.equal(200, status)
                    return body, seen
                elseif s == fake then
                    local r = assert(fake:accept())
                    r:settimeout(0)
                    conns[r] = resp.parser(65536)
                elseif conns[s] then
                    local data, err, partial = s:receive(65536)
                    conns[s]:feed(data or partial or "")
                    for cmd in function() return conns[s]:get() end do
                        seen[#seen + 1] = table.concat(cmd, " ")
                    end
                    if err == "closed" then
                        conns[s] = nil
                        s:close()
                    elseif not answered and #seen >= #replies then
                        answered = true
                        s:send(table.concat(replies))
                    end
                end
            end
        end
        error("no answer to " .. path)
    end

    it("never serves a cached record after its key has expired", function()
        redis:seed_connect_redis("short", '{"id":9}')
        redis:call("PEXPIRE", "sess:short", "600")
        assert.equal(200, (nginx:get("/a", { Cookie = cookie_of("short") })))
        socket.sleep(0.8)
        assert.equal(0, redis:call("EXISTS", "sess:short"))
        assert.equal(401, (nginx:get("/a", { Cookie = cookie_of("short") })))
    end)

    describe("GET + PTTL", function()
        local HI, NONE = "$2\r\nhi\r\n", "$-1\r\n"

        it("an uncached store sends one GET and nothing else", function()
            local body, seen = via_fake("/fake?store=plain&sid=u", { HI })
            assert.equal("hi", body)
            assert.same({ "GET sess:u" }, seen)
        end)

        it("a cached store pipelines GET and PTTL: one round trip", function()
            -- nothing is answered before both are in
            local body, seen = via_fake("/fake?store=cached&sid=p", { HI, ":-1\r\n" })
            assert.equal("hi", body)
            assert.same({ "GET sess:p", "PTTL sess:p" }, seen)
            -- no expiry (-1): cached for cache_ttl
            body, seen = via_fake("/fake?store=cached&sid=p", { NONE, ":-2\r\n" })
            assert.equal("hi", body)
            assert.same({}, seen)
        end)

        it("caches for no longer than the key's PTTL", function()
            assert.equal("hi", (via_fake("/fake?store=cached&sid=t", { HI, ":400\r\n" })))
            local body, seen = via_fake("/fake?store=cached&sid=t", { NONE, ":-2\r\n" })
            assert.equal("hi", body)
            assert.same({}, seen)
            socket.sleep(0.5)
            body, seen = via_fake("/fake?store=cached&sid=t", { NONE, ":-2\r\n" })
            assert.equal("nil", body)
            assert.equal(2, #seen)
        end)

        it("does not cache a record whose key went between GET and PTTL (-2)", function()
            assert.equal("hi", (via_fake("/fake?store=cached&sid=g", { HI, ":-2\r\n" })))
            local body, seen = via_fake("/fake?store=cached&sid=g", { NONE, ":-2\r\n" })
            assert.equal("nil", body)
            assert.same({ "GET sess:g", "PTTL sess:g" }, seen)
        end)

        it("serves but does not cache when PTTL fails (an ACL without it)", function()
            assert.equal("hi", (via_fake("/fake?store=cached&sid=e", { HI, "-NOPERM no\r\n" })))
            local body, seen = via_fake("/fake?store=cached&sid=e", { NONE, ":-2\r\n" })
            assert.equal("nil", body)
            assert.equal(2, #seen)
            assert.matches("PTTL failed, so nothing is cached %(cache_ttl%): NOPERM no",
                           nginx:error_log())
        end)
    end)

    describe("shdict store", function()
        it("keeps a delete that lands while a backend fetch is in flight", function()
            nginx:get("/shd/set?delay=0.4")
            local slow = nginx:send("/shd/get?sid=raced")
            socket.sleep(0.15)
            assert.equal("ok", select(2, nginx:get("/shd/del?sid=raced")))
            slow:settimeout(5)
            local st, body = nginx:receive(slow)
            assert.equal(200, st)
            assert.matches('"user":"raced"', body) -- that fetch began before the delete
            nginx:get("/shd/set?delay=0&gone=1")
            assert.equal("nil", select(2, nginx:get("/shd/get?sid=raced")))
        end)

        it("caches again what a fetch begun after the delete brings", function()
            nginx:get("/shd/set?delay=0")
            assert.matches('"user":"again"', select(2, nginx:get("/shd/get?sid=again")))
            nginx:get("/shd/del?sid=again")
            assert.matches('"user":"again"', select(2, nginx:get("/shd/get?sid=again")))
            nginx:get("/shd/set?delay=0&gone=1")
            assert.matches('"user":"again"', select(2, nginx:get("/shd/get?sid=again")))
        end)

        it("takes back a record stored just as a delete landed", function()
            nginx:get("/shd/set?delay=0")
            local _, body = nginx:get("/late?sid=x")
            assert.matches('^{.*"user":"x".*} nil$', body)
        end)
    end)

    it("left no crash and no Lua error in the log", function()
        nginx:assert_clean_log()
    end)
end)
