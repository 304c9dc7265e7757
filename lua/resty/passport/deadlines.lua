-- Many short deadlines on one timer: Socket.IO's connect timeouts and ack
-- timeouts, one per connection or per pending ack.  An ngx.timer.at each
-- would cost a fake request apiece and run into lua_max_pending_timers
-- (1024 by default) long before 10,000 sockets; here a worker has one
-- timer, ticking every RESOLUTION seconds only while something is pending.
--
--   local h = deadlines.add(5, fn, arg)   -- fn(arg) in about 5 s
--   deadlines.cancel(h)                   -- unless cancelled first
--
-- fn runs in a timer: it may send to sockets (through their queues) and
-- must not block, since the deadlines due after it wait for it.
local host = require "resty.passport.host"

local ngx = ngx
local ceil = math.ceil
local next = next
local now = ngx.now
local pcall = pcall
local timer_at = ngx.timer.at
local tostring = tostring

local _M = { _VERSION = "0.1.0" }

local RESOLUTION = 0.1

local buckets = {}  -- tick -> { [handle] = true }
local pending = 0
local running = false
local last_tick     -- the last tick whose bucket has run

local tick_now = function() return ceil(now() / RESOLUTION) end

local run

local function schedule()
    local ok, err = timer_at(RESOLUTION, run)
    running = ok and true or false
    if not ok then
        host.log("err", "passport: cannot start the deadline timer: " .. tostring(err))
    end
end

function run(premature)
    if premature then
        running = false
        return
    end
    local t = tick_now()
    for tick = last_tick + 1, t do
        -- moved first: a callback adding a deadline lands in a later bucket
        last_tick = tick
        local bucket = buckets[tick]
        if bucket then
            buckets[tick] = nil
            for h in next, bucket do
                pending = pending - 1
                h[3] = nil
                local ok, err = pcall(h[1], h[2])
                if not ok then
                    host.log("err", "passport: a deadline's callback raised: " .. tostring(err))
                end
            end
        end
    end
    if pending > 0 then
        schedule()
    else
        running = false
    end
end

-- deadlines.add(delay, fn, arg) --> a handle for cancel; fn(arg) runs in a
-- timer between delay and delay + RESOLUTION seconds from now.
function _M.add(delay, fn, arg)
    local tick = ceil((now() + delay) / RESOLUTION)
    if not running then
        last_tick = tick_now()
        schedule()
    end
    if tick <= last_tick then tick = last_tick + 1 end
    local bucket = buckets[tick]
    if not bucket then
        bucket = {}
        buckets[tick] = bucket
    end
    local h = { fn, arg, tick }
    bucket[h] = true
    pending = pending + 1
    return h
end

-- deadlines.cancel(h): fn will not run (a no-op once it has).
function _M.cancel(h)
    local tick = h[3]
    if not tick then return end
    h[3] = nil
    local bucket = buckets[tick]
    if bucket and bucket[h] then
        bucket[h] = nil
        pending = pending - 1
        if next(bucket) == nil then buckets[tick] = nil end
    end
end

-- How many are pending (for tests and status).
function _M.count()
    return pending
end

return _M
