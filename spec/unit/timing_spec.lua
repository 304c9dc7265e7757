-- Verification time does not depend on how many leading signature bytes
-- are right.  Two signatures for one sid: one wrong in every character,
-- one wrong only in its last character (16 strings of each kind).  Many pairs of timed batches, the
-- two kinds back to back in a random order each time; the statistic is a
-- sign test on the paired differences: the share of pairs where the
-- almost-right one was slower.  With no dependence it is 1/2 whatever the
-- noise (a preempted batch moves one pair, not the median of all); an
-- early-exit compare makes almost-right slower in nearly every pair.  The
-- self-check runs the same statistic on a deliberately leaky Lua verifier
-- (same HMAC, then a byte loop that stops at the first difference) and
-- must see it.
-- Reports go to stderr: stdout is busted's JSON, which the test summary reads.
-- Tagged "timing": the ASan and valgrind suites leave it out, since an
-- instrumented runtime times its own instrumentation (seen under valgrind in
-- CI: the leaky compare's 99 % fell to 72 %); the plain unit suite runs it.
local function say(s) io.stderr:write(tostring(s), "\n") end
local cookie = require "resty.passport.cookie"

local ffi = require "ffi"
pcall(ffi.cdef, [[
    typedef struct rp_timing_ts { long sec; long nsec; } rp_timing_ts;
    int clock_gettime(int clk, rp_timing_ts *ts);
]])
local ts = ffi.new("rp_timing_ts")
local function now_ns()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.sec) * 1e9 + tonumber(ts.nsec)
end

local SECRET = "timing spec secret"
local SID = "TimingSpecSid0123456789abcdefABCD"
local ring = cookie.keyring(SECRET)
local good = cookie.sign(SID, ring)                        -- "s:<sid>.<sig>"
local sig = good:sub(#SID + 4)
assert(#sig == 43)

-- Several strings of each kind: each string sits at its own address, and
-- where a string sits moves the timing by a fraction of a nanosecond
-- (alignment, cache lines) whatever its content.  Picking a random one per
-- pair turns that into noise instead of a bias between the kinds.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function shift(c, k)
    local i = B64:find(c, 1, true) - 1
    return B64:sub((i + k) % 64 + 1, (i + k) % 64 + 1)
end
local VARIANTS = 16
local WRONG, ALMOST = {}, {}
for k = 1, VARIANTS do
    local w = {}
    for i = 1, #sig do w[i] = shift(sig:sub(i, i), k) end  -- every character wrong
    WRONG[k] = "s:" .. SID .. "." .. table.concat(w)
    ALMOST[k] = "s:" .. SID .. "." .. sig:sub(1, -2) .. shift(sig:sub(-1), k) -- only the last
end
local function header(v) return "a=1; connect.sid=" .. v:gsub(":", "%%3A") .. "; b=2" end

-- Times `batch` calls of f(arg); ns per call.
local function timed(f, arg, batch)
    local t0 = now_ns()
    for _ = 1, batch do f(arg) end
    return (now_ns() - t0) / batch
end

-- Pairs of (almost-right, all-wrong) timings, kinds in random order per
-- pair, a random string of each kind per pair.
-- Returns the share of pairs where almost-right was slower, and the
-- median relative difference.
local function compare(f, wrong, almost, n, batch)
    for _ = 1, 20 do
        for k = 1, VARIANTS do f(wrong[k]); f(almost[k]) end -- JIT warm-up
    end
    local slower, diffs = 0, {}
    for i = 1, n do
        local a, w
        local sa, sw = almost[math.random(VARIANTS)], wrong[math.random(VARIANTS)]
        if math.random(2) == 1 then
            a = timed(f, sa, batch); w = timed(f, sw, batch)
        else
            w = timed(f, sw, batch); a = timed(f, sa, batch)
        end
        if a > w then
            slower = slower + 1
        elseif a == w then
            slower = slower + 0.5 -- a tie (the clock's resolution) is neither
        end
        diffs[i] = (a - w) / w
    end
    table.sort(diffs)
    return slower / n, diffs[math.floor(n / 2) + 1]
end

local N, BATCH = 1000, 40
-- Under no dependence the share is Binomial(N, 1/2)/N: sd 0.016 at N = 1000.
-- |share - 1/2| < 0.12 (7.5 sd) passes; the self-check must exceed 0.25.
-- A busy neighbour on the shared VM can bias one run (seen: 38.8 % once in
-- dozens), so a constant-time verifier gets up to 3 runs to show it; the
-- leaky one is seen in each of its runs (94-99 %), so a real leak of that
-- size would fail all three.  The self-check gets the same 3 runs to see
-- its leak: a statistic that misses it three times is broken.
local TOLERANCE, DETECT, ATTEMPTS = 0.12, 0.25, 3

local function constant_time(label, f, wrong, almost)
    local seen = {}
    for _ = 1, ATTEMPTS do
        local share, med = compare(f, wrong, almost, N, BATCH)
        seen[#seen + 1] = ("%.1f %% (median %+.2f %%)"):format(share * 100, med * 100)
        if math.abs(share - 0.5) < TOLERANCE then break end
    end
    say(("\n[timing] %s: almost-right slower in %s of %d pairs"):format(
        label, table.concat(seen, ", then "), N))
    local last = tonumber(seen[#seen]:match("^([%d.]+)")) / 100
    assert.is_true(math.abs(last - 0.5) < TOLERANCE, label .. ": almost-right slower in "
                   .. table.concat(seen, ", ") .. " of pairs")
end

describe("signature verification time #timing", function()
    math.randomseed(os.time())

    it("does not depend on how many leading bytes are right (cookie.unsign)", function()
        for k = 1, VARIANTS do
            assert.is_nil(cookie.unsign(WRONG[k], ring))
            assert.is_nil(cookie.unsign(ALMOST[k], ring))
        end
        constant_time("cookie.unsign", function(v) return cookie.unsign(v, ring) end,
                      WRONG, ALMOST)
    end)

    it("does not depend on it either through the Cookie header (cookie.express_sid)", function()
        local hw, ha = {}, {}
        for k = 1, VARIANTS do
            hw[k], ha[k] = header(WRONG[k]), header(ALMOST[k])
            assert.is_nil(cookie.express_sid(hw[k], "connect.sid", ring))
            assert.is_nil(cookie.express_sid(ha[k], "connect.sid", ring))
        end
        constant_time("cookie.express_sid",
                      function(h) return cookie.express_sid(h, "connect.sid", ring) end, hw, ha)
    end)

    it("self-check: the same statistic catches an early-exit compare", function()
        local byte = string.byte
        -- the same HMAC through the FFI, then a compare that stops early
        local function leaky(v)
            local expected = cookie.sign(SID, ring)
            local n = #expected
            if #v ~= n then return nil end
            for i = 1, n do
                if byte(v, i) ~= byte(expected, i) then return nil end
            end
            return SID
        end
        for k = 1, VARIANTS do
            assert.is_nil(leaky(WRONG[k]))
            assert.is_nil(leaky(ALMOST[k]))
        end
        assert.equal(SID, leaky(good))
        local seen, share, med = {}
        for _ = 1, ATTEMPTS do
            share, med = compare(leaky, WRONG, ALMOST, N, BATCH)
            seen[#seen + 1] = ("%.1f %% (median %+.2f %%)"):format(share * 100, med * 100)
            if math.abs(share - 0.5) > DETECT then break end
        end
        say(("\n[timing] leaky Lua compare: almost-right slower in %s of %d pairs"):format(
            table.concat(seen, ", then "), N))
        assert.is_true(math.abs(share - 0.5) > DETECT,
                       "the statistic missed a leak: " .. table.concat(seen, ", "))
    end)
end)
