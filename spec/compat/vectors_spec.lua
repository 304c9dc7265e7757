-- Every vector made by the real Node packages (spec/compat/gen_vectors.js)
-- must come out the same here.  The expected values are Node's output; none
-- is written by hand.
local cjson = require "cjson"
local hex = require "support.hex"
local cookie = require "resty.passport.cookie"
local session = require "resty.passport.session"

local DIR = "spec/compat/vectors/"

local function load(name)
    local f = assert(io.open(DIR .. name))
    local v = cjson.decode(f:read("*a"))
    f:close()
    assert(#v > 0, name .. " is empty")
    return v
end

local function show(s)
    if type(s) == "string" then return ("%q"):format(s) end
    return tostring(s)
end

-- Runs every vector and reports all mismatches at once, with their "why".
local function check_all(vectors, run)
    local bad = {}
    for i, v in ipairs(vectors) do
        local ok, err = pcall(run, v)
        if not ok then
            bad[#bad + 1] = ("#%d (%s): %s"):format(i, v.why or "?", tostring(err))
            if #bad >= 20 then break end
        end
    end
    assert(#bad == 0, #bad .. " mismatches:\n" .. table.concat(bad, "\n"))
end

local function eq(expect, got, what)
    if expect ~= got then
        error(what .. ": node says " .. show(expect) .. ", we say " .. show(got), 0)
    end
end

-- Node's JSON text of a string to the bytes a Lua string holds: UTF-8, and
-- WTF-8 for lone surrogates, which cjson refuses (JSON.parse accepts them).
local function enc(cp)
    if cp < 0x80 then return string.char(cp) end
    if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
    if cp < 0x10000 then
        return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64,
                           0x80 + cp % 64)
    end
    return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
                       0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end
local function json_string(text)
    local body = text:sub(2, -2)
    local units = {}
    local i = 1
    while i <= #body do
        local c = body:sub(i, i)
        if c ~= "\\" then
            units[#units + 1] = c
            i = i + 1
        else
            local e = body:sub(i + 1, i + 1)
            if e == "u" then
                local hi = tonumber(body:sub(i + 2, i + 5), 16)
                local lo = body:sub(i + 6, i + 7) == "\\u" and tonumber(body:sub(i + 8, i + 11), 16)
                if hi >= 0xD800 and hi < 0xDC00 and lo and lo >= 0xDC00 and lo < 0xE000 then
                    units[#units + 1] = enc(0x10000 + (hi - 0xD800) * 1024 + lo - 0xDC00)
                    i = i + 12
                else
                    units[#units + 1] = enc(hi)
                    i = i + 6
                end
            else
                units[#units + 1] = ({ n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" })[e] or e
                i = i + 2
            end
        end
    end
    return table.concat(units)
end

local rings = setmetatable({}, { __mode = "k" })
local function ring_for(secrets, alg)
    local key = table.concat(secrets, "\0") .. alg
    rings[key] = rings[key] or cookie.keyring(hex.list(secrets), alg)
    return rings[key]
end

describe("compatibility vectors", function()
    it("cookie.get matches npm cookie 0.7 parse()", function()
        check_all(load("cookie_get.json"), function(v)
            local got = cookie.get(hex.decode(v.header), v.name, 1e7)
            eq(hex.decode(v.value), got, "value")
        end)
    end)

    it("express_sid matches the sid express-session 1.19 looks up", function()
        check_all(load("express_sid.json"), function(v)
            local sid = cookie.express_sid(hex.decode(v.header), v.name,
                                           ring_for(v.secrets, "sha256"), 1e7)
            -- express-session treats an empty id as none: it makes a new session
            if sid == "" then sid = nil end
            eq(hex.decode(v.sid), sid, "sid")
        end)
    end)

    it("unsign matches cookie-signature", function()
        check_all(load("unsign.json"), function(v)
            local got = cookie.unsign("s:" .. hex.decode(v.value), ring_for(v.secrets, "sha256"))
            eq(hex.decode(v.result), got, "result")
        end)
    end)

    it("sign matches cookie-signature", function()
        check_all(load("sign.json"), function(v)
            eq("s:" .. v.signed, cookie.sign(hex.decode(v.sid), hex.decode(v.secret)), "signed")
        end)
    end)

    it("session_cookie matches cookie-session 2.1 with keygrip", function()
        check_all(load("cookie_session.json"), function(v)
            local body = cookie.session_cookie(hex.decode(v.header), v.name,
                                               ring_for(v.keys, "sha1"), 1e7)
            local found = body ~= nil
            if found then
                -- cookie-session also needs the body to be JSON.parse-able
                local s, err = session.decode(body)
                found = s ~= nil or err == "JSON is not an object"
            end
            eq(tostring(v.found), tostring(found), "found")
            if v.found then eq(hex.decode(v.body), body, "body") end
        end)
    end)

    it("session.decode matches JSON.parse and passport 0.7", function()
        check_all(load("session.json"), function(v)
            local s, err = session.decode(hex.decode(v.json), nil, 512)
            eq(tostring(v.ok), tostring(s ~= nil), "ok (" .. tostring(err) .. ")")
            if not v.ok then return end
            local expires = s.expires
            if s.expires_invalid then expires = "invalid" end
            if v.expires == cjson.null then v.expires = nil end
            eq(v.expires, expires, "expires")
            local oma = v.original_max_age
            if oma == cjson.null then oma = nil end
            eq(oma, s.original_max_age, "original_max_age")
            eq(v.passport, s.passport, "passport")
            eq(v.user_present, s.user_present, "user_present")
            eq(v.user_counts, s.user_ok, "user_counts")
            if v.user_counts then
                -- compare as JSON values: decode both sides with cjson
                if v.user:sub(1, 1) == '"' then
                    eq(json_string(v.user), s.user, "user")
                else
                    local want = cjson.decode("[" .. v.user .. "]")[1]
                    eq(cjson.encode({ want }), cjson.encode({ s.user }), "user")
                end
            end
        end)
    end)
end)
