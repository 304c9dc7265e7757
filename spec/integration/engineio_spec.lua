-- passport.engineio on its own, on the wire: a real nginx (2 workers) and
-- redis-server, and the byte-level client.  The open packet, messages both
-- ways (text and binary), the heartbeat (pings on time, a peer that stops
-- answering is closed), the close packet, bad packets, bad requests, and a
-- refused handshake.  (What must agree with npm engine.io is checked
-- against it in socketio_spec.)
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local ws = require "support.ws_raw"
local cookie = require "resty.passport.cookie"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "engineio spec secret"
local RECORD = '{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z"},'
               .. '"passport":{"user":"u%d"}}'
local PATH = "/engine.io/?EIO=4&transport=websocket"

describe("passport.engineio", function()
    local redis, nginx
    local ck = {}

    setup(function()
        redis = redis_server.start {}
        for i = 1, 2 do
            redis:call("SET", "sess:sid" .. i, RECORD:format(i))
            ck[i] = "connect.sid=" .. cookie.sign("sid" .. i, SECRET)
        end
        nginx = nginx_server.start {
            workers = 2,
            http = ([[
    lua_shared_dict spec 1m;
    init_by_lua_block {
        local passport = require "resty.passport"
        local auth = passport.authorize { secret = %q, store = passport.redis { port = %d } }
        eio = passport.engineio { auth = auth, ping_interval = 300, ping_timeout = 200,
                                  max_payload = 1000 }
        eio:on("connection", function(s)
            s:send("hello " .. s.user.value)
            s:on("message", function(data, binary)
                if data == "close-me" then return s:close() end
                s:send((binary and "b:" or "t:") .. data, binary)
            end)
            s:on("close", function(reason) ngx.shared.spec:set("reason", reason) end)
        end)
        -- socket.io with HTTP refusals (refuse = "http")
        sio_http = passport.socketio { auth = auth, refuse = "http" }
        sio_http:of("/"):on("connection", function(s) s:emit("hello", s.user.value) end)
    }
]]):format(SECRET, redis.port),
            server = [[
        location /engine.io/ {
            content_by_lua_block { eio:serve() }
        }
        location /sio-http/ {
            content_by_lua_block { sio_http:serve() }
        }
        location = /reason {
            content_by_lua_block { ngx.print(ngx.shared.spec:get("reason") or "") }
        }
]],
        }
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if redis then redis:stop() end
    end)

    local function open(i)
        local c, status = ws.connect(nginx.port, PATH, { Cookie = ck[i or 1] })
        assert(c, "upgrade refused: " .. tostring(status))
        local f = assert(c:read_frame())
        assert.equal(1, f.opcode)
        assert.equal("0", f.payload:sub(1, 1))
        return c, cjson.decode(f.payload:sub(2))
    end

    local function read_text(c, skip_pings)
        while true do
            local f, err = c:read_frame(3)
            if not f then return nil, err end
            if not (skip_pings and f.payload == "2") then return f.payload, f.opcode end
        end
    end

    it("opens with the open packet and exchanges messages", function()
        local c, hs = open(1)
        assert.is_string(hs.sid)
        -- "<worker id>.<20 random characters>": the worker that holds it
        assert.matches("^%d%.[%w_-]+$", hs.sid)
        assert.equal(22, #hs.sid)
        assert.same({}, hs.upgrades)
        assert.equal(300, hs.pingInterval)
        assert.equal(200, hs.pingTimeout)
        assert.equal(1000, hs.maxPayload)
        assert.equal("4hello u1", read_text(c, true))
        c:send_frame("text", "4ping me")
        assert.equal("4t:ping me", read_text(c, true))
        c:send_frame("binary", "\0\1\255")
        local p, op = read_text(c, true)
        assert.equal("b:\0\1\255", p)
        assert.equal(2, op)
        c:close()
    end)

    it("pings every ping_interval and stays open while pongs come back", function()
        local c = open(2)
        local pings, t0 = 0, socket.gettime()
        while socket.gettime() - t0 < 1.6 do
            local f = assert(c:read_frame(1))
            if f.payload == "2" then
                pings = pings + 1
                c:send_frame("text", "3")
            end
        end
        -- 1.6 s at 300 ms: 5 pings, give or take the tick
        assert.is_true(pings >= 4 and pings <= 6, "pings: " .. pings)
        c:send_frame("text", "4still here")
        assert.equal("4t:still here", read_text(c, true))
        c:close()
    end)

    it("closes a peer that stops answering pings (ping timeout)", function()
        local c = open(1)
        local t0 = socket.gettime()
        local code = c:read_close(3)
        local elapsed = socket.gettime() - t0
        assert.equal(1005, code) -- no status code, as npm ws closes for engine.io
        -- first ping at 300 ms, closed 200 ms later
        assert.is_true(elapsed > 0.4 and elapsed < 1.2, "closed after " .. elapsed)
        c:close()
        socket.sleep(0.2)
        local status, body = nginx:get("/reason")
        assert.equal(200, status)
        assert.equal("ping timeout", body)
    end)

    it("closes on the close packet, an unknown packet type, or a client ping", function()
        for _, bad in ipairs { "1", "9", "", "2" } do
            local c = open(1)
            c:send_frame("text", bad)
            local code = c:read_close(2)
            assert.equal(1005, code, "packet '" .. bad .. "'")
            c:close()
        end
    end)

    it("closes a message over max_payload (1009)", function()
        local c = open(1)
        c:send_frame("text", "4" .. ("x"):rep(1000))
        assert.equal(1009, (c:read_close(2)))
        c:close()
    end)

    it("answers bad requests as engine.io does", function()
        local _, status, h, body = ws.connect(nginx.port, "/engine.io/?EIO=4&transport=polling",
                                              { Cookie = ck[1] })
        assert.equal(400, status)
        assert.equal("Transport unknown", body)
        assert.matches("text/html", h["content-type"])
        _, status, _, body = ws.connect(nginx.port, "/engine.io/?transport=websocket", { Cookie = ck[1] })
        assert.equal(400, status)
        assert.equal("Unsupported protocol version", body)
        _, status, _, body = ws.connect(nginx.port, PATH .. "&sid=abc", { Cookie = ck[1] })
        assert.equal(400, status)
        assert.equal("Session ID unknown", body)
        local status2, body2 = nginx:get(PATH, { Cookie = ck[1] })
        assert.equal(400, status2)
        assert.same({ code = 3, message = "Bad request" }, cjson.decode(body2))
    end)

    it("socket.io with refuse = \"http\": a refused upgrade is a 401, an accepted one speaks socket.io", function()
        local path = "/sio-http/?EIO=4&transport=websocket"
        local c, status, _, body = ws.connect(nginx.port, path, { Cookie = "connect.sid=s%3Anope.bad" })
        assert.is_nil(c)
        assert.equal(401, status)
        assert.same({ error = "No session found" }, cjson.decode(body))
        c = assert(ws.connect(nginx.port, path, { Cookie = ck[2] }))
        assert.equal("0", (assert(c:read_frame()).payload:sub(1, 1)))
        c:send_frame("text", "40")
        assert.matches('^40{"sid":"[%w_-]+"}$', read_text(c, true))
        assert.equal('42["hello","u2"]', read_text(c, true))
        c:close()
    end)

    it("refuses a handshake without a session over HTTP", function()
        local c, status = ws.connect(nginx.port, PATH, {})
        assert.is_nil(c)
        assert.equal(401, status)
        -- and the worker still serves
        c = open(2)
        assert.equal("4hello u2", read_text(c, true))
        c:close()
        nginx:assert_clean_log()
    end)
end)
