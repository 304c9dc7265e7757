-- Timing for the LuaJIT side of `make bench`: the same method as floor.c
-- and node.js (calibrate to ~150 ms per run, median of RUNS runs, monotonic
-- clock), plus a watch on the JIT that tells whether the timed loop was
-- compiled and, if not, why.
local ffi = require "ffi"
local jutil = require "jit.util"
local vmdef = require "jit.vmdef"

ffi.cdef [[
struct rp_bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct rp_bench_timespec *ts);
]]

local _M = { RUNS = 9, RUN_NS = 150e6 }

local ts = ffi.new("struct rp_bench_timespec")
local CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID = 1, 3

local function clock_ns(clk)
    ffi.C.clock_gettime(clk, ts)
    return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

local function now_ns() return clock_ns(CLOCK_MONOTONIC) end

-- A fresh loop per benchmark: loadstring gives new prototypes, so each
-- benchmark gets its own root trace instead of side traces of a shared one.
local LOOP = [[
local f, a, b, c = ...
return function(n)
    local r, e
    for _ = 1, n do r, e = f(a, b, c) end
    return r, e
end]]

-- Watches the JIT while a benchmark runs: whether a trace starting in
-- `loop` was compiled, how many traces were made, and every distinct trace
-- abort (only this benchmark runs meanwhile).  LuaJIT keeps one handler per
-- event, so this displaces jit.v/jit.dump while it is attached.
local function watch(loop)
    local st = { compiled = false, aborts = {}, starts = {},
                 traces = 0 }
    local function abort_msg(code, info)
        local msg = vmdef.traceerr[code] or tostring(code)
        if type(info) == "function" then
            local fi = jutil.funcinfo(info)
            info = fi.source and (fi.source .. ":" .. (fi.linedefined or "?"))
                   or tostring(info)
        end
        return (pcall(string.format, msg, info)) and msg:format(info) or msg
    end
    local function cb(what, tr, func, _, otr, oex)
        if what == "start" then
            st.starts[tr] = func
        elseif what == "stop" then
            st.traces = st.traces + 1
            local info = jutil.traceinfo(tr)
            -- "stitch": the trace ends at a call to a classic Lua C
            -- function (cjson) and goes on in a new trace after it.
            if st.starts[tr] == loop and not st.compiled and info and
                    (info.linktype == "loop" or info.linktype == "stitch") then
                st.compiled, st.trace, st.link = true, tr, info.linktype
            end
        elseif what == "abort" then
            local msg = abort_msg(otr, oex)
            if not st.aborts[msg] then
                st.aborts[msg] = true
                st.aborts[#st.aborts + 1] = msg
            end
        end
    end
    jit.attach(cb, "trace")
    return st, function() jit.attach(cb) end
end

-- Times f(a, b, c); check(r, e) must accept the result of every run.
-- Returns the median ns/op and a status: the JIT's work on the loop, and
-- share (CPU time / wall time of the timed runs).
function _M.measure(f, a, b, c, check)
    local loop = loadstring(LOOP, "=bench loop")(f, a, b, c)
    local st, unwatch = watch(loop)

    -- Warm-up and calibration (this is also where the loop gets compiled).
    local n = 1000
    while true do
        local t0 = now_ns()
        local r, e = loop(n)
        local dt = now_ns() - t0
        assert(check(r, e), "benchmark returned a wrong result: "
               .. tostring(r) .. " " .. tostring(e))
        if dt > 30e6 then
            n = math.ceil(n * _M.RUN_NS / dt)
            break
        end
        n = n * 4
    end

    -- CPU time over wall time: below 1 when other work took the CPU.
    local t, wall, cpu = {}, 0, 0
    for i = 1, _M.RUNS do
        collectgarbage()
        local c0, t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID), now_ns()
        local r, e = loop(n)
        local dt = now_ns() - t0
        cpu = cpu + clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0
        wall = wall + dt
        t[i] = dt / n
        assert(check(r, e), "benchmark result changed")
    end
    unwatch()
    table.sort(t)
    st.share = cpu / wall
    return t[math.ceil(_M.RUNS / 2)], st
end

-- One line about the JIT, for the report.
function _M.jit_note(st)
    if not jit.status() then
        return "JIT disabled"
    end
    local s = "NOT compiled"
    if st.compiled then
        s = "compiled (trace #" .. st.trace .. (st.link == "loop" and ", loops)"
            or ", stitched around a Lua C function call)")
    end
    s = s .. ", " .. st.traces .. " trace(s) in all"
    if #st.aborts > 0 then
        s = s .. "; distinct trace aborts: "
            .. table.concat(st.aborts, "; ")
    else
        s = s .. ", no trace aborts"
    end
    return s
end

return _M
