-- resty.passport.engineio.payload against the real engine.io-parser (what
-- engine.io 6.6 uses), through spec/compat/eio_payload_diff.js: the same
-- polling bodies decode to the same packets (up to the same parser error),
-- and the same packets encode to the same body.  Seeded: EIO_PAYLOAD_SEED
-- replays a run.
local payload = require "resty.passport.engineio.payload"
local cjson = require "cjson"

local SEED = tonumber(os.getenv("EIO_PAYLOAD_SEED") or "") or os.time()
local NAMES = { ["0"] = "open", ["1"] = "close", ["2"] = "ping", ["3"] = "pong",
                ["4"] = "message", ["5"] = "upgrade", ["6"] = "noop" }
local TYPES = {}
for t, name in pairs(NAMES) do TYPES[name] = t end

local function hex(s)
    return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
    return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

local function node(cases)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    for _, c in ipairs(cases) do f:write(cjson.encode(c), "\n") end
    f:close()
    local p = assert(io.popen("node spec/compat/eio_payload_diff.js < " .. path .. " 2>&1"))
    local out = {}
    for line in p:lines() do out[#out + 1] = cjson.decode(line) end
    p:close()
    os.remove(path)
    assert(#out == #cases, "node answered " .. #out .. " of " .. #cases)
    return out
end

-- Ours, in node's terms: the packets, then { type = "error" } if the
-- body ended in a parser error (engine.io-parser's ERROR_PACKET).
local function ours(body)
    local packets, err = payload.decode(body)
    local out = {}
    for i, p in ipairs(packets) do
        local r = { type = NAMES[p.type] }
        if p.binary then
            r.hex, r.binary = hex(p.data), true
        else
            r.data = p.data
        end
        out[i] = r
    end
    if err then out[#out + 1] = { type = "error", data = "parser error" } end
    return out
end

local function rng(seed)
    local x = seed % 2147483647
    if x <= 0 then x = x + 2147483646 end
    return function(n)
        x = x * 48271 % 2147483647
        return x % n + 1
    end
end

-- A random piece of a body: mostly packets, sometimes garbage.
local PIECES = { "4", "3", "2", "1", "0", "5", "6", "7", "b", "x", "", "4hello", "4é€😀",
                 "b" .. "AAEC/w==", "bAA", "b!!", "6", "3probe", "2probe", "4{\"a\":1}", " 4" }

local function random_body(r)
    local parts = {}
    for i = 1, r(4) do
        local p = PIECES[r(#PIECES)]
        if r(3) == 1 then p = p .. string.char(31 + r(90)) end
        parts[i] = p
    end
    return table.concat(parts, "\30")
end

local function random_packets(r)
    local list = {}
    for i = 1, r(4) do
        if r(3) == 1 then
            local bytes = {}
            for k = 1, r(9) - 1 do bytes[k] = string.char(r(256) - 1) end
            list[i] = { type = "4", data = table.concat(bytes), binary = true }
        else
            local t = tostring(r(7) - 1)
            list[i] = { type = t, data = r(4) > 1 and ("d" .. r(1000) .. "é") or nil }
        end
    end
    return list
end

describe("engineio.payload against engine.io-parser (seed " .. SEED .. ") #lua_only", function()
    it("decodes bodies alike, up to the same parser error", function()
        local bodies = { "4hi", "4hi\30" .. "4there", "4a\30b" .. "AAEC", "", "\30", "4a\30", "9",
                         "4a\30x\30" .. "4b", "6", "2probe\30" .. "5", "b", "bAA==", "b+/-_",
                         "1\30" .. "4after close" }
        local r = rng(SEED)
        for _ = 1, 300 do bodies[#bodies + 1] = random_body(r) end
        local cases = {}
        for i, b in ipairs(bodies) do cases[i] = { decode = hex(b) } end
        local theirs = node(cases)
        for i, b in ipairs(bodies) do
            assert.same(theirs[i].packets, ours(b), "body " .. ("%q"):format(b))
        end
    end)

    it("encodes packets as engine.io-parser does, and each side reads the other's", function()
        local r = rng(SEED + 1)
        local lists, cases = {}, {}
        for i = 1, 200 do
            local list = random_packets(r)
            local c = {}
            for k, p in ipairs(list) do
                c[k] = { type = NAMES[p.type], data = not p.binary and p.data or nil,
                         binary = p.binary or nil, hex = p.binary and hex(p.data) or nil }
            end
            lists[i], cases[i] = list, { encode = c }
        end
        local theirs = node(cases)
        for i, list in ipairs(lists) do
            local body = payload.encode(list)
            assert.equal(theirs[i].body, hex(body))
            local back = assert(payload.decode(unhex(theirs[i].body)))
            for k, p in ipairs(list) do
                assert.equal(p.binary and "4" or p.type, back[k].type)
                assert.equal(p.data, back[k].data)
            end
        end
    end)

    it("refuses what cannot be a packet", function()
        assert.has_error(function() payload.packet("7", "x") end)
        assert.has_error(function() payload.packet("4", "a\30b") end)
        assert.has_error(function() payload.decode(nil) end)
        assert.equal("4", TYPES.message)
    end)
end)
