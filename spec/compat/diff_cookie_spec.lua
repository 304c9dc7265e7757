-- Differential fuzzing of the Cookie header parser against npm `cookie`:
-- random headers (a fresh seed each run, printed on failure, plus a fixed
-- one), parsed by Node and by us, must give the same value.
local cjson = require "cjson"
local hex = require "support.hex"
local cookie = require "resty.passport.cookie"

local CASES = 3000

local function node_cases(seed)
    local p = assert(io.popen("node spec/compat/diff_cookie.js " .. seed .. " " .. CASES .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    local ok, cases = pcall(cjson.decode, out)
    assert(ok and type(cases) == "table", "node said: " .. out:sub(1, 500))
    return cases
end

describe("cookie.get against npm cookie on random headers", function()
    for _, seed in ipairs { 20261123, os.time() % 1000000007 } do
        it("agrees on " .. CASES .. " headers (seed " .. seed .. ")", function()
            local cases = node_cases(seed)
            assert.equal(CASES, #cases)
            for i, c in ipairs(cases) do
                local got = cookie.get(hex.decode(c.header), c.name)
                local want = hex.decode(c.value)
                if got ~= want then
                    error(("case %d (seed %d): header %q, name %q: node %q, we %q")
                          :format(i, seed, hex.decode(c.header), c.name, tostring(want), tostring(got)))
                end
            end
        end)
    end
end)
