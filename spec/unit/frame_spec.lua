-- resty.passport.ws.frame: RFC 6455 frames, its examples first (section 5.7
-- and the handshake in 1.3), then every protocol error, UTF-8 edge cases
-- and close codes.
local frame = require "resty.passport.ws.frame"

local char = string.char
local rep = string.rep

local function bytes(...) return char(...) end

describe("frame.accept_key", function()
    it("answers the RFC 6455 section 1.3 example", function()
        -- the RFC's value, and Node's crypto agrees
        assert.equal("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                     frame.accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
    end)

    it("answers another key (checked against Node's crypto)", function()
        -- require("crypto").createHash("sha1").update("x3JJHMbDL1EzLkh9GBhXDw=="
        --   + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64")
        assert.equal("HSmrc0sMlYUkAGmm5OPpG2HaGWk=",
                     frame.accept_key("x3JJHMbDL1EzLkh9GBhXDw=="))
    end)

    it("refuses keys that are not 16 bytes of base64", function()
        for _, k in ipairs {
            "", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===",
            "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQAA",
            "dGhlIHNhbXBsZSBub25j*Q==", "dGhlIHNhbXBsZSBub25jZ-==",
            "dGhlIHNhbXBsZSBub25jZ\0==", "dGhlIHNhbXBsZSBub25=ZQ==",
        } do
            local v, err = frame.accept_key(k)
            assert.is_nil(v, k)
            assert.equal("invalid Sec-WebSocket-Key", err)
        end
        assert.is_nil(frame.accept_key(nil))
    end)
end)

describe("frame.parse_header, RFC 6455 section 5.7 examples", function()
    it("reads a single-frame unmasked text message", function()
        local s = bytes(0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f)
        local h = assert(frame.parse_header(s, false))
        assert.same({ fin = true, rsv = 0, opcode = frame.TEXT, masked = false,
                      payload_len = 5, header_len = 2 }, h)
        assert.equal("Hello", s:sub(h.header_len + 1))
        assert.equal(s, frame.encode("text", "Hello"))
    end)

    it("reads and unmasks a single-frame masked text message", function()
        local s = bytes(0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d,
                        0x51, 0x58)
        local h = assert(frame.parse_header(s, true))
        assert.is_true(h.masked)
        assert.equal(bytes(0x37, 0xfa, 0x21, 0x3d), h.mask)
        assert.equal(5, h.payload_len)
        assert.equal(6, h.header_len)
        assert.equal("Hello", frame.unmask(s:sub(7), h.mask))
        assert.equal(s, frame.encode("text", "Hello", true, h.mask))
    end)

    it("reads a fragmented unmasked text message", function()
        local a = bytes(0x01, 0x03, 0x48, 0x65, 0x6c)
        local b = bytes(0x80, 0x02, 0x6c, 0x6f)
        local h1 = assert(frame.parse_header(a))
        local h2 = assert(frame.parse_header(b))
        assert.is_false(h1.fin)
        assert.equal(frame.TEXT, h1.opcode)
        assert.is_true(h2.fin)
        assert.equal(frame.CONTINUATION, h2.opcode)
        assert.equal("Hel", a:sub(3))
        assert.equal(a, frame.encode("text", "Hel", false))
        assert.equal(b, frame.encode("continuation", "lo", true))
    end)

    it("reads an unmasked ping and a masked pong", function()
        local ping = bytes(0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f)
        local pong = bytes(0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f,
                           0x4d, 0x51, 0x58)
        assert.equal(frame.PING, frame.parse_header(ping).opcode)
        local h = assert(frame.parse_header(pong, true))
        assert.equal(frame.PONG, h.opcode)
        assert.equal(ping, frame.encode("ping", "Hello"))
        assert.equal(pong, frame.encode(frame.PONG, "Hello", true, h.mask))
    end)

    it("reads a 256-byte binary message (16-bit length)", function()
        local s = frame.encode("binary", rep("\0", 256))
        assert.equal(bytes(0x82, 0x7E, 0x01, 0x00), s:sub(1, 4))
        local h = assert(frame.parse_header(s))
        assert.equal(256, h.payload_len)
        assert.equal(4, h.header_len)
        assert.equal(260, #s)
    end)

    it("reads a 64 KiB binary message (64-bit length)", function()
        local s = frame.encode("binary", rep("x", 65536))
        assert.equal(bytes(0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0), s:sub(1, 10))
        local h = assert(frame.parse_header(s))
        assert.equal(65536, h.payload_len)
        assert.equal(10, h.header_len)
    end)

    it("uses the shortest length at each boundary", function()
        for _, c in ipairs {
            { 0, 2 }, { 125, 2 }, { 126, 4 }, { 65535, 4 }, { 65536, 10 },
        } do
            local s = frame.encode("binary", rep("a", c[1]), true, "abcd")
            local h = assert(frame.parse_header(s, true))
            assert.equal(c[1], h.payload_len)
            assert.equal(c[2] + 4, h.header_len)
            assert.equal(rep("a", c[1]), frame.unmask(s:sub(h.header_len + 1),
                                                      "abcd"))
        end
    end)

    it("reads a length near 2^53 from the header alone", function()
        local s = bytes(0x82, 0x7F, 0x00, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                        0xFF)
        local h = assert(frame.parse_header(s))
        assert.equal(2 ^ 53 - 1, h.payload_len)
    end)
end)

describe("frame.parse_header with partial input", function()
    it("says how many more bytes it needs", function()
        local s = frame.encode("binary", rep("x", 70000), true, "\1\2\3\4")
        -- 2 bytes, then 8 length bytes, then 4 mask bytes
        local want = { [0] = 2, 1, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1 }
        for n = 0, 13 do
            local v, what, more = frame.parse_header(s:sub(1, n), true)
            assert.is_nil(v)
            assert.equal("need", what)
            assert.equal(want[n], more, "after " .. n .. " bytes")
        end
        assert.equal(14, frame.parse_header(s:sub(1, 14), true).header_len)
    end)

    it("refuses what two bytes already show without waiting", function()
        local _, err = frame.parse_header(bytes(0x83, 0xFF))
        assert.equal("unknown opcode", err)
        _, err = frame.parse_header(bytes(0x82, 0x7F), true)
        assert.equal("client frame not masked", err)
    end)
end)

describe("frame.client_header (the socket's read loop)", function()
    it("reads a masked frame without a table", function()
        local s = frame.encode("text", "Hello", true, "\1\2\3\4")
        local opcode, fin, len, mask, header_len = frame.client_header(s, 1000)
        assert.same({ frame.TEXT, true, 5, "\1\2\3\4", 6 }, { opcode, fin, len, mask, header_len })
        assert.equal("Hello", frame.unmask(s:sub(header_len + 1), mask))
    end)

    it("says need, as parse_header does", function()
        local s = frame.encode("binary", rep("x", 70000), true, "\1\2\3\4")
        assert.same({ nil, "need", 12 }, { frame.client_header(s:sub(1, 2), 2 ^ 53 - 1) })
    end)

    it("gives each error with the close code to answer it with", function()
        assert.same({ nil, "frame too large", frame.CLOSE_TOO_BIG },
                    { frame.client_header(bytes(0x82, 0x85), 4) })
        assert.same({ nil, "client frame not masked", frame.CLOSE_PROTOCOL_ERROR },
                    { frame.client_header(bytes(0x81, 0x00), 10) })
        assert.same({ nil, "unknown opcode", 1002 }, { frame.client_header(bytes(0x83, 0x80), 10) })
    end)
end)

describe("frame.parse_header protocol errors", function()
    local function err_of(s, require_mask, max_len, rsv)
        local v, err = frame.parse_header(s, require_mask, max_len, rsv)
        assert.is_nil(v)
        return err
    end

    it("refuses reserved bits without an extension", function()
        for _, b0 in ipairs { 0xC1, 0xA1, 0x91, 0xF1 } do
            assert.equal("reserved bits set", err_of(bytes(b0, 0x00)))
        end
        -- RSV1 allowed (permessage-deflate), RSV2 still refused
        local h = assert(frame.parse_header(bytes(0xC1, 0x00), false, nil, 4))
        assert.equal(4, h.rsv)
        assert.equal("reserved bits set", err_of(bytes(0xE1, 0x00), false,
                                                 nil, 4))
    end)

    it("refuses opcodes 3-7 and 11-15", function()
        for op = 0, 15 do
            local err = select(2, frame.parse_header(bytes(0x80 + op, 0)))
            if (op >= 3 and op <= 7) or op >= 11 then
                assert.equal("unknown opcode", err, "opcode " .. op)
            else
                assert.is_nil(err, "opcode " .. op)
            end
        end
    end)

    it("refuses fragmented control frames", function()
        for _, op in ipairs { 0x8, 0x9, 0xA } do
            assert.equal("invalid control frame", err_of(bytes(op, 0x00)))
        end
    end)

    it("refuses control frames over 125 bytes", function()
        assert(frame.parse_header(bytes(0x89, 0x7D) .. rep("x", 125)))
        assert.equal("invalid control frame", err_of(bytes(0x89, 0x7E, 0, 126)))
        assert.equal("invalid control frame",
                     err_of(bytes(0x88, 0x7F, 0, 0, 0, 0, 0, 0, 0, 126)))
        -- even a 16-bit encoding of a small length
        assert.equal("invalid control frame", err_of(bytes(0x8A, 0x7E, 0, 5)))
    end)

    it("refuses non-minimal 16-bit and 64-bit lengths", function()
        assert.equal("invalid payload length", err_of(bytes(0x82, 0x7E, 0, 0)))
        assert.equal("invalid payload length", err_of(bytes(0x82, 0x7E, 0, 125)))
        assert(frame.parse_header(bytes(0x82, 0x7E, 0, 126)))
        assert.equal("invalid payload length",
                     err_of(bytes(0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5)))
        assert.equal("invalid payload length",
                     err_of(bytes(0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF)))
        assert(frame.parse_header(bytes(0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0)))
    end)

    it("refuses a 64-bit length with the top bit set", function()
        assert.equal("invalid payload length",
                     err_of(bytes(0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0)))
        assert.equal("invalid payload length",
                     err_of(bytes(0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF)))
    end)

    it("refuses unmasked client frames only when asked", function()
        local s = bytes(0x81, 0x00)
        assert.equal("client frame not masked", err_of(s, true))
        assert(frame.parse_header(s, false))
    end)

    it("refuses payloads over max_len", function()
        local s = frame.encode("binary", rep("x", 1000))
        assert.equal("frame too large", err_of(s, false, 999))
        assert.equal(1000, frame.parse_header(s, false, 1000).payload_len)
        assert.equal("frame too large", err_of(bytes(0x82, 0x01), false, 0))
        -- decided before the mask bytes arrive
        assert.equal("frame too large",
                     err_of(bytes(0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0), true,
                            65535))
    end)

    it("maps errors to close codes", function()
        assert.equal(1009, frame.close_code_for("frame too large"))
        assert.equal(1007, frame.close_code_for("invalid UTF-8"))
        assert.equal(1002, frame.close_code_for("unknown opcode"))
    end)

    it("raises on misuse", function()
        assert.has_error(function() frame.parse_header(nil) end)
        assert.has_error(function() frame.parse_header("", false, -1) end)
        assert.has_error(function() frame.parse_header("", false, 2 ^ 60) end)
        assert.has_error(function() frame.parse_header("", false, 1.5) end)
    end)
end)

describe("frame.unmask", function()
    local key = bytes(0x37, 0xfa, 0x21, 0x3d)

    it("is its own inverse", function()
        local s = "The quick brown fox jumps over the lazy dog \0\255"
        assert.are_not.equal(s, frame.unmask(s, key))
        assert.equal(s, frame.unmask(frame.unmask(s, key), key))
    end)

    it("unmasks a payload in pieces at any offset", function()
        local plain = {}
        for i = 1, 300 do plain[i] = char(i % 256) end
        plain = table.concat(plain)
        local masked = frame.unmask(plain, key)
        for _, cut in ipairs { { 1, 2 }, { 3, 17 }, { 5, 8 }, { 7, 299 } } do
            local a, b = cut[1], cut[2]
            local out = frame.unmask(masked:sub(1, a), key, 0)
                .. frame.unmask(masked:sub(a + 1, b), key, a)
                .. frame.unmask(masked:sub(b + 1), key, b)
            assert.equal(plain, out)
        end
    end)

    it("masks byte i with key byte i mod 4", function()
        local s = frame.unmask(rep("\0", 11), "abcd", 2)
        assert.equal("cdabcdabcda", s)
        assert.equal("", frame.unmask("", "abcd"))
    end)

    it("raises on misuse", function()
        assert.has_error(function() frame.unmask("x", "abc") end)
        assert.has_error(function() frame.unmask(nil, "abcd") end)
        assert.has_error(function() frame.unmask("x", "abcd", -1) end)
    end)
end)

describe("frame.encode", function()
    it("refuses what it must never send", function()
        assert.has_error(function() frame.encode(3, "") end)
        assert.has_error(function() frame.encode(2 ^ 40, "") end)
        assert.has_error(function() frame.encode(-1, "") end)
        assert.has_error(function() frame.encode("nope", "") end)
        assert.has_error(function() frame.encode("ping", rep("x", 126)) end)
        assert.has_error(function() frame.encode("close", "", false) end)
        assert.has_error(function() frame.encode("text", "x", true, "abc") end)
        assert.has_error(function() frame.encode("text", 42) end)
    end)

    it("sends 125-byte control frames", function()
        local s = frame.encode("pong", rep("x", 125))
        assert.equal(bytes(0x8A, 0x7D), s:sub(1, 2))
    end)
end)

describe("frame UTF-8 validation", function()
    local valid = {
        "", "plain ASCII", "\0",
        "\xC2\x80", "\xDF\xBF",                 -- 2-byte bounds
        "\xE0\xA0\x80", "\xEF\xBF\xBF",         -- 3-byte bounds
        "\xED\x9F\xBF", "\xEE\x80\x80",         -- either side of surrogates
        "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF", -- 4-byte bounds
        "\xEF\xBB\xBF", "\xEF\xBF\xBE",         -- BOM and U+FFFE are fine
        "κόσμε", "Hello-µ@ßöäüàá-UTF-8!!",
    }
    local invalid = {
        "\x80", "\xBF", "\x80\xBF",               -- lone continuations
        "\xC0\x80", "\xC1\xBF",                   -- overlong 2-byte
        "\xE0\x80\x80", "\xE0\x9F\xBF",           -- overlong 3-byte
        "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF",   -- overlong 4-byte
        "\xED\xA0\x80", "\xED\xBF\xBF",           -- surrogates
        "\xED\xA0\x80\xED\xB0\x80",               -- surrogate pair
        "\xF4\x90\x80\x80", "\xF7\xBF\xBF\xBF",   -- past U+10FFFF
        "\xF5", "\xF8\x88\x80\x80\x80", "\xFE", "\xFF",
        "\xC2\x41", "\xE1\x80\x41", "\xF1\x80\x80\x41", -- cut short
        "\xC2\xC2\x80",
        "κόσμε\xED\xA0\x80edited",
    }

    it("accepts the boundaries of each sequence length", function()
        for _, s in ipairs(valid) do
            assert.is_true(frame.utf8_valid(s), s)
        end
    end)

    it("refuses overlongs, surrogates, past U+10FFFF and bad bytes", function()
        for _, s in ipairs(invalid) do
            local ok, err = frame.utf8_valid(s)
            assert.is_nil(ok, s)
            assert.equal("invalid UTF-8", err)
        end
    end)

    it("reports a sequence cut off at the end as incomplete", function()
        for _, s in ipairs { "\xC2", "\xE0\xA0", "\xF0\x90\x80", "ab\xF4" } do
            local ok, err = frame.utf8_valid(s)
            assert.is_nil(ok)
            assert.equal("incomplete UTF-8 sequence", err)
        end
    end)

    it("refuses an invalid byte past 8-byte ASCII runs", function()
        assert.is_nil(frame.utf8_valid(rep("a", 8) .. "\xFF"))
        assert.is_nil(frame.utf8_valid(rep("a", 16) .. "\xC0\x80" .. rep("b", 8)))
        assert.is_nil(frame.utf8_valid("\xC2" .. rep("a", 8)))
        assert.is_true(frame.utf8_valid(rep("a", 15) .. "\xF0\x9F\x98\x80"
                                        .. rep("z", 9)))
    end)

    it("validates messages split at every byte, like one-shot", function()
        for _, list in ipairs { valid, invalid } do
            for _, s in ipairs(list) do
                local whole = frame.utf8_valid(s) == true
                for cut = 0, #s do
                    local v = frame.utf8()
                    local ok = v:feed(s:sub(1, cut)) and v:feed(s:sub(cut + 1))
                               and v:finish()
                    assert.equal(whole, ok == true, s .. " cut at " .. cut)
                end
            end
        end
    end)

    it("validates byte by byte and sticks on invalid input", function()
        local v = frame.utf8()
        for c in ("\xF0\x9F\x98"):gmatch(".") do assert.is_true(v:feed(c)) end
        local ok, err = v:finish()
        assert.is_nil(ok)
        assert.equal("incomplete UTF-8 sequence", err)
        assert.is_true(v:feed("\x80"))
        assert.is_true(v:finish())
        assert.is_nil(v:feed("\xED\xA0"))
        assert.is_nil(v:feed("a"))
        assert.equal("invalid UTF-8", select(2, v:finish()))
        v:reset()
        assert.is_true(v:feed("a"))
        assert.is_true(v:finish())
    end)
end)

describe("frame close payloads", function()
    it("reads an empty payload as 1005 without a reason", function()
        assert.same({ 1005, "" }, { frame.parse_close("") })
    end)

    it("refuses a 1-byte payload", function()
        assert.same({ nil, "invalid close payload" },
                    { frame.parse_close("\3") })
    end)

    it("accepts exactly the codes npm ws accepts (RFC 6455 7.4 + 1012-1014)", function()
        local function ok(code)
            return frame.parse_close(char(math.floor(code / 256), code % 256))
                   == code
        end
        for code = 0, 5100 do
            local want = (code >= 1000 and code <= 1003)
                         or (code >= 1007 and code <= 1014)
                         or (code >= 3000 and code <= 4999)
            assert.equal(want, ok(code), "code " .. code)
        end
        assert.is_false(ok(65535))
    end)

    it("reads the reason and checks it is UTF-8", function()
        assert.same({ 1000, "bye κόσμε" },
                    { frame.parse_close("\3\232bye κόσμε") })
        assert.same({ nil, "invalid UTF-8" },
                    { frame.parse_close("\3\232\xC0\x80") })
        assert.same({ nil, "invalid UTF-8" },
                    { frame.parse_close("\3\232\xE2\x82") })
    end)

    it("names the close codes and says which may be sent", function()
        assert.same({ 1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009 },
                    { frame.CLOSE_NORMAL, frame.CLOSE_GOING_AWAY, frame.CLOSE_PROTOCOL_ERROR,
                      frame.CLOSE_NO_STATUS, frame.CLOSE_ABNORMAL, frame.CLOSE_INVALID_DATA,
                      frame.CLOSE_POLICY, frame.CLOSE_TOO_BIG })
        assert.is_true(frame.close_code_ok(4401))
        for _, c in ipairs { 1005, 1006, 999, "1000" } do
            assert.is_false(frame.close_code_ok(c))
        end
    end)

    it("builds payloads and refuses codes that must not be sent", function()
        assert.equal("\3\232", frame.close_payload(1000))
        assert.equal("\15\160bye", frame.close_payload(4000, "bye"))
        assert.equal("", frame.close_payload())
        assert.equal(4401, frame.parse_close(frame.close_payload(4401, "x")))
        for _, c in ipairs { 999, 1004, 1005, 1006, 1015, 2999, 5000, "1000" } do
            assert.has_error(function() frame.close_payload(c) end)
        end
        assert.has_error(function() frame.close_payload(1000, rep("x", 124)) end)
        assert.equal(125, #frame.close_payload(1000, rep("x", 123)))
        assert.has_error(function() frame.close_payload(1000, "\xFF") end)
        assert.has_error(function() frame.close_payload(nil, "why") end)
    end)
end)
