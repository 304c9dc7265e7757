-- resty.passport.cookie: argument checks, reasons and limits.  The byte-exact
-- behaviour against Node lives in spec/compat (vectors made by npm packages).
local cookie = require "resty.passport.cookie"

describe("cookie.get", function()
    it("finds a cookie among others and URL-decodes it", function()
        assert.equal("s:abc.def", cookie.get("a=1; connect.sid=s%3Aabc.def; b=2", "connect.sid"))
    end)

    it("keeps the first of two cookies with one name", function()
        assert.equal("1", cookie.get("x=1; x=2", "x"))
    end)

    it("joins several header lines with '; '", function()
        assert.equal("2", cookie.get({ "a=1", "b=2" }, "b"))
    end)

    it("reports a missing header and a missing cookie", function()
        local v, err = cookie.get(nil, "x")
        assert.is_nil(v)
        assert.equal("no cookie header", err)
        v, err = cookie.get("a=1", "x")
        assert.is_nil(v)
        assert.equal("cookie not found", err)
    end)

    it("rejects a header over the limit with a clear reason", function()
        local big = "a=" .. string.rep("x", 70000)
        local v, err = cookie.get(big, "a")
        assert.is_nil(v)
        assert.equal("cookie header too large", err)
        assert.equal(70000, #cookie.get(big, "a", 80000))
    end)

    it("survives NUL bytes and invalid UTF-8", function()
        assert.equal("a\0b", cookie.get("k=a\0b", "k"))
        -- latin1 in, UTF-8 out: byte 0xff is U+00FF
        assert.equal("\195\191", cookie.get("k=\255", "k"))
        assert.equal("%ff", cookie.get("k=%ff", "k"))
    end)

    it("raises on misuse", function()
        assert.has_error(function() cookie.get("a=1", "") end)
        assert.has_error(function() cookie.get("a=1", nil) end)
        assert.has_error(function() cookie.get(42, "a") end)
    end)
end)

describe("cookie.sign and cookie.unsign", function()
    it("round-trips and reports which secret verified", function()
        local v = cookie.sign("sid-1", "old")
        local sid, idx = cookie.unsign(v, { "new", "old" })
        assert.equal("sid-1", sid)
        assert.equal(2, idx)
    end)

    it("signs with the first secret of a list", function()
        assert.equal(cookie.sign("x", "new"), cookie.sign("x", { "new", "old" }))
    end)

    it("gives reasons for unsigned, tampered and retired values", function()
        local v = cookie.sign("sid", "k")
        assert.same({ nil, "cookie is not signed" }, { cookie.unsign("sid.x", "k") })
        local tampered = v:sub(1, -2) .. (v:sub(-1) == "A" and "B" or "A")
        assert.same({ nil, "signature mismatch" }, { cookie.unsign(tampered, "k") })
        assert.same({ nil, "signature mismatch" }, { cookie.unsign(v, "other") })
        assert.same({ nil, "signature mismatch" }, { cookie.unsign(v .. "=", "k") })
        assert.same({ nil, "signature mismatch" }, { cookie.unsign("s:", "k") })
    end)

    it("requires secrets: none, empty and non-strings are errors", function()
        assert.has_error(function() cookie.unsign("s:a.b", nil) end)
        assert.has_error(function() cookie.unsign("s:a.b", "") end)
        assert.has_error(function() cookie.unsign("s:a.b", {}) end)
        assert.has_error(function() cookie.unsign("s:a.b", { "ok", "" }) end)
        assert.has_error(function() cookie.sign("a", { 1 }) end)
    end)

    it("points misuse errors at the caller's line", function()
        local function where(f)
            local _, err = pcall(f)
            return err
        end
        assert.matches("^spec/unit/cookie_spec%.lua:%d+: bad argument #1 to 'sign'",
                       where(function() cookie.sign(5, "k") end))
        assert.matches("^spec/unit/cookie_spec%.lua:%d+: secret #1 must be",
                       where(function() cookie.unsign("s:a.b", { "" }) end))
        assert.matches("^spec/unit/cookie_spec%.lua:%d+: secret #1 must be",
                       where(function() cookie.keyring({ "" }) end))
        assert.matches("^spec/unit/cookie_spec%.lua:%d+: bad argument #1 to 'keygrip_sign'",
                       where(function() cookie.keygrip_sign(nil, "k") end))
    end)

    it("accepts secrets of any length", function()
        for _, n in ipairs { 1, 63, 64, 65, 200, 5000 } do
            local s = string.rep("k", n)
            assert.equal("sid", cookie.unsign(cookie.sign("sid", s), s))
        end
    end)
end)

describe("cookie.express_sid", function()
    local ring = cookie.keyring { "new", "old" }

    it("reads, decodes and verifies in one call", function()
        local v = cookie.sign("abc", "old"):gsub(":", "%%3A")
        local sid, idx = cookie.express_sid("x=1; connect.sid=" .. v, "connect.sid", ring)
        assert.equal("abc", sid)
        assert.equal(2, idx)
    end)

    it("has a reason for every way to fail", function()
        local function reason(h)
            return select(2, cookie.express_sid(h, "connect.sid", ring))
        end
        assert.equal("no cookie header", reason(nil))
        assert.equal("cookie not found", reason("a=b"))
        assert.equal("cookie is empty", reason("connect.sid="))
        assert.equal("cookie is not signed", reason("connect.sid=abc"))
        assert.equal("signature mismatch", reason("connect.sid=s:abc.def"))
        assert.equal("cookie header too large",
                     reason("connect.sid=" .. string.rep("a", 70000)))
    end)

    it("rejects a keyring of the wrong algorithm", function()
        assert.has_error(function()
            cookie.unsign("s:a.b", cookie.keyring("k", "sha1"))
        end)
    end)
end)

describe("cookie-session", function()
    local keys = cookie.keyring({ "k2", "k1" }, "sha1")

    local function header(body, key)
        local v = require("ffi") and body
        local sig = cookie.keygrip_sign("session=" .. v, key)
        return "session=" .. v .. "; session.sig=" .. sig
    end

    it("verifies with a rotated key and decodes the base64 JSON", function()
        local b64 = "eyJwYXNzcG9ydCI6eyJ1c2VyIjo3fX0=" -- {"passport":{"user":7}}
        local body, idx = cookie.session_cookie(header(b64, "k1"), "session", keys)
        assert.equal('{"passport":{"user":7}}', body)
        assert.equal(2, idx)
    end)

    it("rejects a missing, empty or wrong signature", function()
        local b64 = "e30"
        assert.same({ nil, "signature cookie not found" },
                    { cookie.session_cookie("session=" .. b64, "session", keys) })
        assert.same({ nil, "signature cookie not found" },
                    { cookie.session_cookie("session=e30; session.sig=", "session", keys) })
        assert.same({ nil, "signature mismatch" },
                    { cookie.session_cookie(header(b64, "k3"), "session", keys) })
    end)
end)
