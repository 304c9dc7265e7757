-- Timing for `make bench`, LuaJIT side.  Benchmarks ("runners": a LuaJIT
-- loop, or a C loop called once through FFI) are calibrated to ~RUN_NS per
-- run, then run in turn, RUNS times each: interleaving keeps a ratio fair
-- when the host's speed drifts.  Each result is the median ns/op, its
-- fastest and slowest run, and its CPU share (CPU time / wall time: below 1
-- when another process took the CPU).  Lua runners also report what the JIT
-- did with their loop.
local ffi = require "ffi"
local jutil = require "jit.util"
local vmdef = require "jit.vmdef"

ffi.cdef [[
struct rp_bench_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct rp_bench_timespec *ts);
]]

local _M = { RUNS = 21, RUN_NS = 50e6 }

local ts = ffi.new("struct rp_bench_timespec")
local CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID = 1, 3

local function clock_ns(clk)
    ffi.C.clock_gettime(clk, ts)
    return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

-- A fresh loop per benchmark: loadstring gives new prototypes, so each
-- benchmark gets its own root trace instead of side traces of a shared one.
local LOOP = [[
local f, a, b, c = ...
return function(n)
    local r, e
    for _ = 1, n do r, e = f(a, b, c) end
    return r, e
end]]

-- A LuaJIT runner: f(a, b, c) in a loop; check(r, e) vets the last result.
function _M.lua(f, a, b, c, check)
    local loop = loadstring(LOOP, "=bench loop")(f, a, b, c)
    return { loop = loop, check = check,
             jit = { compiled = false, aborts = {}, traces = 0 } }
end

-- A C runner: run(n) performs n operations and returns a value that
-- check accepts.
function _M.c(run, check)
    return { loop = run, check = check }
end

-- The JIT watch: LuaJIT keeps one handler per event, so while it is
-- attached it displaces jit.v/jit.dump.  Aborts go to the runner that was
-- running.
local function watch(current)
    local starts = {}
    local function abort_msg(code, info)
        local msg = vmdef.traceerr[code] or tostring(code)
        if type(info) == "function" then
            local fi = jutil.funcinfo(info)
            info = fi.source and (fi.source .. ":" .. (fi.linedefined or "?"))
                   or tostring(info)
        end
        local ok, s = pcall(string.format, msg, info)
        return ok and s or msg
    end
    local function cb(what, tr, func, _, otr, oex)
        local r = current()
        if what == "start" then
            starts[tr] = func
        elseif what == "stop" and r and r.jit then
            local st, info = r.jit, jutil.traceinfo(tr)
            st.traces = st.traces + 1
            -- Any trace starting at the loop counts: "loop" closes on
            -- itself; "stitch" ends at a call the JIT cannot compile and
            -- goes on in a new trace after it; "root" links to a trace
            -- recorded earlier (of the function the loop calls).
            if starts[tr] == r.loop and info and (not st.compiled or
                    (st.link ~= "loop" and info.linktype == "loop")) then
                st.compiled, st.trace = true, tr
                st.link, st.linkto = info.linktype, info.link
            end
        elseif what == "abort" and r and r.jit then
            local msg = abort_msg(otr, oex)
            if not r.jit.aborts[msg] then
                r.jit.aborts[msg] = true
                r.jit.aborts[#r.jit.aborts + 1] = msg
            end
        end
    end
    jit.attach(cb, "trace")
    return function() jit.attach(cb) end
end

local function timed(r, n)
    collectgarbage()
    local c0, t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID), clock_ns(CLOCK_MONOTONIC)
    local v, e = r.loop(n)
    local t1, c1 = clock_ns(CLOCK_MONOTONIC), clock_ns(CLOCK_THREAD_CPUTIME_ID)
    assert(r.check(v, e), "benchmark returned a wrong result: "
           .. tostring(v) .. " " .. tostring(e))
    return t1 - t0, c1 - c0
end

-- Runs every runner RUNS times, in turn; fills r.ns, r.lo, r.hi, r.share
-- and r.samples (ns/op per round, for paired ratios).
function _M.interleave(runners)
    local cur
    local unwatch = watch(function() return cur end)
    for _, r in ipairs(runners) do -- warm-up and calibration
        cur = r
        local n = 100
        while true do
            local dt = timed(r, n)
            if dt > 10e6 then
                r.n = math.ceil(n * _M.RUN_NS / dt)
                break
            end
            n = n * 4
        end
    end
    for _, r in ipairs(runners) do r.samples, r.wall, r.cpu = {}, 0, 0 end
    for i = 1, _M.RUNS do
        for _, r in ipairs(runners) do
            cur = r
            local dt, dc = timed(r, r.n)
            r.samples[i], r.wall, r.cpu = dt / r.n, r.wall + dt, r.cpu + dc
        end
    end
    cur = nil
    unwatch()
    for _, r in ipairs(runners) do
        local t = { unpack(r.samples) }
        table.sort(t)
        r.ns, r.lo, r.hi = t[math.ceil(#t / 2)], t[1], t[#t]
        r.share = r.cpu / r.wall
    end
end

-- The median of x.samples[i] / y.samples[i]: runs taken side by side.
function _M.ratio(x, y)
    local t = {}
    for i = 1, #x.samples do t[i] = x.samples[i] / y.samples[i] end
    table.sort(t)
    return t[math.ceil(#t / 2)]
end

-- One line about the JIT and a Lua runner's loop.
function _M.jit_note(r)
    local st = r.jit
    if not jit.status() then
        return "JIT disabled"
    end
    local s = "NOT compiled"
    if st.compiled then
        local how = {
            loop = "loops",
            stitch = "stitched around a call the JIT cannot compile",
            root = "links to trace #" .. tostring(st.linkto),
        }
        s = "compiled (trace #" .. st.trace .. ", "
            .. (how[st.link] or ("ends: " .. tostring(st.link))) .. ")"
    end
    s = s .. ", " .. st.traces .. " trace(s) in all"
    if #st.aborts > 0 then
        s = s .. "; distinct trace aborts: " .. table.concat(st.aborts, "; ")
    else
        s = s .. ", no trace aborts"
    end
    return s
end

return _M
