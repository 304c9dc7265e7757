-- The one place that asks "are we inside nginx?", and what the rest of
-- the library needs from the process it runs in: which phases may wait,
-- the clock, a logger and a way to run a callback that may finish later.
-- Inside nginx these are ngx's; in plain LuaJIT (tools, specs) plain ones.
--
--   host.in_nginx      true when ngx's API is there (ngx.get_phase)
--   host.phase()       the current phase (ngx.get_phase), nil outside nginx
--   host.YIELDABLE     phases where a handler may wait on semaphores
--   host.COSOCKET      phases where cosockets are allowed
--   host.now_ms()      ms since the epoch
--   host.clock()       seconds of a monotonic clock, to the us (durations)
--   host.log(level, msg)  level: "debug" | "info" | "warn" | "err"
--   host.run(fn, timeout) runs fn(finish), returns what it was given
--
-- Specs may replace any field (the seam lua-resty-session uses).  in_nginx
-- is read when a choice is made, not cached: the Redis store reads it in
-- new() to pick its transport, so a spec may set it to false around a
-- new() to drive the hiredis transport from inside nginx (it blocks the
-- worker: tests only).  Everything else here was bound at load time and
-- does not follow it.
local ffi = require "ffi"

local ngx = ngx -- luacheck: ignore 211 (nil outside nginx)

local floor = math.floor
local pcall = pcall
local tonumber = tonumber
local tostring = tostring

local _M = { _VERSION = "0.1.0" }

local in_nginx = ngx ~= nil and ngx.get_phase ~= nil
_M.in_nginx = in_nginx

-- Phases where a handshake may wait on cosockets and semaphores.
local YIELDABLE = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true,
}
_M.YIELDABLE = YIELDABLE

-- Phases where lua-nginx-module allows cosockets.
_M.COSOCKET = {
    rewrite = true, server_rewrite = true, access = true, content = true,
    timer = true, ssl_cert = true, ssl_session_fetch = true,
    ssl_client_hello = true, preread = true,
}

-- A callback that raises before deciding is rejected; one that raises after
-- accept() keeps its verdict, and the error is only logged.
local function raised(finish, decided, err)
    if decided == nil then
        finish({ thrown = tostring(err) })
    else
        _M.log("err", "passport: callback raised after calling accept: " .. tostring(err))
    end
end

-- clock_gettime(CLOCK_MONOTONIC) through the FFI (the vDSO: no syscall):
-- ngx.now() is the event loop's cached time, too coarse for a store
-- request that takes 100 us.
-- Declared under a name of our own (asm label): other code in the same
-- LuaJIT state may declare clock_gettime with its own struct type.
if not pcall(ffi.typeof, "rp_timespec") then
    ffi.cdef [[
    typedef struct rp_timespec { long sec; long nsec; } rp_timespec;
    int rp_clock_gettime(int clk, rp_timespec *ts) __asm__("clock_gettime");
    ]]
end
local ts = ffi.new("rp_timespec")
local CLOCK_MONOTONIC = 1
function _M.clock()
    ffi.C.rp_clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
end

if in_nginx then
    local semaphore = require "ngx.semaphore"
    local get_phase = ngx.get_phase
    local ngx_log = ngx.log
    local ngx_now = ngx.now
    local spawn = ngx.thread.spawn
    local kill = ngx.thread.kill

    _M.levels = { debug = ngx.DEBUG, info = ngx.INFO, warn = ngx.WARN, err = ngx.ERR }
    _M.phase = get_phase

    function _M.now_ms()
        return ngx_now() * 1000
    end

    function _M.log(level, msg)
        ngx_log(_M.levels[level] or ngx.ERR, msg)
    end

    -- Runs fn(finish) and returns the first value given to finish, waiting
    -- at most timeout seconds for it.  fn runs in a light thread so that a
    -- callback stuck in I/O can be abandoned when the time is up.
    function _M.run(fn, timeout)
        local result
        local sema
        local function finish(v)
            if result == nil then
                result = v
                if sema then sema:post(1) end
            end
        end
        local function body()
            local ok, err = pcall(fn, finish)
            if not ok then raised(finish, result, err) end
        end
        if not YIELDABLE[get_phase()] then
            body()
            return result or { pending = true }
        end
        sema = semaphore.new()
        local thread = spawn(body)
        if result == nil then
            local ok = sema:wait(timeout)
            if not ok and result == nil then
                result = { timeout = true }
            end
        end
        kill(thread) -- a no-op once it has ended
        return result
    end
else
    -- gettimeofday through the FFI: a cheap clock that needs no C module
    if not pcall(ffi.typeof, "rp_timeval") then
        ffi.cdef [[
        typedef struct rp_timeval { long sec; long usec; } rp_timeval;
        int gettimeofday(rp_timeval *tv, void *tz);
        ]]
    end
    local C = ffi.C
    local tv = ffi.new("rp_timeval")

    _M.levels = { debug = 4, info = 3, warn = 2, err = 1 }
    _M.log_level = 0 -- silent unless a tool or spec turns it up

    function _M.phase()
        return nil
    end

    -- Whole milliseconds, like ngx.now() * 1000.
    function _M.now_ms()
        C.gettimeofday(tv, nil)
        return tonumber(tv.sec) * 1000 + floor(tonumber(tv.usec) / 1000)
    end

    function _M.log(level, msg)
        if (_M.levels[level] or 1) <= _M.log_level then
            io.stderr:write("[", level, "] ", msg, "\n")
        end
    end

    -- No event loop here: the callback must decide before it returns.
    function _M.run(fn)
        local result
        local function finish(v)
            if result == nil then result = v end
        end
        local ok, err = pcall(fn, finish)
        if not ok then raised(finish, result, err) end
        return result or { pending = true }
    end
end

return _M
