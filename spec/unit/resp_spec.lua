-- RESP: the one parser, fed bytes (resp.parser) or driven from a cosocket
-- (resp.reader), which must agree reply for reply; plain LuaJIT, no nginx
-- needed.
local resp = require "resty.passport.redis.resp"

local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end

-- A stand-in for an nginx cosocket over fixed bytes: receive() reads a
-- line the way nginx's "*l" does (ends at LF, drops CRs), receive(n)
-- exactly n bytes; "closed" when the bytes run out.
local function cosocket(bytes)
    local pos = 1
    local sock = { calls = 0 }
    function sock.receive(_, n)
        sock.calls = sock.calls + 1
        if n == nil then
            local nl = bytes:find("\n", pos, true)
            if not nl then
                pos = #bytes + 1
                return nil, "closed"
            end
            local line = bytes:sub(pos, nl - 1):gsub("\r", "")
            pos = nl + 1
            return line
        end
        if pos + n - 1 > #bytes then
            pos = #bytes + 1
            return nil, "closed"
        end
        local s = bytes:sub(pos, pos + n - 1)
        pos = pos + n
        return s
    end
    return sock
end

-- Every reply in bytes, fed in one piece.
local function parse_all(bytes, max)
    local p = resp.parser(max or 100)
    p:feed(bytes)
    local out = {}
    while true do
        local v, err = p:get()
        if v == nil then
            assert.is_nil(err)
            return out, p
        end
        out[#out + 1] = v
    end
end

-- The replies, in bytes one at a time.
local function parse_bytewise(bytes, max)
    local p = resp.parser(max or 100)
    local out = {}
    for i = 1, #bytes do
        p:feed(bytes:sub(i, i))
        while true do
            local v, err = p:get()
            if v == nil then
                assert.is_nil(err)
                break
            end
            out[#out + 1] = v
        end
    end
    return out
end

-- Every reply in bytes read off a cosocket.
local function read_all(bytes, max)
    local sock = cosocket(bytes)
    local r = resp.reader(max or 100)
    local out = {}
    while true do
        local v, err, kind = r:read(sock)
        if v == nil then
            assert.equal("closed", err)
            assert.equal("io", kind)
            return out
        end
        out[#out + 1] = v
    end
end

local EVERY = table.concat {
    "+OK\r\n",
    bulk("a\r\nb"),
    bulk(""),
    ":-42\r\n",
    "$-1\r\n",
    "*-1\r\n",
    "*0\r\n",
    "-ERR no such thing\r\n",
    "*3\r\n", bulk("message"), bulk("ch"), bulk("payload"),
    "*4\r\n", "$-1\r\n", "-WRONGTYPE x\r\n", "*-1\r\n", "*2\r\n:1\r\n*0\r\n",
}
local REPLIES = {
    "OK", "a\r\nb", "", -42, false, false, {}, { err = "ERR no such thing" },
    { "message", "ch", "payload" },
    { false, { err = "WRONGTYPE x" }, false, { 1, {} } },
}

describe("resp.encode", function()
    it("writes a command as an array of bulk strings", function()
        assert.equal("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n42\r\n", resp.encode("SET", "k", 42))
        assert.equal("*1\r\n$0\r\n\r\n", resp.encode(""))
    end)

    it("is read back by the parser", function()
        assert.same({ { "PUBLISH", "ch", "a\r\nb\0" } }, parse_all(resp.encode("PUBLISH", "ch", "a\r\nb\0")))
    end)
end)

describe("resp.parser", function()
    it("gives one representation: strings, numbers, false for null, {err=} for errors", function()
        assert.same(REPLIES, (parse_all(EVERY)))
    end)

    it("needs more bytes at every cut of a reply, then parses it whole", function()
        local msg = resp.encode("message", "ch", "a\r\nb")
        for i = 0, #msg - 1 do
            local p = resp.parser(100)
            p:feed(msg:sub(1, i))
            local v, err = p:get()
            assert.is_nil(v)
            assert.is_nil(err)
            p:feed(msg:sub(i + 1) .. ":7\r\n")
            assert.same({ "message", "ch", "a\r\nb" }, p:get())
            assert.is_false(p:idle())
            assert.equal(7, p:get())
            assert.is_nil(p:get())
            assert.is_true(p:idle())
        end
    end)

    it("says when a reply has been begun", function()
        local p = resp.parser(100)
        assert.is_true(p:idle())
        p:feed("*2\r\n:1\r\n")
        assert.is_nil(p:get())
        assert.is_false(p:idle())
        p:feed("$1\r\n")
        assert.is_nil(p:get())
        assert.is_false(p:idle())
        p:feed("x\r\n")
        assert.same({ 1, "x" }, p:get())
        assert.is_true(p:idle())
    end)

    it("parses the same replies from bytes in any split", function()
        assert.same(REPLIES, parse_bytewise(EVERY))
    end)

    it("refuses garbage, oversize values and deep nesting", function()
        local function err_of(bytes, max, what)
            local p = resp.parser(max or 10, what)
            p:feed(bytes)
            local v, err = p:get()
            assert.is_nil(v)
            return err
        end
        assert.equal("protocol error", err_of("!x\r\n"))
        assert.equal("protocol error", err_of("\r\n"))
        assert.equal("value of 11 bytes exceeds the limit (10)", err_of("$11\r\n"))
        assert.equal("value of 11 bytes exceeds max_value_size (10)", err_of("$11\r\n", 10, "max_value_size"))
        assert.equal("protocol error", err_of("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"))
        assert.same({ { { { { 1 } } } } }, (parse_all("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n")))
        assert.equal("protocol error", err_of("*65537\r\n"))
        assert.equal("protocol error", err_of(("x"):rep(100)))
        assert.equal("protocol error", err_of("$" .. ("1"):rep(70)))
        assert.equal("protocol error", err_of("$-7\r\n"))
        assert.equal("protocol error", err_of("$1.5\r\nx\r\n"))
        assert.equal("protocol error", err_of("$abc\r\nxyz\r\n"))
        assert.equal("protocol error", err_of(":x\r\n"))
        -- a bulk length that lies: the bytes after it are not CRLF
        assert.equal("protocol error", err_of("$2\r\nabXY"))
    end)

    it("skips an oversize value when asked (the subscriber), and goes on in step", function()
        local big = ("x"):rep(300)
        local stream = "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$300\r\n" .. big .. "\r\n"
                       .. "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nok\r\n"
        for cut = 1, #stream - 1, 37 do
            local p = resp.parser(100, nil, nil, true)
            local got = {}
            for _, part in ipairs { stream:sub(1, cut), stream:sub(cut + 1) } do
                p:feed(part)
                while true do
                    local v, err = p:get()
                    assert.is_nil(err)
                    if v == nil then break end
                    got[#got + 1] = v
                end
            end
            assert.same({ { "pmessage", "*", "ch", { oversize = 300 } }, { "message", "ch", "ok" } }, got)
            assert.is_true(p:idle())
        end
        -- without the option, the same value ends the stream
        local p = resp.parser(100)
        p:feed(stream)
        local v, err = p:get()
        assert.is_nil(v)
        assert.matches("exceeds", err)
    end)

    it("waits for a long status or error line, up to max_bulk", function()
        local long = "-NOPERM " .. ("x"):rep(90)
        local p = resp.parser(1000)
        p:feed(long)
        assert.same({}, { p:get() })
        p:feed("\r\n")
        assert.same({ err = long:sub(2) }, p:get())
        p = resp.parser(80)
        p:feed(long)
        assert.same({ nil, "protocol error" }, { p:get() })
    end)

    it("takes only the reply types asked for, before reading their bytes", function()
        local function first(bytes)
            local p = resp.parser(100, nil, resp.accept("$-"))
            p:feed(bytes)
            return { p:get() }
        end
        assert.same({ "x" }, first(bulk("x")))
        assert.same({ false }, first("$-1\r\n"))
        assert.same({ { err = "ERR" } }, first("-ERR\r\n"))
        assert.same({ nil, "unexpected reply" }, first("+OK\r\n"))
        assert.same({ nil, "unexpected reply" }, first(":1\r\n"))
        assert.same({ nil, "unexpected reply" }, first("*1\r\n"))
        assert.same({ nil, "unexpected reply" }, first("!oops\r\n"))
        -- inside arrays the types are not restricted
        local p = resp.parser(100, nil, resp.accept("*"))
        p:feed("*2\r\n:1\r\n+OK\r\n")
        assert.same({ 1, "OK" }, p:get())
    end)
end)

describe("resp.reader (cosocket)", function()
    it("reads what the parser parses, reply for reply", function()
        assert.same(REPLIES, read_all(EVERY))
    end)

    it("reads a GET's reply in two calls, and keeps no state between replies", function()
        local r = resp.reader(100, "max_value_size", resp.accept("$-"))
        local sock = cosocket(bulk("0123456789"))
        assert.equal("0123456789", r:read(sock))
        assert.equal(2, sock.calls)
        -- one reader, two reads interleaved (two requests, each yielding)
        local a, b = cosocket("*2\r\n:1\r\n:2\r\n"), cosocket("*1\r\n+x\r\n")
        r = resp.reader(100)
        local yielding = { receive = function(_, n)
            coroutine.yield()
            return a:receive(n)
        end }
        local co = coroutine.wrap(function() return r:read(yielding) end)
        co()                              -- waits for its first line
        assert.same({ "x" }, r:read(b))   -- meanwhile another reply, whole
        co() co()                         -- "*2", ":1"
        assert.same({ 1, 2 }, co())       -- ":2"
    end)

    it("tells I/O errors from protocol errors, and whether the reply had begun", function()
        local r = resp.reader(100)
        assert.same({ nil, "closed", "io", false }, { r:read(cosocket("")) })
        assert.same({ nil, "closed", "io", true }, { r:read(cosocket("$5\r\nab")) })
        assert.same({ nil, "closed", "io", true }, { r:read(cosocket("*2\r\n:1\r\n")) })
        assert.same({ nil, "protocol error", "protocol" }, { r:read(cosocket("!x\r\n")) })
        assert.same({ nil, "protocol error", "protocol" }, { r:read(cosocket("$2\r\nabXY")) })
        assert.same({ nil, "value of 200 bytes exceeds the limit (100)", "protocol" },
                    { r:read(cosocket("$200\r\n")) })
        assert.same({ nil, "unexpected reply", "protocol" },
                    { resp.reader(100, nil, resp.accept("$-")):read(cosocket("*1\r\n:1\r\n")) })
    end)

    it("agrees with the parser on random replies", function()
        math.randomseed(12)
        local function gen(depth)
            local r = math.random(depth < 3 and 7 or 5)
            if r == 1 then return "+s" .. math.random(1000) .. "\r\n" end
            if r == 2 then return ":" .. math.random(-5, 5) .. "\r\n" end
            if r == 3 then return "$-1\r\n" end
            if r == 4 then
                local s = {}
                for i = 1, math.random(0, 40) do s[i] = string.char(math.random(0, 255)) end
                return bulk(table.concat(s))
            end
            if r == 5 then return "-E" .. math.random(1000) .. "\r\n" end
            if r == 6 then return "*-1\r\n" end
            local n = math.random(0, 4)
            local parts = { "*" .. n .. "\r\n" }
            for i = 1, n do parts[i + 1] = gen(depth + 1) end
            return table.concat(parts)
        end
        for _ = 1, 50 do
            local parts = {}
            for i = 1, 20 do parts[i] = gen(0) end
            local bytes = table.concat(parts)
            local whole = parse_all(bytes)
            assert.equal(20, #whole)
            assert.same(whole, parse_bytewise(bytes))
            assert.same(whole, read_all(bytes))
        end
    end)
end)
