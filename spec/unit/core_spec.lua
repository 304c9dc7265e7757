-- The library is found through package.cpath, and the sanitizer run really
-- loads the sanitized build (RP_EXPECT_LIB is set by `make test-asan`).
local core = require "resty.passport.core"

describe("core", function()
    it("loads the C library by full path from package.cpath", function()
        assert.matches("/librestypassport%.so$", core.path)
        local expect = os.getenv("RP_EXPECT_LIB")
        if expect then
            assert.equal(expect, core.path:sub(-#expect))
        end
    end)

    it("explains where it looked when a library is missing", function()
        local lib, err = core.load("librestypassport_does_not_exist")
        assert.is_nil(lib)
        assert.matches("could not find librestypassport_does_not_exist.so", err, 1, true)
    end)
end)
