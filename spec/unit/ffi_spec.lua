-- The library is found through package.cpath, and the sanitizer run really
-- loads the sanitized build (RP_EXPECT_LIB is set by `make test-asan`).
local ffi = require "ffi"
local lib = require "resty.passport.ffi"

describe("ffi", function()
    it("loads the C library by full path from package.cpath", function()
        assert.matches("/librestypassport%.so$", lib.path)
        local expect = os.getenv("RP_EXPECT_LIB")
        if expect then
            assert.equal(expect, lib.path:sub(-#expect))
        end
    end)

    it("explains where it looked when a library is missing", function()
        local found, err = lib.load("librestypassport_does_not_exist")
        assert.is_nil(found)
        assert.matches("could not find librestypassport_does_not_exist.so", err, 1, true)
    end)

    it("names every error code of passport.h, each with its message", function()
        local f = assert(io.open("csrc/passport.h"))
        local header = f:read("*a")
        f:close()
        local n = 0
        for name, code in header:gmatch("RP_E([%u%d]+) = (%-%d+)") do
            n = n + 1
            assert.equal(tonumber(code), lib.E[name], name)
            assert.is_string(lib.reasons[lib.E[name]], name)
        end
        assert.equal(18, n)
        assert.equal("cookie not found", lib.reasons[lib.E.NOTFOUND])
        assert.equal("invalid UTF-8", lib.reasons[lib.E.UTF8])
    end)

    it("shares one small buffer and lends a temporary one for more", function()
        local small = lib.get_buf(10)
        assert.equal(small, lib.get_buf(16384))
        local big = lib.get_buf(1048576)
        assert.not_equal(small, big)
        assert.not_equal(big, lib.get_buf(1048576)) -- not kept
        assert.equal(small, lib.get_buf(100))       -- and the small one stays
        big[1048575] = 7 -- all of it is there
        assert.equal(7, big[1048575])
    end)
end)

describe("rp_utf8_scan", function()
    local at = ffi.new("size_t[2]")
    local function scan(s)
        local rc = lib.C.rp_utf8_scan(s, #s, at, at + 1)
        if rc == 0 then return "ok" end
        assert.equal(lib.E.UTF8, rc)
        return tonumber(at[0]), tonumber(at[1])
    end

    it("finds nothing in valid text", function()
        assert.equal("ok", scan(""))
        assert.equal("ok", scan("plain ascii, long enough for the 8-byte steps"))
        assert.equal("ok", scan("caf\195\169 \226\130\172 \240\159\141\170 \244\143\191\191"))
    end)

    it("reports the first maximal subpart, as a WHATWG decoder replaces it", function()
        assert.same({ 1, 1 }, { scan("a\128b") })          -- stray continuation
        assert.same({ 0, 1 }, { scan("\192\175") })         -- C0: never a lead
        assert.same({ 0, 1 }, { scan("\245\128\128\128") }) -- past U+10FFFF
        assert.same({ 0, 1 }, { scan("\237\160\128") })     -- a surrogate: ED then A0
        assert.same({ 0, 1 }, { scan("\224\128\128") })     -- overlong: E0 then 80
        assert.same({ 0, 2 }, { scan("\225\128a") })        -- cut short by 'a'
        assert.same({ 0, 3 }, { scan("\240\159\141a") })    -- three of four
        assert.same({ 2, 3 }, { scan("ok\240\159\141") })   -- cut short by the end
        assert.same({ 4, 1 }, { scan("\240\159\141\170\255") })
    end)

    it("refuses a NULL with a length", function()
        assert.equal(lib.E.ARG, lib.C.rp_utf8_scan(nil, 1, at, at + 1))
    end)
end)
