-- passport.websocket on the wire: a real nginx and redis-server, and a
-- byte-level client (spec/support/ws_raw.lua) that sends what well-behaved
-- clients never do.  Handshake refusals, fragmentation, control frames,
-- UTF-8, sizes, masks, opcodes, close codes, vanishing clients, idle
-- peers, slow consumers, and 1,000 connects that leave nothing behind.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local ws = require "support.ws_raw"
local cookie = require "resty.passport.cookie"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "websocket spec secret"
local RECORD = '{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z"},'
               .. '"passport":{"user":"u%d"}}'

describe("passport.websocket", function()
    local redis, nginx, pid
    local ck = {}

    setup(function()
        redis = redis_server.start {}
        for i = 1, 3 do
            redis:call("SET", "sess:sid" .. i, RECORD:format(i))
            ck[i] = "connect.sid=" .. cookie.sign("sid" .. i, SECRET)
        end
        redis:call("SET", "sess:anon", '{"cookie":{"originalMaxAge":null}}')
        nginx = nginx_server.start {
            workers = 1,
            http = ([[
    lua_shared_dict spec 1m;
    init_by_lua_block {
        local passport = require "resty.passport"
        store = passport.redis { port = %d }
        auth = passport.authorize { secret = %q, store = store,
                                    origins = { "http://good.example" } }
    }
]]):format(redis.port, SECRET),
            server = [[
        location = /ws {
            content_by_lua_block {
                local passport = require "resty.passport"
                local s = passport.websocket(auth, { protocols = { "v2", "v1" },
                                                     max_message_size = 1000, max_fragments = 8 })
                if not s then return end
                s:send("hello " .. s.user.value .. " " .. (s.protocol or "-") .. " " .. s.id)
                while true do
                    local m, t, code, reason = s:recv()
                    if not m then
                        ngx.shared.spec:set("last_close", (code or "nil") .. " " .. tostring(t))
                        break
                    end
                    if m == "close-me" then
                        s:close(4000, "asked")
                    elseif m == "fields" then
                        local names = {}
                        for k in pairs(s) do names[#names + 1] = k end
                        table.sort(names)
                        s:send(table.concat(names, " "))
                    else
                        s:send(t .. ":" .. m, t == "binary")
                    end
                end
            }
        }
        location = /idle {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth,
                    { ping_interval = 0.3, idle_timeout = 1 })
                if not s then return end
                while s:recv() do end
            }
        }
        location = /slow {
            content_by_lua_block {
                local s = require("resty.passport").websocket(auth,
                    { max_queue = 16, send_timeout = 2 })
                if not s then return end
                while s:recv() do end
            }
        }
        location = /flood {
            content_by_lua_block {
                -- from another request: 64 KiB messages to every socket of u2
                local chunk = string.rep("x", 65536)
                local sent, refused = 0, 0
                for _ = 1, tonumber(ngx.var.arg_n) do
                    for _, s in ipairs(require("resty.passport").sockets_of("u2")) do
                        if s:send(chunk) then sent = sent + 1 else refused = refused + 1 end
                    end
                end
                ngx.print(sent, " ", refused)
            }
        }
        location = /push {
            content_by_lua_block {
                local n = 0
                for _, s in ipairs(require("resty.passport").sockets_of(ngx.var.arg_user)) do
                    if s:send(ngx.var.arg_data) then n = n + 1 end
                end
                ngx.print(n)
            }
        }
        location = /count {
            content_by_lua_block {
                ngx.print(#require("resty.passport").filter_sockets_by_user(function() return true end))
            }
        }
        location = /bad_option {
            content_by_lua_block {
                local v = ngx.var.arg_v
                local ok, err = pcall(require("resty.passport").websocket, auth,
                                      { max_fragments = tonumber(v) or v })
                ngx.print(ok and "accepted" or err)
            }
        }
        location = /resty {
            content_by_lua_block {
                -- a handler written for lua-resty-websocket's server API, as
                -- its documentation shows one, with only the line that makes
                -- the socket changed
                local wb = require("resty.passport").websocket(auth)
                if not wb then return end
                wb:set_timeout(200)
                local timeouts = 0
                while true do
                    local data, typ, err = wb:recv_frame()
                    if not data then
                        if not string.find(err, "timeout", 1, true) then break end
                        timeouts = timeouts + 1
                        local bytes, perr = wb:send_ping("t" .. timeouts)
                        if not bytes then ngx.shared.spec:set("resty", "ping failed: " .. perr) return end
                    elseif typ == "close" then
                        ngx.shared.spec:set("resty", "close " .. tostring(err) .. " " .. data)
                        wb:send_close()
                        break
                    elseif typ == "text" then
                        assert(wb:send_text("echo " .. data) == 5 + #data)
                        if data == "pong me" then wb:send_pong("p") end
                        if data == "bye" then wb:send_close(4001, "bye") end
                    elseif typ == "binary" then
                        assert(wb:send_binary(data) == #data)
                    end
                end
            }
        }
        location = /resty_result { content_by_lua_block { ngx.print(ngx.shared.spec:get("resty")) } }
        location = /pid { content_by_lua_block { ngx.print(ngx.worker.pid()) } }
        location = /last_close { content_by_lua_block { ngx.print(ngx.shared.spec:get("last_close")) } }
]],
        }
        local _, body = nginx:get("/pid")
        pid = tonumber(body)
    end)

    teardown(function()
        if nginx then
            local log = nginx:error_log()
            assert.is_nil(log:match("exited on signal"))
            assert.is_nil(log:match("%[alert%]"), log:match("[^\n]*%[alert%][^\n]*"))
            nginx:stop()
        end
        if redis then redis:stop() end
    end)

    local function open(i, path, headers)
        local h = { Cookie = ck[i or 1] }
        for k, v in pairs(headers or {}) do h[k] = v end
        local c, status, rh = ws.connect(nginx.port, path or "/ws", h)
        assert(c, "handshake: " .. tostring(status))
        local greet = (path or "/ws") == "/ws" and assert(c:read_frame(2)) or nil
        return c, greet, rh
    end

    local function count()
        local _, body = nginx:get("/count")
        return tonumber(body)
    end

    -- The worker's open fds, less its pooled Redis connections (the pool
    -- grows and shrinks with concurrency; it is not what is checked here).
    local function fds_now()
        local n = 0
        for _ in io.popen("ls /proc/" .. pid .. "/fd"):lines() do n = n + 1 end
        local p = io.popen("ss -Htnp state established '( dport = :" .. redis.port .. " )'")
        for line in p:lines() do
            if line:find("pid=" .. pid .. ",", 1, true) then n = n - 1 end
        end
        p:close()
        return n
    end

    -- The worker's open fds once closing connections have been finalized
    -- (the same count twice, 100 ms apart).
    local function fds()
        local last = fds_now()
        for _ = 1, 50 do
            socket.sleep(0.1)
            local n = fds_now()
            if n == last then return n end
            last = n
        end
        return last
    end

    local function wait_count(n, timeout)
        local deadline = socket.gettime() + (timeout or 3)
        while socket.gettime() < deadline do
            if count() == n then return true end
            socket.sleep(0.02)
        end
        return count() == n
    end

    describe("handshake", function()
        it("answers 101 with the accept key, a chosen subprotocol and the user", function()
            local c, greet, rh = open(1, "/ws", { ["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==",
                                                 ["Sec-WebSocket-Protocol"] = "v1, v2, v9" })
            -- RFC 6455's own example key and accept value
            assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", rh["sec-websocket-accept"])
            assert.equal("v2", rh["sec-websocket-protocol"]) -- the server's order
            assert.matches("^hello u1 v2 ", greet.payload)
            c:close()
        end)

        it("keeps a socket at rest within 16 fields (one 16-slot hash part), a subprotocol included", function()
            local c = open(1, "/ws", { ["Sec-WebSocket-Protocol"] = "v1" })
            c:send_frame("text", "fields")
            assert.equal("_key _sid _slot data id last_seen opts protocol q_bytes q_head q_tail queue "
                         .. "sema sock state user", assert(c:read_frame(2)).payload)
            c:close()
        end)

        it("refuses a max_fragments that is not a positive integer when it is given", function()
            for _, v in ipairs { "0", "1.5", "-1", "x" } do
                local _, body = nginx:get("/bad_option?v=" .. v)
                assert.matches("bad option 'max_fragments' to 'websocket'", body, 1, true)
            end
        end)

        it("omits the subprotocol when none is shared", function()
            local c, greet, rh = open(1, "/ws", { ["Sec-WebSocket-Protocol"] = "v9" })
            assert.is_nil(rh["sec-websocket-protocol"])
            assert.matches("^hello u1 %- ", greet.payload)
            c:close()
        end)

        local refusals = {
            { "no cookie", { Cookie = false }, 401, "No session found" },
            { "a forged cookie", { Cookie = "connect.sid=" .. cookie.sign("sid1", "wrong") }, 401,
              "No session found" },
            { "a session without passport", { Cookie = "connect.sid=" .. cookie.sign("anon", SECRET) },
              401, "Passport was not initialized" },
            { "an Origin not allowed", { Origin = "http://evil.example" }, 403, "Origin not allowed" },
            { "version 8", { ["Sec-WebSocket-Version"] = "8" }, 426, "unsupported Sec-WebSocket-Version" },
            { "no Upgrade", { Upgrade = false }, 426, "Upgrade: websocket expected" },
            { "no Connection: Upgrade", { Connection = "keep-alive" }, 400, "Connection: Upgrade expected" },
            { "a short key", { ["Sec-WebSocket-Key"] = "c2hvcnQ=" }, 400, "invalid Sec-WebSocket-Key" },
        }
        for _, r in ipairs(refusals) do
            it("refuses " .. r[1] .. " with HTTP " .. r[3] .. ", never a 101", function()
                local h = { Cookie = ck[1] }
                for k, v in pairs(r[2]) do h[k] = v end
                local c, status, rh, body = ws.connect(nginx.port, "/ws", h)
                assert.is_nil(c)
                assert.equal(r[3], status)
                assert.equal(r[4], cjson.decode(body).error)
                if r[3] == 426 and r[2]["Sec-WebSocket-Version"] then
                    assert.equal("13", rh["sec-websocket-version"])
                end
            end)
        end

        it("refuses a POST with 405", function()
            local c, status = ws.connect(nginx.port, "/ws", { Cookie = ck[1] }, { method = "POST" })
            assert.is_nil(c)
            assert.equal(405, status)
        end)
    end)

    describe("frames", function()
        it("reassembles fragments with control frames between them, and answers pings", function()
            local c = open(1)
            c:send_frame("text", "frag", false)
            c:send_frame("ping", "p1")
            c:send_frame("continuation", "men", false)
            c:send_frame("pong", "unsolicited") -- ignored
            c:send_frame("continuation", "ted", true)
            local pong = assert(c:read_frame(2))
            assert.same({ 0xA, "p1" }, { pong.opcode, pong.payload })
            assert.equal("text:fragmented", assert(c:read_frame(2)).payload)
            c:send_frame("binary", "\0\1\2\255")
            local f = assert(c:read_frame(2))
            assert.same({ 0x2, "binary:\0\1\2\255" }, { f.opcode, f.payload })
            c:close()
        end)

        it("reassembles a message of max_fragments frames, empty ones included", function()
            local c = open(1)
            c:send_frame("text", "a", false)
            for _ = 1, 6 do c:send_frame("continuation", "", false) end
            c:send_frame("continuation", "b", true)
            assert.equal("text:ab", assert(c:read_frame(2)).payload)
            c:close()
        end)

        it("accepts a multi-byte character split across fragments", function()
            local c = open(1)
            c:send_frame("text", "caf\xC3", false)
            c:send_frame("continuation", "\xA9", true)
            assert.equal("text:caf\xC3\xA9", assert(c:read_frame(2)).payload)
            c:close()
        end)

        local bad = {
            { "invalid UTF-8 text", function(c) c:send_frame("text", "\xC3\x28") end, 1007 },
            { "invalid UTF-8 across fragments", function(c)
                c:send_frame("text", "ok\xE2\x82", false); c:send_frame("continuation", "\x28", true) end, 1007 },
            { "a text message ending inside a character", function(c)
                c:send_frame("text", "ok\xE2", false); c:send_frame("continuation", "\x82", true) end, 1007 },
            { "an oversize frame", function(c) c:send_frame("binary", ("x"):rep(1001)) end, 1009 },
            { "an oversize reassembled message", function(c)
                c:send_frame("binary", ("x"):rep(600), false)
                c:send_frame("continuation", ("x"):rep(600), true) end, 1009 },
            { "a message over max_message_size by its fragments' cost (6 bytes each)", function(c)
                c:send_frame("binary", ("x"):rep(960), false)
                for _ = 1, 6 do c:send_frame("continuation", "", false) end
                c:send_frame("continuation", "x", true) end, 1009 },
            { "a message in more than max_fragments frames", function(c)
                c:send_frame("text", "a", false)
                for _ = 1, 7 do c:send_frame("continuation", "", false) end end, 1009 },
            { "an unmasked client frame", function(c) c:send_frame("text", "hi", true, false) end, 1002 },
            { "opcode 3", function(c) c:send_raw("\x83\x80\0\0\0\0") end, 1002 },
            { "opcode 11", function(c) c:send_raw("\x8B\x80\0\0\0\0") end, 1002 },
            { "RSV1 without an extension", function(c) c:send_raw("\xC1\x80\0\0\0\0") end, 1002 },
            { "a fragmented ping", function(c) c:send_raw("\x09\x80\0\0\0\0") end, 1002 },
            { "a 126-byte ping", function(c)
                c:send_raw("\x89\xFE\0\126\0\0\0\0" .. ("\0"):rep(126)) end, 1002 },
            { "a continuation with nothing to continue", function(c) c:send_frame("continuation", "x") end, 1002 },
            { "a new message inside a fragmented one", function(c)
                c:send_frame("text", "a", false); c:send_frame("text", "b") end, 1002 },
            { "a non-minimal length", function(c) c:send_raw("\x81\xFE\0\5\0\0\0\0hello") end, 1002 },
            { "a 1-byte close payload", function(c) c:send_frame("close", "\3") end, 1002 },
            { "close code 1005 on the wire", function(c) c:send_frame("close", "\3\237") end, 1002 },
            { "close code 999", function(c) c:send_frame("close", "\3\231") end, 1002 },
            { "a close reason that is not UTF-8", function(c) c:send_frame("close", "\3\232\255") end, 1002 },
        }
        for _, b in ipairs(bad) do
            it("closes with " .. b[3] .. " on " .. b[1], function()
                local c = open(1)
                b[2](c)
                local code = c:read_close(2)
                assert.equal(b[3], code)
                assert.is_true(c:wait_eof(3), "the server keeps the connection open")
                c:close()
            end)
        end
    end)

    describe("closing", function()
        it("echoes the client's close code, then ends the TCP connection", function()
            local c = open(1)
            c:send_close(4321, "bye")
            local code, reason = c:read_close(2)
            assert.same({ 4321, "" }, { code, reason })
            assert.is_true(c:wait_eof(2))
            c:close()
            local _, last = nginx:get("/last_close")
            assert.equal("4321 closed", last)
        end)

        it("answers an empty close with an empty close (1005 to the handler)", function()
            local c = open(1)
            c:send_frame("close", "")
            local f = assert(c:read_frame(2))
            assert.same({ 0x8, "" }, { f.opcode, f.payload })
            assert.is_true(c:wait_eof(2))
            c:close()
            local _, last = nginx:get("/last_close")
            assert.equal("1005 closed", last)
        end)

        it("closes from the handler with the code it gives", function()
            local c = open(1)
            c:send_frame("text", "close-me")
            local code, reason = c:read_close(2)
            assert.same({ 4000, "asked" }, { code, reason })
            c:send_close(4000)
            assert.is_true(c:wait_eof(2))
            c:close()
        end)

        it("runs a handler written for resty.websocket.server (recv_frame, send_*, set_timeout)", function()
            local c = open(1, "/resty")
            c:send_frame("text", "hi")
            local f = assert(c:read_frame(2))
            assert.same({ 0x1, "echo hi" }, { f.opcode, f.payload })
            c:send_frame("binary", "\0\1")
            f = assert(c:read_frame(2))
            assert.same({ 0x2, "\0\1" }, { f.opcode, f.payload })
            c:send_frame("text", "pong me")
            assert.equal("echo pong me", assert(c:read_frame(2)).payload)
            f = assert(c:read_frame(2))
            assert.same({ 0xA, "p" }, { f.opcode, f.payload })
            -- nothing sent: recv_frame times out after 200 ms, the handler
            -- pings, and the socket stays open
            local t0 = socket.gettime()
            f = assert(c:read_frame(2))
            assert.same({ 0x9, "t1" }, { f.opcode, f.payload })
            assert.is_true(socket.gettime() - t0 > 0.1)
            c:send_frame("text", "still here")
            assert.equal("echo still here", assert(c:read_frame(2)).payload)
            -- the client's close comes back as reason, "close", code
            c:send_close(4000, "done")
            assert.equal(4000, (c:read_close(2)))
            c:close()
            local deadline = socket.gettime() + 2
            local result
            repeat
                local _, body = nginx:get("/resty_result")
                result = body ~= "nil" and body or nil
                if not result then socket.sleep(0.02) end
            until result or socket.gettime() > deadline
            assert.equal("close 4000 done", result)
        end)

        it("reaches a socket from another request (the send queue)", function()
            local c = open(3)
            local _, n = nginx:get("/push?user=u3&data=from-elsewhere")
            assert.equal("1", n)
            assert.equal("from-elsewhere", assert(c:read_frame(2)).payload)
            c:close()
        end)

        it("pings a silent peer, then closes it with 1001 after idle_timeout", function()
            local c = open(1, "/idle")
            local t0 = socket.gettime()
            local ping = assert(c:read_frame(2))
            assert.equal(0x9, ping.opcode)
            local code, reason = c:read_close(3)
            assert.equal(1001, code)
            assert.equal("", reason)
            local dt = socket.gettime() - t0
            assert.is_true(dt > 0.8 and dt < 2.5, "closed after " .. dt .. " s")
            assert.is_true(c:wait_eof(3))
            c:close()
        end)

        it("keeps a peer that answers pings", function()
            local c = open(1, "/idle")
            for _ = 1, 4 do -- 4 x 0.3 s: past idle_timeout
                local f = assert(c:read_frame(2))
                assert.equal(0x9, f.opcode)
                c:send_frame("pong", f.payload)
            end
            c:send_close(1000)
            assert.equal(1000, (c:read_close(2)))
            c:close()
        end)
    end)

    describe("abuse", function()
        it("closes a slow consumer with 1008 when its queue overflows; others are served meanwhile", function()
            local slow = open(2, "/slow")
            local other = open(3)
            -- enough to fill the socket buffers and 16 queued frames
            local c1 = nginx:send("/flood?n=400")
            local _, res = nginx:receive(c1)
            local sent, refused = res:match("^(%d+) (%d+)$")
            assert.is_true(tonumber(refused) > 0, res)
            assert.is_true(tonumber(sent) < 400)
            -- another socket is not held up by the stuck one
            local t0 = socket.gettime()
            local _, n = nginx:get("/push?user=u3&data=prompt")
            assert.equal("1", n)
            assert.equal("prompt", assert(other:read_frame(2)).payload)
            assert.is_true(socket.gettime() - t0 < 0.5)
            -- the slow one, once it reads, finds the close after what was
            -- already on its way
            local code, reason = slow:read_close(10)
            assert.same({ 1008, "send queue overflow" }, { code, reason })
            slow:close()
            other:close()
        end)

        it("survives clients that vanish mid-frame, mid-handshake and mid-message", function()
            local base_fds = fds()
            local base = count()
            local cases = {
                function(c) c:send_raw("\x81\xFE") end,                          -- half a header
                function(c) c:send_raw("\x81\x85\1\2\3\4he") end,                -- half a payload
                function(c) c:send_frame("text", "part", false) end,             -- half a message
                function(c) c:send_frame("text", "whole") end,                   -- nothing owed
            }
            for i = 1, 40 do
                local c = open(1)
                cases[i % #cases + 1](c)
                c:close()
            end
            -- and a handshake cut short
            for _ = 1, 10 do
                local s = socket.tcp()
                s:connect("127.0.0.1", nginx.port)
                s:send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                s:close()
            end
            assert.is_true(wait_count(base), "registry: " .. count())
            assert.equal(base_fds, fds())
            -- and it still serves
            local c = open(1)
            c:send_frame("text", "alive")
            assert.equal("text:alive", assert(c:read_frame(2)).payload)
            c:close()
        end)

        it("1,000 connects and disconnects leave no registry entry or fd behind", function()
            assert.is_true(wait_count(0))
            local base_fds = fds()
            for i = 1, 1000 do
                local c = open(i % 3 + 1)
                if i % 2 == 0 then
                    c:send_close(1000)
                    c:read_close(2)
                end
                c:close()
            end
            assert.is_true(wait_count(0), "registry still holds " .. count())
            assert.equal(base_fds, fds())
        end)
    end)

end)
