-- resty.passport.session: reading connect-redis records.
local session = require "resty.passport.session"

local function record(extra)
    return '{"cookie":{"originalMaxAge":86400000,"expires":"2026-11-24T10:00:00.000Z",'
        .. '"secure":false,"httpOnly":true,"path":"/"}' .. (extra or "") .. '}'
end

describe("session.decode", function()
    it("reads expiry, max age and the passport user", function()
        local s = assert(session.decode(record(',"passport":{"user":{"id":7,"name":"ann"}}')))
        assert.equal(1795514400000, s.expires)
        assert.equal(86400000, s.original_max_age)
        assert.is_true(s.passport)
        assert.same({ id = 7, name = "ann" }, s.user)
    end)

    it("says whether the record expired at now_ms", function()
        assert.is_false(session.decode(record(), 1795514399999).expired)
        assert.is_true(session.decode(record(), 1795514400000).expired)
    end)

    it("follows passport 0.7: 0 is a user, null, false and '' are not", function()
        local function user(v)
            local s = assert(session.decode(record(',"passport":{"user":' .. v .. '}')))
            return s.user_ok, s.user
        end
        assert.same({ true, 0 }, { user("0") })
        assert.same({ true, "0" }, { user('"0"') })
        assert.same({ true, "a\"b" }, { user('"a\\"b"') })
        assert.same({ false }, { user("null") })
        assert.same({ false }, { user("false") })
        assert.same({ false }, { user('""') })
    end)

    it("tells an absent passport from an absent user", function()
        local s = assert(session.decode(record()))
        assert.is_false(s.passport)
        s = assert(session.decode(record(',"passport":{}')))
        assert.is_true(s.passport)
        assert.is_false(s.user_present)
    end)

    it("takes the last of duplicate keys, like JSON.parse", function()
        local s = assert(session.decode('{"passport":{"user":1},"passport":{"user":2}}'))
        assert.equal(2, s.user)
        s = assert(session.decode('{"passport":{"user":1},"pass\\u0070ort":null}'))
        assert.is_false(s.passport)
    end)

    it("rejects malformed, truncated, non-object and too deep JSON", function()
        local r = record(',"passport":{"user":1}')
        for i = 1, #r - 1 do
            local s, err = session.decode(r:sub(1, i))
            assert.is_nil(s)
            assert.matches("JSON", err)
        end
        assert.same({ nil, "JSON is not an object" }, { session.decode("[1]") })
        assert.matches("nested too deep",
                       select(2, session.decode(string.rep("[", 100) .. string.rep("]", 100))))
        assert.is_nil(session.decode('{"a":1} x'))
        assert.is_nil(session.decode('{"a":01}'))
        assert.is_nil(session.decode("{\"a\":\"\1\"}"))
    end)

    it("repairs invalid UTF-8 in the user as node-redis does (one U+FFFD per maximal subpart)", function()
        local R = "\239\191\189"
        local function user(raw)
            return assert(session.decode('{"passport":{"user":' .. raw .. '}}')).user
        end
        assert.equal("a" .. R .. R .. R .. "b", user('"a\237\160\128b"')) -- a surrogate
        assert.equal(R .. "x" .. R, user('"\240\159\141x\255"'))           -- cut short, stray
        assert.equal("\240\159\141\170", user('"\240\159\141\170"'))      -- valid: as is
        assert.same({ name = "b" .. R }, user('{"name":"b\192"}'))
        assert.equal("e" .. R .. "\n", user('"e\128\\n"'))                  -- and escapes
    end)

    it("reads an 8 KB record", function()
        local big = record(',"passport":{"user":"u1"},"data":"' .. string.rep("x", 8192) .. '"')
        assert.equal("u1", assert(session.decode(big)).user)
    end)

    it("limits the record size", function()
        local old = session.max_size
        session.max_size = 100
        assert.same({ nil, "session record too large" }, { session.decode(record(string.rep(" ", 200))) })
        session.max_size = old
    end)

    it("raises on misuse", function()
        assert.has_error(function() session.decode(nil) end)
        assert.has_error(function() session.decode("{}", "now") end)
    end)
end)
