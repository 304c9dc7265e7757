-- Differential test of resty.passport.socketio.parser's decoder against the
-- real socket.io-parser 4.2.7 (node_modules, run by sio_parser_diff.js):
-- hand-picked edge cases, random packet-ish strings (seeded; SIO_DIFF_SEED
-- replays a run) and our encoder's own output are decoded by both, message
-- by message, and must give the same steps (packet, waiting, or the same
-- error message).  The only differences allowed are in DIFFERENCES below,
-- each with its reason, and each must be met by some case.
local bit = require "bit"
local cjson = require "cjson"
local hex = require "support.hex"
local parser = require "resty.passport.socketio.parser"

local byte = string.byte
local char = string.char
local find = string.find
local rep = string.rep
local sub = string.sub
local null = cjson.null

local SEED = tonumber(os.getenv("SIO_DIFF_SEED") or "") or os.time() % 1000000007
local RANDOM_CASES = 500
local ENCODED_CASES = 150
local MAX_DEPTH = 32          -- the decoder's default

local function B(s) return { b = s } end   -- a binary message in a case

---------------------------------------------------------------------------
-- What the two sides may disagree on
---------------------------------------------------------------------------

-- JS whitespace (what Number() trims) at s[i]: its length in bytes, or nil.
local JS_WS = { "\t", "\n", "\v", "\f", "\r", " ", "\194\160", "\225\154\128", "\226\128\168",
                "\226\128\169", "\226\128\175", "\226\129\159", "\227\128\128", "\239\187\191" }
for c = 0x80, 0x8A do JS_WS[#JS_WS + 1] = "\226\128" .. char(c) end   -- U+2000..U+200A

local function js_ws_at(s, i)
    for _, w in ipairs(JS_WS) do
        if sub(s, i, i + #w - 1) == w then return #w end
    end
    return nil
end

-- Where our decoder starts reading the payload of m (type, attachments,
-- namespace and ASCII-digit id skipped), or nil when m has no such head.
local function payload_pos(m)
    local i = 2
    if find(m, "^[56]") then
        local _, e = find(m, "^[0-9]*%-", 2)
        if not e then return nil end
        i = e + 1
    end
    if byte(m, i) == 47 then
        local comma = find(m, ",", i, true)
        i = comma and comma + 1 or #m + 1
    end
    local _, e = find(m, "^[0-9]+", i)
    return e and e + 1 or i
end

-- Deepest [ / { nesting of a JSON text, strings skipped.
local function json_depth(s)
    local depth, max, in_str, i = 0, 0, false, 1
    while i <= #s do
        local c = sub(s, i, i)
        if in_str then
            if c == "\\" then i = i + 1 elseif c == '"' then in_str = false end
        elseif c == '"' then
            in_str = true
        elseif c == "[" or c == "{" then
            depth = depth + 1
            if depth > max then max = depth end
        elseif c == "]" or c == "}" then
            depth = depth - 1
        end
        i = i + 1
    end
    return max
end

-- Each: why, and explains(m, ours, theirs): whether this difference accounts
-- for the first step where the two disagree (m is that step's message).
local DIFFERENCES = {
    {
        name = "type_whitespace",
        why = "socket.io reads the type with Number(str.charAt(0)): an empty message, or one starting "
              .. "with JS whitespace, is type 0 (CONNECT); we want an ASCII digit",
        explains = function(m, ours)
            return m ~= nil and ours.err == "unknown packet type NaN" and (m == "" or js_ws_at(m, 1) ~= nil)
        end,
    },
    {
        name = "attachments_syntax",
        why = "socket.io takes any attachment count Number() reads as an integer (' 1', '1e0', '0x1', "
              .. "'+1', '1.0', '0000001'); we take 1 to 6 ASCII digits",
        explains = function(m, ours)
            if not m or not find(m, "^[56]") or not (ours.err == "Illegal attachments"
                                            or ours.err == "too many attachments") then
                return false
            end
            local dash = find(m, "-", 2, true)
            local count = dash and sub(m, 2, dash - 1) or sub(m, 2)
            return not find(count, "^%d%d?%d?%d?%d?%d?$")
        end,
    },
    {
        name = "id_whitespace",
        why = "socket.io's ack id loop takes JS whitespace as digits (Number(' ') == ' '), so '2 [\"a\"]' "
              .. "has id 0 and '21 2[\"a\"]' id NaN; our id is ASCII digits, and a payload may not "
              .. "start with whitespace",
        explains = function(m, ours)
            local i = m and payload_pos(m)
            return ours.err == "invalid payload" and i ~= nil and js_ws_at(m, i) ~= nil
        end,
    },
    {
        name = "long_id",
        why = "an ack id of more than 15 digits cannot be an exact double: socket.io rounds it, "
              .. "we refuse it",
        explains = function(_, ours) return ours.err == "invalid ack id" end,
    },
    {
        name = "depth",
        why = "JSON nested deeper than max_depth (" .. MAX_DEPTH .. "): JSON.parse has no bound",
        explains = function(m, ours)
            local i = m and payload_pos(m)
            return ours.err == "invalid payload" and i ~= nil and json_depth(sub(m, i)) > MAX_DEPTH
        end,
    },
    {
        name = "lone_surrogate",
        why = "a \\u escape of a lone UTF-16 surrogate: JSON.parse makes a string UTF-8 cannot hold, "
              .. "cjson refuses it",
        explains = function(m, ours)
            return m ~= nil and ours.err == "invalid payload" and find(m, "\\u[dD][89abcdefABCDEF]%x%x") ~= nil
        end,
    },
    {
        name = "placeholder_num",
        why = "a placeholder whose num is a number but not an integer: socket.io puts undefined "
              .. "there (buffers[0.5]), we refuse it like any bad num",
        explains = function(_, ours, theirs)
            local function has_undef(v)
                if type(v) ~= "table" then return false end
                if v["$undef"] then return true end
                for _, x in pairs(v) do
                    if has_undef(x) then return true end
                end
                return false
            end
            return ours.err == "illegal attachments" and theirs.ok ~= nil and has_undef(theirs.ok.data)
        end,
    },
}

---------------------------------------------------------------------------
-- The corpus
---------------------------------------------------------------------------

local function ph(n) return '{"_placeholder":true,"num":' .. n .. "}" end
local function nest(n, open, close, inner) return rep(open, n) .. inner .. rep(close, n) end

local HAND = {
    -- CONNECT
    "0", "0{}", '0{"token":"abc"}', "0/admin,", '0/admin,{"a":1}', "0/ns,{}", "0/admin", "0/a,1{}",
    "0[]", '0"x"', "0null", "01", "0 {}", '0{"a":1,"a":2}', '0{"__proto__":{"x":1}}', "0{", "0{}x",
    -- DISCONNECT
    "1", "1/admin,", "1/admin", "1{}", "1/a,{}", "1x", "17", "1/a,7",
    -- EVENT
    '2["a"]', '2["a",1,{"b":[true,false,null]}]', "2[1]", "2[1.5]", "2[-0]", "2[1e400]", "2[-1e400]",
    '2/admin,1["a"]', '2/admin,["a"]', '21["a"]', '2007["a"]', '2/admin,007["a"]', '2123456789012345["a"]',
    '2999999999999999["a"]', '21234567890123456["a"]', '20000000000000001["a"]', '29007199254740993["a"]',
    "2", "21", "2/a,", "2/a,1", "2/", "2/,", "2[]", "2{}", '2"a"', "2[null]", "2[true]", "2[[]]", "2[{}]",
    '2["connect"]', '2["connect_error"]', '2["disconnect"]', '2["disconnecting"]', '2["newListener"]',
    '2["removeListener"]', '2["Connect"]', '2["connect "]', '2[""]', '2["a"', '2["a"]]', '2["a",]',
    "2['a']", '21a["a"]', '2a["a"]', '2/a["x"]', '2/a,b,["x"]', '2//,["x"]', '2,["a"]', '2/é,["x"]',
    '2/😀,1["x"]', '2["é😀\\u00e9\\ud83d\\ude00"]', '2["\\ud800"]', '2["\\udc00x"]', '2["\\ud83dx"]',
    '2["a\\u0000b"]', '2["a\\/b"]', '2["a\\x"]', '2["a\tb"]', '2["a\\tb"]', '2["a\1b"]', '2["a\127b"]',
    '2["a",5.]', '2["a",-.5]', '2["a",1.e3]', '2["a",.5]', '2["a",01]', '2["a",-01]', '2["a",0x10]',
    '2["a",+1]', '2["a",NaN]', '2["a",Infinity]', '2["a",-Infinity]', '2["a",1e5,1E-5,-0.0e+0,1.5e-300]',
    '2["a",12345678901234567890,0.1,5e-324]', '2["a"]\0', '2["a\0"]', '2[\t"a"\r\n]', '2[ "a" ]',
    '2["a" , 1 ]', '2["a"] ', '2["a"]\n', '2["a"]x', '2["a"]["b"]', '2["a",{"x":"y.z","n":1.25}]',
    '2["a","x. y",". .","1."]', '2["a",{"_placeholder":true,"num":0}]', "2[7,8]", "2[-1.5]",
    '2["a",{"":{"":[]}}]', '2["a",true,false,null,"",[],{}]',
    -- whitespace where the id goes
    '2 ["a"]', '2\t["a"]', '2\n["a"]', '2\r["a"]', '21 ["a"]', '21 2["a"]', '2 1["a"]', "2 ", "21 ",
    '2/a, ["x"]', '2\194\160["a"]', '2\226\128\168["a"]', '2\239\187\191["a"]', '2\v["a"]', '2\f["a"]',
    '2\227\128\128["a"]', "2 x",
    -- the type
    "", " ", ' 2["a"]', "\t", "\194\160", " {}", "\226\128\128{}", "7", "8", "9", '9["a"]', "x", "é", "😀",
    "-", "/", "10", "2x",
    -- ACK
    '3["a"]', "31[]", '31["a",{"b":1}]', "31{}", '31"x"', "3/admin,7[null]", "3", "31", "3[", "3/a,2[]",
    -- CONNECT_ERROR
    '4"x"', '4{"message":"nope"}', "4[]", '41"x"', '4/admin,{"message":"x","data":{"a":1}}', "4", "41",
    "4null", '4 "x"', "41.5", "4true",
    -- binary packets: counts
    '5-["a"]', '5["a"]', '50-["a"]', "5", "5-", "51", "51-", '511-["a"]', '5999999-["a"]', '51234567-["a"]',
    '61-3[' .. ph(0) .. "]", "61-[]",
    { '5 1-["a",' .. ph(0) .. "]", B"x" }, { '51e0-["a",' .. ph(0) .. "]", B"x" },
    { '50x1-["a",' .. ph(0) .. "]", B"x" }, { '5+1-["a",' .. ph(0) .. "]", B"x" },
    { '51.0-["a",' .. ph(0) .. "]", B"x" }, { '5.1e1-["a",' .. ph(0) .. "]", B"x" },
    { '50000001-["a",' .. ph(0) .. "]", B"x" }, { '5000001-["a",' .. ph(0) .. "]", B"x" },
    { '5 99-["a"]' }, { "5\t1-[]", B"x" },
    -- binary packets: reconstruction
    { '51-["a",' .. ph(0) .. "]", B"\0\1\2\255" },
    { '51-["a",' .. ph(0) .. "]" },
    { '52-["a",' .. ph(0) .. "," .. ph(1) .. "]", B"one", B"two" },
    { '52-["a",' .. ph(1) .. "," .. ph(0) .. "," .. ph(1) .. "]", B"one", B"" },
    { "510-[" .. '"a"' .. rep("," .. ph(9), 2) .. "]", B"0", B"1", B"2", B"3", B"4", B"5", B"6", B"7", B"8",
      B"9" },
    { "51-", B"x" }, { "51-/admin,5[\"a\"," .. ph(0) .. "]", B"x" },
    { "61-[" .. ph(0) .. "]", B"x" }, { "61-3[" .. ph(0) .. "]", B"x" }, { "62-/a,3[1]", B"x", B"y" },
    { '51-["a",' .. ph(1) .. "]", B"x" }, { '51-["a",' .. ph(-1) .. "]", B"x" },
    { '51-["a",{"_placeholder":true,"num":"0"}]', B"x" }, { '51-["a",' .. ph(0.5) .. "]", B"x" },
    { '51-["a",{"o":' .. ph(0.5) .. "}]", B"x" }, { '51-["a",' .. ph("1e0") .. "]", B"x", B"y" },
    { '51-["a",' .. ph("-0") .. "]", B"x" },
    { '51-["a",{"x":[{"y":' .. ph(0) .. "}]}]", B"deep" },
    { '51-["a",{"_placeholder":true,"num":0,"extra":[1]}]', B"x" },
    { '51-["a",{"_placeholder":false,"num":0}]', B"x" }, { '51-["a",{"_placeholder":"true","num":0}]', B"x" },
    { '51-["a",{"_placeholder":true}]', B"x" }, { '51-["a",{"_placeholder":true,"num":null}]', B"x" },
    { '51-["a",[' .. ph(0) .. "," .. ph(0) .. "]]", B"same" },
    { "51-[]", B"x" }, { "51-{}", B"x" }, { "61-{}", B"x" }, { '51-["connect",' .. ph(0) .. "]", B"x" },
    { "51-[1," .. ph(0) .. "]", B"x" }, { '51-["a"]', B"unused" },
    -- binary packets: message order
    { B"x" }, { '51-["a",' .. ph(0) .. "]", '2["a"]' },
    { '52-["a",' .. ph(0) .. "," .. ph(1) .. "]", B"x", '2["b"]' },
    { '51-["a",' .. ph(0) .. "]", B"x", B"y" }, { '2["a"]', '2["b"]' },
    { '51-["a",' .. ph(0) .. "]", B"x", '2["c"]', "3/a,1[]" }, { "2[]", '2["never"]' },
    -- depth
    '2["a",' .. nest(MAX_DEPTH - 1, "[", "]", "1") .. "]", '2["a",' .. nest(MAX_DEPTH, "[", "]", "1") .. "]",
    '2["a",' .. nest(200, "[", "]", "") .. "]", '0' .. nest(MAX_DEPTH, '{"a":', "}", "{}"),
    '0' .. nest(MAX_DEPTH - 1, '{"a":', "}", "{}"), '3' .. nest(40, "[", "]", '"x"'),
}

-- xorshift32: the same cases for a seed on every run.
local function rng(seed)
    local s = bit.tobit(seed % 4294967296)
    if s == 0 then s = 1 end
    return function(n)
        s = bit.bxor(s, bit.lshift(s, 13))
        s = bit.bxor(s, bit.rshift(s, 17))
        s = bit.bxor(s, bit.lshift(s, 5))
        return s % n + 1
    end
end

local function pick(r, t) return t[r(#t)] end

local TYPES = { "0", "0", "1", "2", "2", "2", "2", "2", "3", "3", "3", "4", "4", "5", "5", "5", "6", "6", "7",
                "9", "x", "", " " }
local COUNTS = { "1-", "1-", "2-", "3-", "0-", "11-", " 1-", "1e0-", "", "-", "01-", "1" }
local NSPS = { "", "", "", "", "", "/", "/admin,", "/admin,", "/a", "/é,", "/,", "/a,b,", "/ns,", "/😀," }
local IDS = { "", "", "", "", "", "1", "42", "007", "0", "123456789012345", "1234567890123456", " ", "1 ",
              "a", "\194\160" }
local STRINGS = { '"a"', '"ev"', '"connect"', '"disconnect"', '"newListener"', '""', '"é"', '"😀"',
                  '"\\u00e9"', '"\\ud83d\\ude00"', '"a\\"b"', '"a\\\\"', '"\\n"', '"x.y"', '"\\u0000"',
                  '"a,b"', '"[1]"', '"/admin"', '"1."' }
local NUMBERS = { "0", "1", "-1", "1.5", "-0", "1e400", "1e-7", "12345678901234567890", "0.1", "2", "1E5",
                  "9007199254740993", "-2.5e-3" }
-- leaves JSON.parse refuses (or cjson does)
local BAD_LEAVES = { '"\\ud800"', "5.", "01", ".5", "-.5", "NaN", "'a'", '"\t"', "1.e3" }
local SOUP = { "[", "]", "{", "}", ",", ":", '"', "\\", "null", "true", "false", "1", ".", "-", "/", " ",
               "é", "😀", "\t", "\n", "_placeholder", "num", "x" }

local json_object

local function json_value(r, depth)
    if r(40) == 1 then return pick(r, BAD_LEAVES) end
    local k = r(depth > 3 and 6 or 9)
    if k <= 2 then return pick(r, STRINGS)
    elseif k <= 4 then return pick(r, NUMBERS)
    elseif k == 5 then return pick(r, { "null", "true", "false" })
    elseif k == 6 then return ph(r(4) - 1)
    elseif k <= 8 then
        local items = {}
        for i = 1, r(4) - 1 do items[i] = json_value(r, depth + 1) end
        return "[" .. table.concat(items, pick(r, { ",", ",", ", " })) .. "]"
    end
    return json_object(r, depth)
end

function json_object(r, depth)
    local items = {}
    for i = 1, r(4) - 1 do items[i] = pick(r, STRINGS) .. ":" .. json_value(r, depth + 1) end
    return "{" .. table.concat(items, ",") .. "}"
end

local function json_array(r, depth, first)
    local items = { first }
    for _ = 1, r(4) - 1 do items[#items + 1] = json_value(r, depth + 1) end
    return "[" .. table.concat(items, ",") .. "]"
end

-- Mostly what the type wants (so that many cases are accepted), else any
-- value, nothing, or soup; now and then mutated.
local function payload(r, typ)
    local k = r(12)
    if k == 1 or (typ == "1" and k < 10) then return "" end
    if k == 2 then
        local parts = {}
        for i = 1, r(8) do parts[i] = pick(r, SOUP) end
        return table.concat(parts)
    end
    local p
    if k == 3 then
        p = json_value(r, 0)
    elseif typ == "2" or typ == "5" then
        p = json_array(r, 1, r(8) == 1 and pick(r, NUMBERS) or pick(r, STRINGS))
    elseif typ == "3" or typ == "6" then
        p = json_array(r, 1)
    elseif typ == "0" then
        p = json_object(r, 1)
    elseif typ == "4" then
        p = r(2) == 1 and pick(r, STRINGS) or json_object(r, 1)
    else
        p = json_value(r, 0)
    end
    if r(6) == 1 then
        -- a mutation: a character dropped, or a piece of soup put in
        local at = r(#p + 1) - 1
        if r(2) == 1 then
            p = sub(p, 1, at) .. sub(p, at + 2)
        else
            p = sub(p, 1, at) .. pick(r, SOUP) .. sub(p, at + 1)
        end
    end
    return p
end

-- A mutation may cut a multi-byte character: keep the text valid UTF-8 (a
-- WebSocket text message is).
local function utf8_ok(s)
    local i = 1
    while i <= #s do
        local c = byte(s, i)
        local n = c < 0x80 and 0 or c >= 0xF5 and -1 or c >= 0xF0 and 3 or c >= 0xE0 and 2 or c >= 0xC2 and 1 or -1
        if n < 0 then return false end
        for j = 1, n do
            local d = byte(s, i + j)
            if not d or d < 0x80 or d > 0xBF then return false end
        end
        i = i + n + 1
    end
    return true
end

local function random_bytes(r, max)
    local bytes = {}
    for i = 1, r(max + 1) - 1 do bytes[i] = char(r(256) - 1) end
    return table.concat(bytes)
end

local function random_case(r)
    local typ = pick(r, TYPES)
    local m, count = typ, nil
    if typ == "5" or typ == "6" or r(20) == 1 then
        count = pick(r, COUNTS)
        m = m .. count
    end
    m = m .. pick(r, NSPS) .. pick(r, IDS) .. payload(r, typ)
    if not utf8_ok(m) then m = typ .. '["a"]' end
    local case = { m }
    -- as many attachments as announced, mostly
    local n = count and tonumber(count:match("^(%d+)-$") or "") or 0
    if r(count and 4 or 10) == 1 then n = r(4) - 1 end
    for _ = 1, n do case[#case + 1] = B(random_bytes(r, 5)) end
    if r(8) == 1 then case[#case + 1] = pick(r, { '2["a"]', "3[]", "0{}" }) end
    return case
end

-- Packets of every type for our encoder, with Binary values in events and
-- acks; the expected result is the packet itself.
local EV_STRINGS = { "a", "é", "😀", "x/y", 'q"uote', "back\\slash", "\0nul", "tab\t", "" }

local function lua_value(r, depth, bin)
    local k = r(depth > 3 and 5 or 8)
    if k == 1 then return pick(r, EV_STRINGS)
    elseif k == 2 then
        local n = r(1000000) / r(1000) * (r(2) == 1 and -1 or 1)
        -- and a double of random bits: what JS reads must be what we wrote
        local d = (r(2 ^ 26) * 2 ^ 26 + r(2 ^ 26)) / 2 ^ 52 * 2 ^ (r(2000) - 1000)
        return pick(r, { n, math.floor(n), d, d, 2 ^ 53, -(2 ^ 53), 0.1, 1e300, 5e-324, 0 })
    elseif k == 3 then return pick(r, { true, false, null })
    elseif k == 4 then
        if bin then return parser.binary(random_bytes(r, 4)) end
        return "s"
    elseif k <= 6 then
        local t = {}
        for i = 1, r(4) do t[i] = lua_value(r, depth + 1, bin) end
        return t
    end
    local t = {}
    for _ = 1, r(4) do t[pick(r, EV_STRINGS) .. r(9)] = lua_value(r, depth + 1, bin) end
    return t
end

local function random_packet(r)
    local typ = r(5) - 1
    local p = { type = typ, nsp = pick(r, { "/", "/", "/admin", "/é" }) }
    if r(3) == 1 or typ == 3 then p.id = r(1000) - 1 end
    if typ == 0 then
        p.data = r(2) == 1 and { token = pick(r, EV_STRINGS) } or nil
    elseif typ == 2 or typ == 3 then
        local data = { typ == 2 and pick(r, { "ev", "é", "message" }) or lua_value(r, 1, true) }
        for i = 2, r(5) do data[i] = lua_value(r, 1, true) end
        p.data = data
    elseif typ == 4 then
        p.data = r(2) == 1 and pick(r, EV_STRINGS) or { message = pick(r, EV_STRINGS) }
    end
    return p
end

---------------------------------------------------------------------------
-- Running both sides
---------------------------------------------------------------------------

local function node_steps(cases)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    for _, case in ipairs(cases) do
        local msgs = {}
        for i, m in ipairs(case) do
            msgs[i] = type(m) == "table" and { b = hex.encode(m.b) } or m
        end
        f:write(cjson.encode(msgs), "\n")
    end
    f:close()
    local p = assert(io.popen("node spec/compat/sio_parser_diff.js < " .. path .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    os.remove(path)
    local results = {}
    for line in out:gmatch("[^\n]+") do
        local ok, steps = pcall(cjson.decode, line)
        assert(ok and type(steps) == "table", "node said: " .. out:sub(1, 500))
        results[#results + 1] = steps
    end
    assert(#results == #cases, "node answered " .. #results .. " of " .. #cases .. " cases: "
           .. out:sub(1, 300))
    return results
end

local NAN, UNDEF, ILL = {}, {}, {}

-- Node's tagged JSON back to the values our decoder gives.
local function untag(v)
    if type(v) ~= "table" then return v end
    if v["$bin"] then return parser.binary(hex.decode(v["$bin"])) end
    if v["$num"] then
        return v["$num"] == "Infinity" and math.huge or v["$num"] == "-Infinity" and -math.huge or NAN
    end
    if v["$undef"] then return UNDEF end
    if v["$ill"] then return ILL end
    local out = {}
    for k, x in pairs(v) do out[k] = untag(x) end
    return out
end

local function our_steps(case)
    local dec = parser.decoder()
    local steps = {}
    for _, m in ipairs(case) do
        local p, err
        if type(m) == "table" then p, err = dec:add(m.b, true) else p, err = dec:add(m) end
        if err then
            steps[#steps + 1] = { err = err }
            break
        end
        steps[#steps + 1] = p and { ok = p } or { wait = true }
    end
    return steps
end

local function same(a, b)
    if a == b then return true end
    if type(a) ~= type(b) then return false end
    if type(a) == "number" then return a ~= a and b ~= b end
    if type(a) ~= "table" then return false end
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

local function same_step(ours, theirs)
    if theirs.err or ours.err then return ours.err == theirs.err end
    if theirs.wait or ours.wait then return ours.wait == theirs.wait end
    local a, b = ours.ok, untag(theirs.ok)
    return a.type == b.type and a.nsp == b.nsp and same(a.id, b.id) and same(a.data, b.data)
end

local function show(v)
    if type(v) == "string" then return ("%q"):format(v) end
    if type(v) ~= "table" then return tostring(v) end
    if parser.is_binary(v) then return "binary(" .. ("%q"):format(v.data) .. ")" end
    local ok, s = pcall(cjson.encode, v)
    return ok and s or tostring(v)
end

local function show_step(s)
    if s.err then return "error " .. show(s.err) end
    if s.wait then return "waiting" end
    local p = untag(s.ok)
    return ("packet { type = %s, nsp = %s, id = %s, data = %s }"):format(p.type, show(p.nsp), show(p.id),
                                                                          show(p.data))
end

local function show_case(case)
    local parts = {}
    for i, m in ipairs(case) do parts[i] = type(m) == "table" and "binary " .. show(m.b) or show(m) end
    return "{ " .. table.concat(parts, ", ") .. " }"
end

local hits = {}

-- Compares the two sides on every case: nil, or the report of the first
-- case they disagree on that no listed difference explains.
local function compare(cases, theirs_all, label)
    for n, case in ipairs(cases) do
        local ours, theirs = our_steps(case), theirs_all[n]
        for i = 1, math.max(#ours, #theirs) do
            local a, b = ours[i], theirs[i]
            if not (a and b and same_step(a, b)) then
                -- both stop at their first error, so both have step i here
                local m = case[i]
                local diff
                for _, d in ipairs(DIFFERENCES) do
                    if d.explains(type(m) == "string" and m or nil, a, b) then
                        diff = d
                        break
                    end
                end
                if not diff then
                    return ("%s case %d %s, message %d: socket.io-parser %s, we %s"):format(
                        label, n, show_case(case), i, b and show_step(b) or "nothing",
                        a and show_step(a) or "nothing")
                end
                hits[diff.name] = (hits[diff.name] or 0) + 1
                break
            end
        end
    end
    return nil
end

describe("socketio.parser against socket.io-parser 4.2.7 #lua_only", function()
    it("decodes the hand-picked cases alike, but for the listed differences", function()
        local cases = {}
        for i, c in ipairs(HAND) do cases[i] = type(c) == "string" and { c } or c end
        local failure = compare(cases, node_steps(cases), "hand-picked")
        assert(failure == nil, failure)
    end)

    it("decodes " .. RANDOM_CASES .. " random cases alike (seed " .. SEED .. ", SIO_DIFF_SEED)", function()
        local r = rng(SEED)
        local cases = {}
        for i = 1, RANDOM_CASES do cases[i] = random_case(r) end
        local failure = compare(cases, node_steps(cases), "random (seed " .. SEED .. ")")
        assert(failure == nil, failure)
    end)

    it("has socket.io-parser read our encoder's packets back (seed " .. SEED .. ")", function()
        local r = rng(SEED + 1)
        local packets, cases = {}, {}
        for i = 1, ENCODED_CASES do
            local p, str, atts
            repeat -- within socket.io's default maxAttachments, 10
                p = random_packet(r)
                str, atts = parser.encode(p)
                assert(str, atts)
            until not atts or #atts <= 10
            local case = { str }
            for _, a in ipairs(atts or {}) do case[#case + 1] = B(a) end
            packets[i], cases[i] = p, case
        end
        local theirs = node_steps(cases)
        for i, steps in ipairs(theirs) do
            local last = steps[#steps]
            assert(last.ok, "case " .. i .. " " .. show_case(cases[i]) .. ": " .. show_step(last))
            local got, want = untag(last.ok), packets[i]
            assert(got.type == want.type and got.nsp == (want.nsp or "/") and got.id == want.id
                   and same(got.data, want.data),
                   "case " .. i .. " " .. show_case(cases[i]) .. ": socket.io-parser read " .. show_step(last))
        end
        local failure = compare(cases, theirs, "encoded")
        assert(failure == nil, failure)
    end)

    it("meets every listed difference", function()
        for _, d in ipairs(DIFFERENCES) do
            if os.getenv("SIO_DIFF_VERBOSE") then print(d.name, hits[d.name]) end
            assert((hits[d.name] or 0) > 0, "no case showed the difference '" .. d.name .. "' (" .. d.why .. ")")
        end
    end)
end)
