-- authorize in plain LuaJIT, with a Lua table as the store (the custom-store
-- contract: get(self, sid) -> json | nil | nil, err).  Real Redis, nginx and
-- Express are in spec/integration.
local passport = require "resty.passport"
local cookie = require "resty.passport.cookie"
local M = passport.messages

local SECRET = "keyboard cat"

-- ok, message, is_error without data, for compact comparisons.
local function v3(a, b, c) return a, b, c end

local function record(passport_part)
    return '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"}'
        .. (passport_part and (',"passport":' .. passport_part) or "") .. "}"
end

local function table_store(records)
    return {
        get = function(_, sid)
            local r = records[sid]
            if type(r) == "function" then return r() end
            return r
        end,
    }
end

local function req_for(sid, extra)
    local v = cookie.sign(sid, SECRET):gsub(":", "%%3A")
    local headers = { cookie = "io=abc; connect.sid=" .. v }
    for k, x in pairs(extra or {}) do headers[k] = x end
    return { headers = headers, query = {} }
end

local records = {
    ann = record('{"user":"ann"}'),
    zero = record('{"user":0}'),
    num = record('{"user":42}'),
    obj = record('{"user":{"id":7,"role":"admin"}}'),
    anon = record(),
    empty_passport = record("{}"),
    null_user = record('{"user":null}'),
    false_user = record('{"user":false}'),
    empty_user = record('{"user":""}'),
    broken = '{"cookie":',
    down = function() return nil, "connection refused" end,
    throws = function() error("store exploded", 0) end,
    wrongtype = function() return { "not", "json" } end,
}

local function auth(opts)
    opts = opts or {}
    opts.secret = opts.secret or SECRET
    opts.store = opts.store or table_store(records)
    return passport.authorize(opts)
end

describe("authorize: passport.socketio's messages", function()
    local a = auth()

    local cases = {
        { "no cookie", { headers = {} }, M.no_session, false },
        { "unknown sid", req_for("nobody"), M.no_session, false },
        { "store error", req_for("down"), M.store .. "connection refused", true },
        { "store raising", req_for("throws"), M.store .. "store exploded", true },
        { "store returning a table", req_for("wrongtype"),
          M.store .. "store returned a table, not a JSON string", true },
        { "broken record", req_for("broken"), "^" .. M.store .. "bad session record", true, true },
        { "no passport key", req_for("anon"), M.no_passport, false },
        { "no user", req_for("empty_passport"), M.no_user, false },
        { "null user", req_for("null_user"), M.no_user, false },
        { "false user", req_for("false_user"), M.no_user, false },
        { "empty-string user", req_for("empty_user"), M.no_user, false },
    }
    for _, c in ipairs(cases) do
        it("rejects: " .. c[1], function()
            local ok, msg, is_error, data = a:check(c[2])
            assert.is_false(ok)
            if c[5] then
                assert.matches(c[3], msg)
            else
                assert.equal(c[3], msg)
            end
            assert.equal(c[4], is_error)
            assert.is_false(data.user.logged_in)
        end)
    end

    it("rejects a tampered cookie as no session", function()
        local req = req_for("ann")
        req.headers.cookie = req.headers.cookie:sub(1, -2) .. "x"
        local ok, msg, is_error, data = a:check(req)
        assert.same({ false, M.no_session, false, "signature mismatch" }, { ok, msg, is_error, data.reason })
    end)

    it("accepts a string, a number, 0 and a table user, logged_in readable", function()
        for sid, expect in pairs { ann = "ann", num = 42, zero = 0 } do
            local ok, data = a:check(req_for(sid))
            assert.is_true(ok, sid)
            assert.is_true(data.user.logged_in)
            assert.equal(expect, data.user.value)
            assert.equal(expect, data.serialized_user)
            assert.equal(sid, data.session_id)
        end
        local ok, data = a:check(req_for("obj"))
        assert.is_true(ok)
        assert.same({ id = 7, role = "admin", logged_in = true }, data.user)
    end)

    it("exposes the decoded session lazily", function()
        local _, data = a:check(req_for("obj"))
        assert.same({ id = 7, role = "admin" }, data.session.passport.user)
        assert.is_true(data.session.cookie.httpOnly)
    end)
end)

describe("authorize: deserialize_user", function()
    it("passes the serialized user and data, and uses what it returns", function()
        local seen
        local a = auth { deserialize_user = function(id, data)
            seen = { id, data.session_id }
            return { name = id:upper() }
        end }
        local ok, data = a:check(req_for("ann"))
        assert.is_true(ok)
        assert.same({ "ann", "ann" }, seen)
        assert.same({ name = "ANN", logged_in = true }, data.user)
    end)

    it("rejects with 'User not found' when it returns nil or false", function()
        for _, v in ipairs { false, "nil" } do
            local a = auth { deserialize_user = function() if v == "nil" then return nil end return v end }
            assert.same({ false, M.user_not_found, false }, { v3(a:check(req_for("ann"))) })
        end
    end)

    it("rejects with its error as is_error", function()
        local a = auth { deserialize_user = function() return nil, "db down" end }
        local ok, msg, is_error = a:check(req_for("ann"))
        assert.same({ false, "db down", true }, { ok, msg, is_error })
        a = auth { deserialize_user = function() error({ message = "boom" }) end }
        ok, msg, is_error = a:check(req_for("ann"))
        assert.same({ false, "boom", true }, { ok, msg, is_error })
    end)
end)

describe("authorize: success and fail callbacks", function()
    it("accept() and accept(nil, true) accept; accept(nil, false) and accept(err) reject", function()
        local styles = {
            { function(accept) accept() end, true },
            { function(accept) accept(nil, true) end, true },
            { function(accept) accept(nil, false) end, false, M.refused },
            { function(accept) accept("go away") end, false, "go away" },
            { function(accept) accept({ message = "as Error" }, true) end, false, "as Error" },
        }
        for i, s in ipairs(styles) do
            local a = auth { success = function(_, accept) s[1](accept) end }
            local ok, msg = a:check(req_for("ann"))
            assert.equal(s[2], ok, "style " .. i)
            if not ok then assert.equal(s[3], msg) end
        end
    end)

    it("calls fail with data, message, is_error and accept; its accept admits anonymous", function()
        local got
        local a = auth { fail = function(data, message, is_error, accept)
            got = { data.user.logged_in, message, is_error }
            accept(nil, true)
        end }
        local ok, data = a:check(req_for("anon"))
        assert.is_true(ok)
        assert.same({ false, M.no_passport, false }, got)
        assert.same({ logged_in = false }, data.user)
    end)

    it("lets fail reject with its own message, keeping is_error", function()
        local a = auth { fail = function(_, _, _, accept) accept("custom") end }
        assert.same({ false, "custom", true }, { v3(a:check(req_for("down"))) })
    end)

    it("catches an error in success, rejects once and never calls fail", function()
        local fails = 0
        local a = auth {
            success = function(_, accept) accept(); error("oops", 0) end,
            fail = function(_, _, _, accept) fails = fails + 1; accept() end,
        }
        -- accept() was called first: the verdict stands, the error is logged.
        assert.is_true((a:check(req_for("ann"))))
        a = auth {
            success = function() error("oops", 0) end,
            fail = function(_, _, _, accept) fails = fails + 1; accept() end,
        }
        assert.same({ false, "oops", true }, { v3(a:check(req_for("ann"))) })
        assert.equal(0, fails)
    end)

    it("ignores a second accept", function()
        local a = auth { success = function(_, accept) accept("no"); accept() end }
        assert.same({ false, "no", false }, { v3(a:check(req_for("ann"))) })
    end)

    it("rejects a callback that returns without deciding (no event loop here)", function()
        local a = auth { success = function() end }
        assert.same({ false, M.pending, true }, { v3(a:check(req_for("ann"))) })
    end)
end)

describe("authorize: Origin allow-list", function()
    local a = auth { origins = { "https://App.example.com" } }

    it("accepts a listed Origin (case-insensitive) and requests without one", function()
        assert.is_true((a:check(req_for("ann", { origin = "https://app.example.com" }))))
        assert.is_true((a:check(req_for("ann"))))
    end)

    it("rejects any other Origin", function()
        local ok, msg, is_error, data = a:check(req_for("ann", { origin = "https://evil.example" }))
        assert.same({ false, M.origin, false, 403 }, { ok, msg, is_error, data.status })
    end)
end)

describe("authorize: query fallback", function()
    local a = auth { query_key = "session_id" }

    it("accepts the signed value when there is no cookie", function()
        local ok, data = a:check({ headers = {}, query = { session_id = cookie.sign("ann", SECRET) } })
        assert.is_true(ok)
        assert.equal("ann", data.session_id)
    end)

    it("never accepts a raw session id (passport.socketio did)", function()
        local ok, msg = a:check({ headers = {}, query = { session_id = "ann" } })
        assert.same({ false, M.no_session }, { ok, msg })
    end)

    it("is off by default", function()
        local ok = auth():check({ headers = {}, query = { session_id = cookie.sign("ann", SECRET) } })
        assert.is_false(ok)
    end)

    it("is used only when no cookie of that name came (a failed one is not replaced)", function()
        local q = { session_id = cookie.sign("ann", SECRET) }
        local function with(cookie_header)
            return (a:check({ headers = { cookie = cookie_header }, query = q }))
        end
        assert.is_true(with(nil))
        assert.is_true(with("theme=dark"))
        assert.is_false(with("connect.sid=" .. cookie.sign("num", "retired"):gsub(":", "%%3A")))
        assert.is_false(with("connect.sid=s%3Aann.tampered"))
        assert.is_false(with("connect.sid="))
    end)
end)

describe("authorize: success without fail", function()
    it("refuses a failed handshake without calling success", function()
        local called = false
        local a = auth { success = function(_, accept) called = true accept() end }
        assert.same({ false, M.no_session, false }, { v3(a:check({ headers = {} })) })
        assert.same({ false, M.no_passport, false }, { v3(a:check(req_for("anon"))) })
        assert.is_false(called)
        assert.is_true((a:check(req_for("ann"))))
        assert.is_true(called)
    end)
end)

describe("authorize: records", function()
    it("treats a record without a cookie object as unreadable, as Express does", function()
        local a = auth { store = table_store { nocookie = '{"passport":{"user":"ann"}}' } }
        local ok, msg, is_error = a:check(req_for("nocookie"))
        assert.is_false(ok)
        assert.equal(M.store .. "session record has no cookie", msg)
        assert.is_true(is_error)
    end)
end)

describe("authorize: reverify", function()
    local recs = { obj = record('{"user":{"id":7,"role":"admin"}}') }
    local a = auth { store = table_store(recs),
                     success = function(data, accept) accept(nil, data.user.role == "admin") end }

    it("runs the whole policy again on a changed record", function()
        local ok, data = a:check(req_for("obj"))
        assert.is_true(ok)
        assert.equal(a, data._auth)
        local ok2, fresh = a:reverify(data, record('{"user":{"id":7,"role":"admin","n":2}}'))
        assert.is_true(ok2)
        assert.same({ id = 7, role = "admin", n = 2, logged_in = true }, fresh.user)
        assert.equal(data.session_id, fresh.session_id)
        local ok3, msg = a:reverify(data, record('{"user":{"id":7,"role":"user"}}'))
        assert.same({ false, M.refused }, { ok3, msg })
        assert.same({ false, M.no_passport, false }, { v3(a:reverify(data, record())) })
        assert.same({ false, M.store .. "session record has no cookie", true },
                    { v3(a:reverify(data, '{"passport":{"user":{"id":7,"role":"admin"}}}')) })
        local bad = { a:reverify(data, "{") }
        assert.is_false(bad[1])
        assert.is_true(bad[3])
    end)
end)

describe("authorize: secrets", function()
    it("verifies with every secret of the list", function()
        local a = auth { secret = { "new", SECRET } }
        assert.is_true((a:check(req_for("ann"))))
    end)

    it("is a configuration error without a secret, with an empty one, or without a store", function()
        assert.has_error(function() passport.authorize { store = table_store({}) } end)
        assert.has_error(function() passport.authorize { secret = "", store = table_store({}) } end)
        assert.has_error(function() passport.authorize { secret = { "a", 5 }, store = table_store({}) } end)
        assert.has_error(function() passport.authorize { secret = "s" } end)
        -- a store constructor instead of a store (passport.socketio #77, #84)
        assert.has_error(function() passport.authorize { secret = "s", store = function() end } end)
        assert.has_error(function() passport.authorize { secret = "s", store = table_store({}), origins = "x" } end)
        assert.has_error(function() auth().check({}) end)
    end)
end)

describe("authorize: cookie-session format", function()
    local keys = { "k2", "k1" }
    local a = passport.authorize { format = "cookie-session", secret = keys }

    local function req(json, key)
        local v = (require("mime").b64(json))
        local sig = cookie.keygrip_sign("session=" .. v, key or "k2")
        return { headers = { cookie = "session=" .. v .. "; session.sig=" .. sig } }
    end

    it("reads passport.user from the cookie itself", function()
        local ok, data = a:check(req('{"passport":{"user":"ann"}}', "k1"))
        assert.is_true(ok)
        assert.equal("ann", data.user.value)
    end)

    it("rejects a bad signature and an anonymous session", function()
        assert.same({ false, M.no_session, false }, { v3(a:check(req('{"passport":{"user":"ann"}}', "k3"))) })
        assert.same({ false, M.no_passport, false }, { v3(a:check(req('{"views":1}'))) })
    end)
end)
