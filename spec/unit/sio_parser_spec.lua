-- resty.passport.socketio.parser: the decoder rule by rule (each of
-- socket.io-parser's errors and ours), binary packets across messages, the
-- encoders, and two random tests: random packets must survive encode and
-- decode (seeded; SIO_PARSER_SEED replays a run), and random bytes must
-- never make the decoder raise.  spec/compat/sio_parser_diff_spec.lua
-- checks the same decoder against the real socket.io-parser.
local bit = require "bit"
local cjson = require "cjson.safe"
local parser = require "resty.passport.socketio.parser"

local char = string.char
local concat = table.concat
local rep = string.rep
local null = cjson.null

local function decode(msg)
    return parser.decoder():add(msg)
end

-- The error a call raises, with the position it names.
local function raised(f, ...)
    local ok, err = pcall(f, ...)
    assert.is_false(ok)
    return err
end

-- Deep equality, Binary values by their bytes.
local function same(a, b)
    if a == b then return true end
    if type(a) ~= "table" or type(b) ~= "table" then return false end
    local ba, bb = parser.is_binary(a), parser.is_binary(b)
    if ba or bb then return ba and bb and a.data == b.data end
    for k, v in pairs(a) do
        if not same(v, b[k]) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end

describe("socketio.parser", function()
    describe("constants and binary values", function()
        it("numbers the packet types as socket.io does", function()
            assert.same({ 0, 1, 2, 3, 4, 5, 6 }, { parser.CONNECT, parser.DISCONNECT, parser.EVENT, parser.ACK,
                                                  parser.CONNECT_ERROR, parser.BINARY_EVENT, parser.BINARY_ACK })
            assert.equal("0.1.0", parser._VERSION)
        end)

        it("wraps bytes in a Binary", function()
            local b = parser.binary("\0\1\255")
            assert.equal(parser.Binary, getmetatable(b))
            assert.equal("\0\1\255", b.data)
            assert.equal("\0\1\255", tostring(b))
            assert.equal(3, getmetatable(b).__len(b))
            assert.is_true(parser.is_binary(b))
            for _, v in ipairs { "x", {}, { data = "x" }, 1, false } do
                assert.is_false(parser.is_binary(v))
            end
            assert.is_false(parser.is_binary(nil))
        end)

        it("refuses a binary of anything but a string", function()
            local err = raised(function() parser.binary(5) end)
            assert.matches("sio_parser_spec.lua:%d+: bad argument #1 to 'binary' %(string expected, got number%)", err)
        end)
    end)

    describe("decoder options", function()
        it("takes max_attachments and max_depth", function()
            local dec = parser.decoder { max_attachments = 2, max_depth = 3 }
            assert.same({ nil, "too many attachments" }, { dec:add('53-["a"]') })
            assert.is_nil(dec:add('52-["a"]'))
            dec:reset()
            assert.is_table(dec:add('2["a",[[1]]]'))
            assert.same({ nil, "invalid payload" }, { dec:add('2["a",[[[1]]]]') })
            assert.is_table(parser.decoder({}):add("0"))
        end)

        it("refuses bad options", function()
            for _, o in ipairs {
                { "x", "bad argument #1 to 'decoder' %(table expected, got string%)" },
                { { max_attachments = -1 }, "bad option 'max_attachments'" },
                { { max_attachments = 1.5 }, "bad option 'max_attachments'" },
                { { max_attachments = "10" }, "bad option 'max_attachments'" },
                { { max_depth = 0 }, "bad option 'max_depth'" },
                { { max_depth = 1001 }, "bad option 'max_depth'" },
                { { max_depth = 0 / 0 }, "bad option 'max_depth'" },
            } do
                assert.matches("sio_parser_spec.lua:%d+: " .. o[2], raised(function() parser.decoder(o[1]) end))
            end
        end)

        it("refuses a message that is not a string", function()
            local dec = parser.decoder()
            assert.matches("bad argument #1 to 'add' %(string expected, got nil%)",
                           raised(function() dec:add(nil) end))
        end)
    end)

    describe("decoding text packets", function()
        local function ok(msg, want)
            local p, err = decode(msg)
            assert(p, ("%q: %s"):format(msg, tostring(err)))
            assert.is_nil(err)
            want.nsp = want.nsp or "/"
            assert(same(want, p), ("%q: got %s"):format(msg, tostring(cjson.encode(p))))
        end

        local function bad(msg, why)
            local p, err = decode(msg)
            assert(p == nil and err == why, ("%q: want %q, got %s %s"):format(msg, why, tostring(p), tostring(err)))
        end

        it("reads the protocol's examples", function()
            ok("0", { type = 0 })
            ok('0{"token":"123"}', { type = 0, data = { token = "123" } })
            ok("0/admin,", { type = 0, nsp = "/admin" })
            ok('0/admin,{"token":"123"}', { type = 0, nsp = "/admin", data = { token = "123" } })
            ok('4{"message":"Not authorized"}', { type = 4, data = { message = "Not authorized" } })
            ok('2["foo"]', { type = 2, data = { "foo" } })
            ok('2/admin,["bar"]', { type = 2, nsp = "/admin", data = { "bar" } })
            ok('212["foo"]', { type = 2, id = 12, data = { "foo" } })
            ok('3/admin,13["bar"]', { type = 3, nsp = "/admin", id = 13, data = { "bar" } })
            ok("1/admin,", { type = 1, nsp = "/admin" })
        end)

        it("reads the type: one ASCII digit 0-6", function()
            bad("7", "unknown packet type 7")
            bad('9["a"]', "unknown packet type 9")
            bad("x", "unknown packet type NaN")
            bad("", "unknown packet type NaN")   -- socket.io: CONNECT (Number("") is 0)
            bad(" 0", "unknown packet type NaN") -- socket.io: CONNECT as well
            bad("\194\160{}", "unknown packet type NaN")
        end)

        it("reads the namespace from '/' up to ',' or the end", function()
            ok("2/a,", { type = 2, nsp = "/a" })
            ok("2/a", { type = 2, nsp = "/a" })
            ok('2/a["x"]', { type = 2, nsp = '/a["x"]' })  -- no ',': all of it
            ok('2//,["x"]', { type = 2, nsp = "//", data = { "x" } })
            ok("2/", { type = 2 })
            ok("2/,", { type = 2 })
            ok('2/é😀,1["x"]', { type = 2, nsp = "/é😀", id = 1, data = { "x" } })
            bad('2/a,b,["x"]', "invalid payload")
            bad('2,["a"]', "invalid payload")
        end)

        it("reads the ack id: 1 to 15 ASCII digits", function()
            ok('21["a"]', { type = 2, id = 1, data = { "a" } })
            ok('2007["a"]', { type = 2, id = 7, data = { "a" } })
            ok("21", { type = 2, id = 1 })
            ok("2/a,42", { type = 2, nsp = "/a", id = 42 })
            ok('0/a,1{}', { type = 0, nsp = "/a", id = 1, data = {} })
            ok("17", { type = 1, id = 7 })
            ok('2999999999999999["a"]', { type = 2, id = 999999999999999, data = { "a" } })
            bad('21234567890123456["a"]', "invalid ack id")
            bad('20000000000000001["a"]', "invalid ack id")
            bad('21a["a"]', "invalid payload")
        end)

        it("refuses whitespace where the id or the payload starts", function()
            -- socket.io takes it as id digits: '2 ["a"]' has id 0 there
            for _, m in ipairs { '2 ["a"]', '2\t["a"]', '2\n["a"]', '2\r["a"]', '21 ["a"]', '21 2["a"]', "2 ",
                                 '2/a, ["x"]', '4 "x"', '51- ["a"]', "0 {}" } do
                bad(m, "invalid payload")
            end
        end)

        it("takes whitespace inside and after the JSON", function()
            ok('2[ "a" , 1 ]', { type = 2, data = { "a", 1 } })
            ok('2["a"]\r\n', { type = 2, data = { "a" } })
        end)

        it("checks CONNECT's payload: an object", function()
            ok("0{}", { type = 0, data = {} })
            ok('0{"a":1,"a":2}', { type = 0, data = { a = 2 } })
            for _, m in ipairs { "0[]", "0[1]", '0"x"', "0null", "01.5", "0true", "0{", "0{}x" } do
                bad(m, "invalid payload")
            end
        end)

        it("checks DISCONNECT's payload: none", function()
            ok("1", { type = 1 })
            for _, m in ipairs { "1{}", "1/a,{}", "1x", "1[]", '1"x"' } do bad(m, "invalid payload") end
        end)

        it("checks CONNECT_ERROR's payload: a string or an object", function()
            ok('4"x"', { type = 4, data = "x" })
            ok('4{"message":"no","data":{"a":1}}', { type = 4, data = { message = "no", data = { a = 1 } } })
            ok("4", { type = 4 })
            for _, m in ipairs { "4[]", "4null", "41.5", "4true" } do bad(m, "invalid payload") end
        end)

        it("checks EVENT's payload: a list led by a number or a non-reserved name", function()
            ok("2[1]", { type = 2, data = { 1 } })
            ok("2[-1.5]", { type = 2, data = { -1.5 } })
            ok('2[""]', { type = 2, data = { "" } })
            ok('2["Connect"]', { type = 2, data = { "Connect" } })
            ok('2["a",null,2,null]', { type = 2, data = { "a", null, 2, null } })
            ok("2", { type = 2 })
            local p = decode('2["a",null,null]')
            assert.equal(3, #p.data)
            for _, m in ipairs { "2[]", "2{}", '2"a"', "2[null]", "2[true]", "2[[]]", "2[{}]", '2["connect"]',
                                 '2["connect_error"]', '2["disconnect"]', '2["disconnecting"]',
                                 '2["newListener"]', '2["removeListener"]' } do
                bad(m, "invalid payload")
            end
        end)

        it("checks ACK's payload: a list", function()
            ok("31[]", { type = 3, id = 1, data = {} })
            ok('3["a"]', { type = 3, data = { "a" } })
            ok("3/a,7[null]", { type = 3, nsp = "/a", id = 7, data = { null } })
            for _, m in ipairs { "31{}", '31"x"', "31null", "3[" } do bad(m, "invalid payload") end
        end)

        it("reads JSON as JSON.parse does", function()
            ok('2["é😀\\u00e9\\ud83d\\ude00","a\\u0000b","a\\/b","\\t"]',
               { type = 2, data = { "é😀é😀", "a\0b", "a/b", "\t" } })
            ok('2["a",1e5,1E-5,-0,1.5e-300,12345678901234567890,0.1]',
               { type = 2, data = { "a", 1e5, 1e-5, 0, 1.5e-300, 12345678901234567890, 0.1 } })
            ok('2["x. y",{"n":1.25,".":"1."}]', { type = 2, data = { "x. y", { n = 1.25, ["."] = "1." } } })
            ok("2[1e400]", { type = 2, data = { math.huge } })   -- Infinity, as in JS
            for _, m in ipairs {
                '2["a",5.]', '2["a",-.5]', '2["a",1.e3]', '2["a",.5]', '2["a",01]', '2["a",-01]', '2["a",0x10]',
                '2["a",+1]', '2["a",NaN]', '2["a",Infinity]', '2["a",-Infinity]', '2["a"]\0', '2["a\0"]',
                '2["a\tb"]', '2["a\1b"]', '2["a\\x"]', "2['a']", '2["a",]', '2["a"', '2["a"]]', '2["a"]x',
                '2["a"]["b"]', '2["\\ud800"]', '2["\\udc00"]',
            } do
                bad(m, "invalid payload")
            end
        end)

        it("bounds the depth (max_depth, default 32)", function()
            ok('2["a",' .. rep("[", 31) .. rep("]", 31) .. "]", { type = 2, data = {
                "a", (function() local t = {} for _ = 1, 30 do t = { t } end return t end)() } })
            bad('2["a",' .. rep("[", 32) .. rep("]", 32) .. "]", "invalid payload")
            bad('0' .. rep('{"a":', 32) .. "{}" .. rep("}", 32), "invalid payload")
        end)

        it("reads binary attachment counts: 1 to 6 ASCII digits, within max_attachments", function()
            for _, c in ipairs {
                { '5-["a"]', "Illegal attachments" }, { '5["a"]', "Illegal attachments" },
                { '50-["a"]', "Illegal attachments" }, { "5", "Illegal attachments" },
                { "5-", "Illegal attachments" }, { "51", "Illegal attachments" },
                { '5 1-["a"]', "Illegal attachments" }, { '51e0-["a"]', "Illegal attachments" },
                { '50x1-["a"]', "Illegal attachments" }, { '5+1-["a"]', "Illegal attachments" },
                { '511-["a"]', "too many attachments" }, { '5999999-["a"]', "too many attachments" },
                { '51234567-["a"]', "too many attachments" }, { '50000001-["a"]', "too many attachments" },
            } do
                bad(c[1], c[2])
            end
            assert.is_nil(decode('510-["a"]'))
            assert.is_nil(decode('5000001-["a"]'))
            assert.is_nil(decode("61-[]"))
            -- still JSON and payload checks before any attachment
            bad("51-[]", "invalid payload")
            bad('51-["connect"]', "invalid payload")
            bad("61-{}", "invalid payload")
        end)

        it("leaves placeholders alone in a plain EVENT", function()
            ok('2["a",{"_placeholder":true,"num":0}]', { type = 2, data = { "a", { _placeholder = true, num = 0 } } })
        end)
    end)

    describe("decoding binary packets", function()
        local function ph(n) return '{"_placeholder":true,"num":' .. n .. "}" end

        it("waits for every attachment, then puts them in place at any depth", function()
            local dec = parser.decoder()
            local p, err = dec:add('52-/admin,7["up",' .. ph(0) .. ',{"x":[{"y":' .. ph(1) .. "}]}," .. ph(0) .. "]")
            assert.is_nil(p)
            assert.is_nil(err)
            p, err = dec:add("\0\1\2\255", true)
            assert.is_nil(p)
            assert.is_nil(err)
            p = assert(dec:add("", true))
            assert.equal(parser.EVENT, p.type)
            assert.equal("/admin", p.nsp)
            assert.equal(7, p.id)
            assert.equal("up", p.data[1])
            assert.is_true(parser.is_binary(p.data[2]))
            assert.equal("\0\1\2\255", p.data[2].data)
            assert.equal("", p.data[3].x[1].y.data)
            assert.equal(p.data[2], p.data[4])
            -- and the decoder is ready for the next packet
            assert.same({ type = 2, nsp = "/", data = { "next" } }, dec:add('2["next"]'))
        end)

        it("reports BINARY_ACK as ACK", function()
            local dec = parser.decoder()
            assert.is_nil(dec:add("61-3[" .. ph(0) .. "]"))
            local p = assert(dec:add("bytes", true))
            assert.equal(parser.ACK, p.type)
            assert.equal(3, p.id)
            assert.equal("bytes", p.data[1].data)
        end)

        it("takes a binary packet without payload, and unused attachments", function()
            local dec = parser.decoder()
            assert.is_nil(dec:add("51-"))
            assert.same({ type = 2, nsp = "/" }, dec:add("x", true))
            assert.is_nil(dec:add('51-["a"]'))
            assert.same({ type = 2, nsp = "/", data = { "a" } }, dec:add("unused", true))
        end)

        it("keeps objects that are not placeholders", function()
            local dec = parser.decoder()
            assert.is_nil(dec:add('51-["a",{"_placeholder":false,"num":0},{"_placeholder":"true","num":0},'
                                  .. '{"_placeholder":true,"num":0,"extra":1}]'))
            local p = assert(dec:add("x", true))
            assert.same({ _placeholder = false, num = 0 }, p.data[2])
            assert.same({ _placeholder = "true", num = 0 }, p.data[3])
            assert.equal("x", p.data[4].data)
        end)

        it("refuses a placeholder num that names no attachment", function()
            for _, num in ipairs { "1", "-1", '"0"', "0.5", "null", "1e0" } do
                local dec = parser.decoder()
                assert.is_nil(dec:add('51-["a",{"o":' .. ph(num) .. "}]"))
                assert.same({ nil, "illegal attachments" }, { dec:add("x", true) })
                -- reset: a text message is welcome again
                assert.is_table(dec:add('2["a"]'))
            end
            local dec = parser.decoder()
            assert.is_nil(dec:add('51-["a",{"_placeholder":true}]'))
            assert.same({ nil, "illegal attachments" }, { dec:add("x", true) })
        end)

        it("refuses text while reconstructing, and binary when not", function()
            local dec = parser.decoder()
            assert.same({ nil, "got binary data when not reconstructing a packet" }, { dec:add("x", true) })
            assert.is_nil(dec:add('52-["a",' .. ph(0) .. "," .. ph(1) .. "]"))
            assert.is_nil(dec:add("x", true))
            assert.same({ nil, "got plaintext data when reconstructing a packet" }, { dec:add('2["b"]') })
            -- the decoder was reset: the next attachment has no packet
            assert.same({ nil, "got binary data when not reconstructing a packet" }, { dec:add("y", true) })
            assert.is_nil(dec:add('51-["a",' .. ph(0) .. "]"))
            assert.is_table(dec:add("x", true))
            assert.same({ nil, "got binary data when not reconstructing a packet" }, { dec:add("y", true) })
        end)

        it("drops a partial packet on reset()", function()
            local dec = parser.decoder()
            assert.is_nil(dec:add('51-["a",' .. ph(0) .. "]"))
            dec:reset()
            assert.same({ nil, "got binary data when not reconstructing a packet" }, { dec:add("x", true) })
            assert.is_table(dec:add('2["a"]'))
        end)

        it("keeps the decoder usable after an error", function()
            local dec = parser.decoder()
            assert.same({ nil, "invalid payload" }, { dec:add("2[]") })
            assert.is_table(dec:add('2["a"]'))
        end)
    end)

    describe("encode", function()
        local function enc(p)
            local s, atts = parser.encode(p)
            assert(s, atts)
            return s, atts
        end

        it("writes packets as encodeAsString does", function()
            assert.equal("0", enc { type = 0 })
            assert.equal("0", enc { type = 0, nsp = "/" })
            assert.equal("0/admin,", enc { type = 0, nsp = "/admin" })
            assert.equal('0/admin,{"sid":"x"}', enc { type = 0, nsp = "/admin", data = { sid = "x" } })
            assert.equal("1/admin,", enc { type = 1, nsp = "/admin" })
            assert.equal('2["a",1]', enc { type = 2, data = { "a", 1 } })
            assert.equal('2/a,12["a"]', enc { type = 2, nsp = "/a", id = 12, data = { "a" } })
            assert.equal("312[]", enc { type = 3, id = 12, data = {} })   -- an ACK's data is a list
            assert.equal('4{"message":"no"}', enc { type = 4, data = { message = "no" } })
            assert.equal('4"no"', enc { type = 4, data = "no" })
            assert.equal("2", enc { type = 2, data = null })              -- null: no payload, as in JS
            assert.equal("29007199254740992", enc { type = 2, id = 2 ^ 53 })
        end)

        it("writes numbers exactly, integers as integers", function()
            assert.equal('2["n",1,-7,9007199254740992,-9007199254740992,0.5,0.1,0.30000000000000004,'
                         .. '0.3333333333333333,1e+300,4.9406564584125e-324,1.7976931348623157e+308,100000000000000]',
                         enc { type = 2, data = { "n", 1, -7, 2 ^ 53, -2 ^ 53, 0.5, 0.1, 0.1 + 0.2, 1 / 3, 1e300,
                                                  5e-324, 1.7976931348623157e308, 1e14 } })
            -- in nested tables too, whichever encoder writes them
            assert.equal('2["n",{"a":[9007199254740994]}]', enc { type = 2, data = { "n", { a = { 2 ^ 53 + 2 } } } })
            assert.equal('2["n",{"a":[0.1,1.5]}]', enc { type = 2, data = { "n", { a = { 0.1, 1.5 } } } })
        end)

        it("follows cjson's rules for tables", function()
            assert.equal('2["a",{},[1,null,3]]', enc { type = 2, data = { "a", {}, { 1, nil, 3 } } })
            assert.equal('0{"k":"a\\/b"}', enc { type = 0, data = { k = "a/b" } })   -- \/ is valid JSON
            local s = enc { type = 0, data = { [1] = "x", k = 2 } }
            assert.is_true(s == '0{"1":"x","k":2}' or s == '0{"k":2,"1":"x"}')
        end)

        it("turns packets holding Binary values into BINARY_EVENT / BINARY_ACK", function()
            local data = { "up", parser.binary("A"), { x = { parser.binary("B") } }, { parser.binary("C") } }
            local s, atts = enc { type = 2, nsp = "/admin", id = 3, data = data }
            assert.equal('53-/admin,3["up",{"_placeholder":true,"num":0},{"x":[{"_placeholder":true,"num":1}]},'
                         .. '[{"_placeholder":true,"num":2}]]', s)
            assert.same({ "A", "B", "C" }, atts)
            -- the caller's table is untouched
            assert.is_true(parser.is_binary(data[2]) and parser.is_binary(data[3].x[1]))
            s, atts = enc { type = 3, id = 9, data = { parser.binary("") } }
            assert.equal('61-9[{"_placeholder":true,"num":0}]', s)
            assert.same({ "" }, atts)
            assert.is_nil(select(2, enc { type = 2, data = { "no binary" } }))
        end)

        it("returns nil, err for what cannot be JSON", function()
            for _, c in ipairs {
                { { "a", print }, "type not supported" },
                { { "a", 0 / 0 }, "must not be NaN or Inf" },
                { { "a", math.huge }, "must not be NaN or Inf" },
                { { "a", { [1] = 1, [100] = 2 } }, "excessively sparse array" },
                { { "a", { [true] = 1 } }, "table key must be a number or string" },
                { { "a", { x = { parser.binary("b"), coroutine.create(print) } } }, "type not supported" },
                { { "a", { 2 ^ 53 + 0.5, print } }, "type not supported" },
            } do
                local s, err = parser.encode { type = 2, data = c[1] }
                assert.is_nil(s)
                assert.matches(c[2], err, 1, true)
            end
            local cyclic = { "a" }
            cyclic[2] = cyclic
            local s, err = parser.encode { type = 2, data = cyclic }
            assert.is_nil(s)
            assert.matches("excessive nesting", err, 1, true)
            s, err = parser.encode { type = 4, data = { message = parser.binary("x") } }
            assert.is_nil(s)
            assert.equal("binary data is only sent in EVENT and ACK packets", err)
        end)

        it("refuses bad packets", function()
            for _, c in ipairs {
                { nil, "table expected, got nil" },
                { { type = 5, data = {} }, "packet.type 0 to 4 expected" },
                { { type = "2" }, "packet.type 0 to 4 expected" },
                { { type = 2, nsp = "admin" }, "packet.nsp" },
                { { type = 2, nsp = "/a,b" }, "packet.nsp" },
                { { type = 2, id = -1 }, "packet.id" },
                { { type = 2, id = 1.5 }, "packet.id" },
                { { type = 2, id = 2 ^ 53 + 2 }, "packet.id" },
            } do
                local err = raised(function() parser.encode(c[1]) end)
                assert.matches("sio_parser_spec.lua:%d+: bad argument #1 to 'encode' %(", err)
                assert.matches(c[2], err, 1, true)
            end
        end)
    end)

    describe("encode_event and encode_ack", function()
        it("write [event, args[1..n]] with nil holes as null", function()
            assert.equal('2["hello"]', parser.encode_event(nil, nil, "hello", 0))
            assert.equal('2["hello"]', parser.encode_event("/", nil, "hello", 0, {}))
            assert.equal('2/chat,5["msg",1,null,"x",null]',
                         parser.encode_event("/chat", 5, "msg", 4, { 1, nil, "x" }))
            assert.equal('2[7,true,false,{"a":0.1},[1,2],{}]',
                         parser.encode_event(nil, nil, 7, 5, { true, false, { a = 0.1 }, { 1, 2 }, {} }))
            assert.equal('2["a",null]', parser.encode_event(nil, nil, "a", 1, { null }))
            assert.equal('312[]', parser.encode_ack(nil, 12, 0))
            assert.equal('3/chat,12["ok",null]', parser.encode_ack("/chat", 12, 2, { "ok" }))
            assert.equal('3/chat,12[9007199254740992,0.1]', parser.encode_ack("/chat", 12, 2, { 2 ^ 53, 0.1 }))
        end)

        it("write BINARY_EVENT / BINARY_ACK when args hold Binary values", function()
            local s, atts = parser.encode_event("/f", 1, "file", 3,
                                                { parser.binary("one"), { blob = { parser.binary("two") } }, "x" })
            assert.equal('52-/f,1["file",{"_placeholder":true,"num":0},{"blob":[{"_placeholder":true,"num":1}]},"x"]',
                         s)
            assert.same({ "one", "two" }, atts)
            s, atts = parser.encode_ack(nil, 4, 1, { parser.binary("r") })
            assert.equal('61-4[{"_placeholder":true,"num":0}]', s)
            assert.same({ "r" }, atts)
        end)

        it("return nil, err for what cannot be JSON", function()
            local s, err = parser.encode_event(nil, nil, "a", 1, { print })
            assert.is_nil(s)
            assert.matches("type not supported", err, 1, true)
            s, err = parser.encode_event(nil, nil, "a", 1, { { 0 / 0 } })
            assert.is_nil(s)
            assert.matches("NaN", err, 1, true)
            s, err = parser.encode_ack(nil, 1, 1, { { [1] = 1, [50] = 1 } })
            assert.is_nil(s)
            assert.matches("sparse", err, 1, true)
        end)

        it("refuse bad arguments", function()
            for _, c in ipairs {
                { function() parser.encode_event("chat", nil, "a", 0) end, "#1 to 'encode_event'" },
                { function() parser.encode_event("/a,b", nil, "a", 0) end, "#1 to 'encode_event'" },
                { function() parser.encode_event(nil, -1, "a", 0) end, "#2 to 'encode_event'" },
                { function() parser.encode_event(nil, "1", "a", 0) end, "#2 to 'encode_event'" },
                { function() parser.encode_event(nil, nil, true, 0) end, "#3 to 'encode_event'" },
                { function() parser.encode_event(nil, nil, "disconnect", 0) end, "reserved event name" },
                { function() parser.encode_event(nil, nil, "a", -1, {}) end, "#4 to 'encode_event'" },
                { function() parser.encode_event(nil, nil, "a", 1) end, "#5 to 'encode_event'" },
                { function() parser.encode_ack(nil, nil, 0) end, "#2 to 'encode_ack'" },
                { function() parser.encode_ack(nil, 1, 1.5, {}) end, "#3 to 'encode_ack'" },
                { function() parser.encode_ack(nil, 1, 1, "x") end, "#4 to 'encode_ack'" },
            } do
                local err = raised(c[1])
                assert.matches("sio_parser_spec.lua:%d+: bad argument", err)
                assert.matches(c[2], err, 1, true)
            end
        end)
    end)

    describe("round trips", function()
        it("decodes what it encodes, attachments included", function()
            local data = { "ev", 0.1, 2 ^ 53, -1.5e-300, "é😀\0\"\\/", { k = { null, true, parser.binary("\0b") } },
                           parser.binary(""), {} }
            local s, atts = parser.encode { type = 2, nsp = "/n", id = 999999999999999, data = data }
            local dec = parser.decoder()
            assert.is_nil(dec:add(s))
            assert.is_nil(dec:add(atts[1], true))
            local p = assert(dec:add(atts[2], true))
            assert.is_true(same({ type = 2, nsp = "/n", id = 999999999999999, data = data }, p))
        end)
    end)
end)

---------------------------------------------------------------------------
-- Random tests
---------------------------------------------------------------------------

local SEED = tonumber(os.getenv("SIO_PARSER_SEED") or "") or os.time() % 1000000007

-- xorshift32: the same packets for a seed on every run.
local function rng(seed)
    local s = bit.tobit(seed % 4294967296)
    if s == 0 then s = 1 end
    local function r(n)
        s = bit.bxor(s, bit.lshift(s, 13))
        s = bit.bxor(s, bit.rshift(s, 17))
        s = bit.bxor(s, bit.lshift(s, 5))
        return s % n + 1
    end
    return r
end

local function pick(r, t) return t[r(#t)] end

local CHARS = { "a", "b", "z", "0", " ", "/", "\\", '"', ",", "[", "{", ":", "\0", "\1", "\t", "\n", "\127",
                "é", "ß", "€", "😀", "\240\144\128\128", "\239\191\191", "\226\128\168" }

local function random_string(r, max)
    local parts = {}
    for i = 1, r(max + 1) - 1 do parts[i] = pick(r, CHARS) end
    return concat(parts)
end

local function random_bytes(r, max)
    local parts = {}
    for i = 1, r(max + 1) - 1 do parts[i] = char(r(256) - 1) end
    return concat(parts)
end

local function random_number(r)
    local k = r(9)
    if k == 1 then return r(1000) - 500 end
    if k == 2 then return (r(2) == 1 and -1 or 1) * ((r(2 ^ 26) - 1) * 2 ^ 27 + r(2 ^ 27)) end  -- up to 2^53
    if k == 3 then return pick(r, { 0, 2 ^ 53, -(2 ^ 53), 2 ^ 53 - 1, 1e15, 1e21, 1e300, 5e-324, 0.1 }) end
    -- a double with random bits: mantissa and exponent
    local m = (r(2 ^ 26) * 2 ^ 26 + r(2 ^ 26)) / 2 ^ 52
    local e = k <= 6 and r(40) - 20 or r(2000) - 1000
    return (r(2) == 1 and -1 or 1) * m * 2 ^ e
end

local RESERVED = { connect = true, connect_error = true, disconnect = true, disconnecting = true,
                   newListener = true, removeListener = true }

-- A random JSON-able value; Binary values only when bin; depth stays well
-- within the decoder's 32.
local function random_value(r, depth, bin)
    local k = r(depth >= 6 and 5 or 8)
    if k == 1 then return random_string(r, 8)
    elseif k == 2 then return random_number(r)
    elseif k == 3 then return pick(r, { true, false, null })
    elseif k == 4 then
        if bin then return parser.binary(random_bytes(r, 6)) end
        return random_string(r, 3)
    elseif k == 5 then return r(3) == 1 and random_bytes(r, 5) or r(100)
    elseif k <= 7 then
        local t = {}
        for i = 1, r(5) - 1 do t[i] = random_value(r, depth + 1, bin) end
        return t
    end
    local t = {}
    for _ = 1, r(5) - 1 do
        local key = random_string(r, 6)
        if key ~= "_placeholder" then t[key] = random_value(r, depth + 1, bin) end
    end
    return t
end

local NSPS = { "/", "/", "/", "/admin", "/é😀", "/a b", "//", "/x/y", "/[]" }

local function random_packet(r)
    local typ = r(5) - 1
    local p = { type = typ, nsp = pick(r, NSPS) }
    if r(3) == 1 or typ == 3 then
        p.id = pick(r, { r(100) - 1, r(2 ^ 30), 999999999999999, r(2 ^ 20) * 2 ^ 29 })
    end
    if typ == 0 then
        if r(2) == 1 then
            local t = {}
            for _ = 1, r(4) - 1 do t[random_string(r, 5)] = random_value(r, 2, false) end
            p.data = t
        end
    elseif typ == 2 then
        local name
        repeat
            name = r(5) == 1 and random_number(r) or random_string(r, 6)
        until not RESERVED[name]
        local data = { name }
        for i = 2, r(5) do data[i] = random_value(r, 2, true) end
        p.data = data
    elseif typ == 3 then
        local data = {}
        for i = 1, r(5) - 1 do data[i] = random_value(r, 2, true) end
        p.data = data
    elseif typ == 4 then
        p.data = r(2) == 1 and random_string(r, 8) or { message = random_string(r, 8), data = random_value(r, 2) }
    end
    return p
end

-- Encodes p one of the ways a server would: encode(), or encode_event /
-- encode_ack with some nulls passed as nil holes.
local function encode_any(r, p)
    if (p.type == 2 or p.type == 3) and r(2) == 1 then
        local first = p.type == 2 and 1 or 0
        local args, n = {}, #p.data - first
        for i = 1, n do
            local v = p.data[i + first]
            if v ~= null or r(2) == 1 then args[i] = v end
        end
        if p.type == 2 then
            return parser.encode_event(p.nsp, p.id, p.data[1], n, args)
        elseif p.id then
            return parser.encode_ack(p.nsp, p.id, n, args)
        end
    end
    return parser.encode(p)
end

describe("socketio.parser on random input (seed " .. SEED .. ", SIO_PARSER_SEED)", function()
    it("decodes 5000 random packets back to themselves #lua_only", function()
        print("sio_parser_spec: seed " .. SEED)
        local r = rng(SEED)
        local dec = parser.decoder { max_attachments = 1000 }   -- random packets may hold many
        local binary_packets = 0
        for i = 1, 5000 do
            local p = random_packet(r)
            local s, atts = encode_any(r, p)
            assert(s, atts)
            local got, err = dec:add(s)
            if atts then
                binary_packets = binary_packets + 1
                assert(got == nil and err == nil, ("packet %d (seed %d): %q: %s"):format(i, SEED, s, tostring(err)))
                for j = 1, #atts do
                    got, err = dec:add(atts[j], true)
                end
            end
            assert(got, ("packet %d (seed %d): %q: %s"):format(i, SEED, s, tostring(err)))
            if not same({ type = p.type, nsp = p.nsp, id = p.id, data = p.data }, got) then
                error(("packet %d (seed %d): %q decoded as %s"):format(i, SEED, s, tostring(cjson.encode(got))))
            end
        end
        assert(binary_packets > 500, "only " .. binary_packets .. " binary packets")
    end)

    it("never raises on random messages #lua_only", function()
        local r = rng(SEED + 1)
        local PIECES = { "0", "1", "2", "3", "4", "5", "6", "9", "-", "/", ",", "1", "12", "[", "]", "{", "}", '"',
                         ":", "null", '"a"', '"connect"', "1.5", "5.", " ", "\0", "\255", "é", "\\u", "\\ud800",
                         '{"_placeholder":true,"num":0}', '{"_placeholder":true,"num":', "e", "1-", "11-" }
        local dec = parser.decoder { max_attachments = 3, max_depth = 4 }
        local counts = { packet = 0, wait = 0, err = 0 }
        for i = 1, 20000 do
            local msg
            local k = r(3)
            if k == 1 then
                msg = random_bytes(r, 20)
            elseif k == 2 then
                local parts = {}
                for j = 1, r(12) do parts[j] = pick(r, PIECES) end
                msg = concat(parts)
            else
                msg = encode_any(r, random_packet(r))
                local at = r(#msg + 1) - 1
                msg = msg:sub(1, at) .. pick(r, PIECES) .. msg:sub(at + r(3))
            end
            if r(50) == 1 then dec = parser.decoder() end
            local ok, p, err = pcall(dec.add, dec, msg, r(4) == 1)
            assert(ok, ("message %d (seed %d): %q raised %s"):format(i, SEED, msg, tostring(p)))
            if p ~= nil then
                assert(type(p) == "table" and err == nil and type(p.type) == "number" and type(p.nsp) == "string")
                counts.packet = counts.packet + 1
            elseif err ~= nil then
                assert.is_string(err)
                counts.err = counts.err + 1
            else
                counts.wait = counts.wait + 1
            end
        end
        assert(counts.packet > 100 and counts.wait > 100 and counts.err > 1000,
               "packets " .. counts.packet .. ", waits " .. counts.wait .. ", errors " .. counts.err)
    end)
end)
