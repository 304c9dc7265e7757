-- What the benches share: statistics, running commands and wrk, the
-- gateway processes' memory and CPU, the sessions they log in with, and
-- the directives the README recommends for held sockets.
--
--   local common = require "common"          -- package.path has bench/
--   common.median(list), common.list(list, "%.2f"), common.spread(list)
--   common.sh(cmd)                           --> stdout and stderr
--   common.wrk{ port =, path =, conns = 50, seconds = 3, header = "Cookie: ...",
--               cpu = "1" }                  --> req/s, p50 ms, requests
--   common.rss_kb(pids), common.cpu_s(pids [, "schedstat"])
--   local cookies_path = common.seed_sessions(redis, n, secret, dir)
--   common.TUNE, common.MULTIPLEX            -- from TUNE / TUNE_HTTP / MULTIPLEX
local proc = require "support.proc"
local cookie = require "resty.passport.cookie"

local _M = {}

function _M.median(t)
    local c = {}
    for i, v in ipairs(t) do c[i] = v end
    table.sort(c)
    local n = #c
    return n % 2 == 1 and c[(n + 1) / 2] or (c[n / 2] + c[n / 2 + 1]) / 2
end

function _M.list(t, fmt)
    local out = {}
    for i, v in ipairs(t) do out[i] = fmt:format(v) end
    return table.concat(out, " ")
end

-- (max - min) / median, in %: how far apart a row's rounds are.
function _M.spread(t)
    return (math.max(unpack(t)) - math.min(unpack(t))) / _M.median(t) * 100
end

function _M.sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    return out
end

-- wrk's "1.23ms" / "456.00us" / "1.20s" in ms.
local function ms_of(s)
    local v, unit = (s or ""):match("^([%d%.]+)(%a+)$")
    v = tonumber(v)
    if not v then return nil end
    return v * (({ us = 0.001, ms = 1, s = 1000 })[unit] or 0 / 0)
end

-- One wrk run (-t1 --latency): req/s, p50 in ms, requests done.  Any
-- non-2xx answer is an error: a bench that measures refusals is wrong.
-- o.cpu pins wrk (taskset -c).
function _M.wrk(o)
    local cmd = ("wrk -t1 -c%d -d%ds --latency%s http://127.0.0.1:%d%s")
                :format(o.conns or 50, o.seconds or 3, o.header and (" -H %q"):format(o.header) or "",
                        o.port, o.path)
    if o.cpu then cmd = "taskset -c " .. o.cpu .. " " .. cmd end
    local out = _M.sh(cmd)
    local rps = tonumber(out:match("Requests/sec:%s*([%d%.]+)"))
    local bad = out:match("Non%-2xx or 3xx responses: (%d+)")
    if not rps then error("wrk failed:\n" .. out) end
    if bad then error(o.path .. ": " .. bad .. " failed responses\n" .. out) end
    -- the latency distribution's line, not the stdev column's "50%"
    return rps, ms_of(out:match("\n%s*50%%%s+(%S+)")), tonumber(out:match("(%d+) requests in"))
end

-- Resident memory of pids, kB.
function _M.rss_kb(pids)
    local total = 0
    for _, pid in ipairs(pids) do
        local f = io.open("/proc/" .. pid .. "/status")
        local status = f and f:read("*a") or ""
        if f then f:close() end
        total = total + (tonumber(status:match("VmRSS:%s*(%d+)")) or 0)
    end
    return total
end

-- CPU seconds (user + system) of pids from /proc/<pid>/stat (10 ms
-- ticks); src "schedstat": the time on a CPU from /proc/<pid>/schedstat
-- instead (ns; nginx workers are one thread each).
function _M.cpu_s(pids, src)
    local total = 0
    for _, pid in ipairs(pids) do
        if src == "schedstat" then
            local f = io.open("/proc/" .. pid .. "/schedstat")
            local ns = f and tonumber((f:read("*l") or ""):match("^(%d+)")) or 0
            if f then f:close() end
            total = total + ns / 1e9
        else
            local f = io.open("/proc/" .. pid .. "/stat")
            local stat = f and f:read("*a") or ""
            if f then f:close() end
            local fields = {}
            for x in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = x end
            total = total + (tonumber(fields[12] or 0) + tonumber(fields[13] or 0)) / 100
        end
    end
    return total
end

-- n connect-redis records (sess:s<i>, passport.user = i) written into
-- redis with redis-cli --pipe, and their connect.sid cookies signed as
-- express-session signs them (the compat vectors hold us to it), one per
-- line in <dir>/cookies.  Returns that path.
function _M.seed_sessions(redis, n, secret, dir)
    local cmds, cookies = {}, {}
    for i = 0, n - 1 do
        local rec = ('{"cookie":{"originalMaxAge":86400000,"expires":"2099-01-01T00:00:00.000Z",'
                     .. '"httpOnly":true,"path":"/"},"passport":{"user":%d}}'):format(i)
        local key = "sess:s" .. i
        cmds[#cmds + 1] = ("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"):format(#key, key, #rec, rec)
        local signed = cookie.sign("s" .. i, secret):gsub("[^%w%-_%.~]", function(ch)
            return ("%%%02X"):format(ch:byte())
        end)
        cookies[#cookies + 1] = "connect.sid=" .. signed
    end
    local f = assert(io.open(dir .. "/seed.resp", "wb"))
    f:write(table.concat(cmds))
    f:close()
    proc.sh(("redis-cli -p %d --pipe < %s/seed.resp >/dev/null"):format(redis.port, dir))
    f = assert(io.open(dir .. "/cookies", "w"))
    f:write(table.concat(cookies, "\n"), "\n")
    f:close()
    return dir .. "/cookies"
end

-- The recommended directives for a gateway that holds WebSockets (README,
-- "Memory per connection"); TUNE=0 measures nginx's defaults instead.
_M.TUNE = os.getenv("TUNE") ~= "0" and
    (os.getenv("TUNE_HTTP") or
     "lua_socket_buffer_size 1k; request_pool_size 512; client_header_buffer_size 512;") .. "\n" or ""
-- The store as the README recommends for held sockets: its Redis requests
-- multiplexed (MULTIPLEX=0: each handshake's own cosocket, whose buffers
-- its request keeps as long as the socket lives).
_M.MULTIPLEX = os.getenv("MULTIPLEX") ~= "0"

return _M
