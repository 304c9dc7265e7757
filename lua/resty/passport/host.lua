-- What authorize needs from the process it runs in: the clock, a logger and
-- a way to run a callback that may finish later.  Inside nginx these are
-- ngx's; in plain LuaJIT (tools, specs) plain ones.  Specs may replace any
-- field (the seam lua-resty-session uses).
local ngx = ngx -- luacheck: ignore 211 (nil outside nginx)

local pcall = pcall
local tostring = tostring

local _M = { _VERSION = "0.1.0" }

local in_nginx = ngx ~= nil and ngx.get_phase ~= nil
_M.in_nginx = in_nginx

-- Phases where a handshake may wait on cosockets and semaphores.
local yieldable = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true, ssl_session_fetch = true,
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

if in_nginx then
    local semaphore = require "ngx.semaphore"
    local get_phase = ngx.get_phase
    local ngx_log = ngx.log
    local ngx_now = ngx.now
    local spawn = ngx.thread.spawn
    local kill = ngx.thread.kill

    _M.levels = { debug = ngx.DEBUG, info = ngx.INFO, warn = ngx.WARN, err = ngx.ERR }

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
        if not yieldable[get_phase()] then
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
    local clock = require("socket").gettime

    _M.levels = { debug = 4, info = 3, warn = 2, err = 1 }
    _M.log_level = 0 -- silent unless a tool or spec turns it up

    function _M.now_ms()
        return clock() * 1000
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
