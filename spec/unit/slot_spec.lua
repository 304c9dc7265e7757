-- resty.passport.redis.slot: the Redis Cluster slot of a key (csrc/slot.c),
-- on the known vectors, then against a real cluster-enabled redis-server's
-- CLUSTER KEYSLOT for a couple of thousand keys.
local slot = require "resty.passport.redis.slot"
local bit = require "bit"

-- CRC16/XMODEM bit by bit (polynomial 0x1021, init 0, no reflection): a
-- reference that shares nothing with the C table, mod 16384.
local function crc_slot(s)
    local crc = 0
    for i = 1, #s do
        crc = bit.bxor(crc, bit.lshift(s:byte(i), 8))
        for _ = 1, 8 do
            crc = bit.band(bit.band(crc, 0x8000) ~= 0
                           and bit.bxor(bit.lshift(crc, 1), 0x1021)
                           or bit.lshift(crc, 1), 0xFFFF)
        end
    end
    return crc % 16384
end

describe("slot.of", function()
    it("is CRC16/XMODEM mod 16384", function()
        -- the check value of CRC-16/XMODEM is 0x31C3, below 16384
        assert.equal(0x31C3, crc_slot("123456789"))
        assert.equal(12739, slot.of("123456789"))
        assert.equal(0, slot.of(""))
        assert.equal(16384, slot.COUNT)
        for _, k in ipairs { "a", "sess:abc", "\0\255", ("x"):rep(1000) } do
            assert.equal(crc_slot(k), slot.of(k))
        end
    end)

    it("hashes only the tag when there is one (the Redis docs' examples)", function()
        assert.equal(slot.of("{user1000}.following"), slot.of("{user1000}.followers"))
        assert.equal(crc_slot("user1000"), slot.of("{user1000}.following"))
        -- "{}" right after the first "{": no tag, the whole key
        assert.equal(crc_slot("foo{}{bar}"), slot.of("foo{}{bar}"))
        -- from the first "{" to the first "}" after it
        assert.equal(crc_slot("{bar"), slot.of("foo{{bar}}zap"))
        assert.equal(crc_slot("bar"), slot.of("foo{bar}{zap}"))
        -- no "}" after the "{", or none at all: the whole key
        assert.equal(crc_slot("foo{bar"), slot.of("foo{bar"))
        assert.equal(crc_slot("}a{"), slot.of("}a{"))
        assert.equal(crc_slot("{}"), slot.of("{}"))
        assert.equal(crc_slot("a"), slot.of("x{a}b}"))
    end)

    it("takes any bytes, NUL included", function()
        assert.equal(crc_slot("a\0b"), slot.of("{a\0b}zzz"))
        assert.equal(crc_slot("\0"), slot.of("\255\0{\0}"))
        assert.equal(crc_slot("\0\255\128"), slot.of("\0\255\128"))
    end)

    it("rejects anything but a string, blaming the caller", function()
        for _, v in ipairs { 1, true, {} } do
            local ok, err = pcall(slot.of, v)
            assert.is_false(ok)
            assert.equal("bad argument #1 to 'slot.of' (string expected, got "
                         .. type(v) .. ")", err)
        end
        local ok, err = pcall(slot.of)
        assert.is_false(ok)
        assert.matches("got nil%)$", err)
        -- level 2: the message points at the line that called slot.of (not
        -- a tail call, which would leave no caller to point at)
        ok, err = pcall(function() local s = slot.of(42); return s end)
        assert.is_false(ok)
        assert.matches("^[^:]*slot_spec%.lua:%d+: bad argument #1 to 'slot%.of'", err)
    end)
end)

describe("slot.of against CLUSTER KEYSLOT", function()
    local redis

    setup(function()
        -- A cluster-enabled node answers CLUSTER KEYSLOT with no slot
        -- assigned; its nodes.conf goes to the server's own temp dir.
        redis = require("support.redis_server").start {
            config = { "cluster-enabled yes", "cluster-config-file nodes.conf" },
        }
    end)

    teardown(function()
        if redis then redis:stop() end
    end)

    -- Random bytes where "{" and "}" are common, so tags, empty tags, nested
    -- and unclosed ones all come up; binary bytes too.
    local function random_key()
        local b = {}
        for i = 1, math.random(0, 64) do
            local r = math.random(10)
            if r <= 2 then b[i] = "{"
            elseif r <= 4 then b[i] = "}"
            elseif r <= 7 then b[i] = string.char(math.random(97, 122))
            else b[i] = string.char(math.random(0, 255)) end
        end
        return table.concat(b)
    end

    local function random_id(n)
        local alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        local b = {}
        for i = 1, n do
            local j = math.random(#alpha)
            b[i] = alpha:sub(j, j)
        end
        return table.concat(b)
    end

    it("agrees on 2000 keys: random bytes, session ids and tagged keys", function()
        local seed = os.time()
        math.randomseed(seed)
        local keys = { "", "{", "}", "{}", "}{", "{{a}}", "a{b}{c}", "{}a", "a{}",
                       "123456789", "{user1000}.following", "foo{}{bar}" }
        for _ = 1, 1000 do keys[#keys + 1] = random_key() end
        for _ = 1, 500 do keys[#keys + 1] = "sess:" .. random_id(32) end
        for _ = 1, 500 do
            keys[#keys + 1] = random_id(math.random(0, 8)) .. "{" .. random_id(math.random(0, 12))
                              .. "}" .. random_key():sub(1, math.random(0, 16))
        end
        local checked = 0
        for _, k in ipairs(keys) do
            local want = assert(redis:call("CLUSTER", "KEYSLOT", k))
            assert.equal(want, slot.of(k),
                         ("key %q (math.randomseed(%d))"):format(k, seed))
            checked = checked + 1
        end
        assert.is_true(checked >= 2000)
    end)
end)
