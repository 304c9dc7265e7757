-- Secrets never reach the error log, at any level: a debug-level nginx
-- handles accepted, tampered, retired-secret and store-failure handshakes,
-- then the log is searched for the secrets and, in the lines Lua wrote,
-- for the session id and cookie value.  (nginx's own debug dump of request
-- headers does show the Cookie header: that is nginx, not us.)  The Redis
-- password is in it neither as is nor as its MD5 (lua-nginx-module logs
-- cosocket pool names at debug level).
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local proc = require "support.proc"
local cookie = require "resty.passport.cookie"

local SECRETS = { "n3w-s3cr3t-value-4242", "0ld-s3cr3t-value-1717" }
local RETIRED = "r3tired-s3cr3t-9999"
local SID = "LogSpecSid0123456789abcdefABCDEF"
local REDIS_PW = "r3dis-pa55word-3131"

describe("logs", function()
    local redis, redis_pw, nginx

    setup(function()
        redis = redis_server.start {}
        redis_pw = redis_server.start { password = REDIS_PW }
        for _, r in ipairs { redis, redis_pw } do
            r:call("SET", "sess:" .. SID,
                   '{"cookie":{"expires":null},"passport":{"user":"u1"}}', "EX", "600")
        end
        nginx = nginx_server.start {
            log_level = "debug",
            http = ([[
    init_by_lua_block {
        local passport = require "resty.passport"
        local secrets = { %q, %q }
        auth = passport.authorize { secret = secrets,
                                    store = passport.redis { port = %d } }
        auth_down = passport.authorize { secret = secrets,
                                         store = passport.redis { port = %d } }
        auth_bad_user = passport.authorize { secret = secrets,
            store = passport.redis { port = %d },
            deserialize_user = function() error("db exploded") end }
        auth_pw = passport.authorize { secret = secrets,
            store = passport.redis { port = %d, password = %q } }
    }
]]):format(SECRETS[1], SECRETS[2], redis.port, proc.free_port(), redis.port,
           redis_pw.port, REDIS_PW),
            server = [[
        location /a { access_by_lua_block { auth:access() } content_by_lua_block { ngx.print("ok") } }
        location /down { access_by_lua_block { auth_down:access() } content_by_lua_block { ngx.print("ok") } }
        location /bad { access_by_lua_block { auth_bad_user:access() } content_by_lua_block { ngx.print("ok") } }
        location /pw { access_by_lua_block { auth_pw:access() } content_by_lua_block { ngx.print("ok") } }
]],
        }
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
        if redis_pw then redis_pw:stop() end
    end)

    it("holds no secret, and no session id or cookie value in our lines", function()
        local good = cookie.sign(SID, SECRETS[2])
        local enc = good:gsub(":", "%%3A")
        local function get(path, value)
            return (nginx:get(path, { Cookie = "connect.sid=" .. value }))
        end
        assert.equal(200, get("/a", enc))
        assert.equal(401, get("/a", enc:sub(1, -2) .. "x"))
        assert.equal(401, get("/a", cookie.sign(SID, RETIRED)))
        assert.equal(503, get("/down", enc))
        assert.equal(503, get("/bad", enc))
        assert.equal(200, get("/pw", enc)) -- a fresh connection, pooled
        assert.equal(200, get("/pw", enc)) -- and taken from the pool

        local log = nginx:error_log()
        assert.matches("%[debug%]", log)         -- it really was a debug run
        assert.matches("passport: rejected", log) -- and our lines are in it
        local md5 = proc.sh("printf %s " .. proc.q(REDIS_PW) .. " | md5sum"):match("%x+")
        assert.equal(32, #md5)
        assert.matches("lua tcp socket keepalive create connection pool", log)
        for _, s in ipairs { SECRETS[1], SECRETS[2], RETIRED, REDIS_PW, md5 } do
            assert.is_nil(log:find(s, 1, true), "a secret is in the log: " .. s)
        end
        for line in log:gmatch("[^\n]+") do
            if line:find("passport", 1, true) or line:find("[lua]", 1, true) then
                assert.is_nil(line:find(SID, 1, true), "session id in: " .. line)
                assert.is_nil(line:find(good:match("%.(.*)$"), 1, true), "signature in: " .. line)
            end
        end
    end)
end)
