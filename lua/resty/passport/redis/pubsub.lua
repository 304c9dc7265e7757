-- One subscriber connection (nginx only; one per worker is the use): it
-- SUBSCRIBEs and PSUBSCRIBEs on a connection of its own, PINGs every 10 s,
-- reconnects with backoff, and hands what arrives to callbacks.
--
--   local sub = pubsub.new(store, {     -- store: one with a .conn (a Redis store)
--       channels = { "passport:emit" }, -- SUBSCRIBE list (may be empty)
--       max_message_size = n,           -- bytes, bounds bulk strings read
--       prepare = function() return patterns, confirmed end,
--       on_message = function(channel, payload) end,
--       on_pmessage = function(pattern, channel, payload) end,
--       on_up = function(confirmed) end,
--       on_down = function(was_up, why) end,
--       on_exit = function() end,
--   })
--   local ok, err = sub:start()        -- ngx.timer.at(0, ...)
--   sub:stop()                         -- ends it within a second
--
-- opts.conn, when given, is the connection's maker instead of store.conn
-- (anything with raw(read_timeout): a conn, a Sentinel or Cluster router).
--
-- prepare runs on every connection attempt, once connected (it may call
-- store:command): the PSUBSCRIBE patterns (a list, or nil) and a value
-- passed on to on_up.  on_up: every SUBSCRIBE/PSUBSCRIBE acknowledged.
-- on_down: after every attempt, whatever ended it (a failed connect, a
-- refused subscription, a read error, a raised error); was_up says
-- whether it had subscribed.  on_exit: the loop ended because the worker
-- is exiting (or the timer ran premature).  Every callback is optional and
-- runs under pcall: an error is logged and never ends the loop.
--
-- Delivery is at most once: while reconnecting, what is published is
-- missed.
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"
local resp = require "resty.passport.redis.resp"

local error = error
local ipairs = ipairs
local math_min = math.min
local math_random = math.random
local pcall = pcall
local setmetatable = setmetatable
local tostring = tostring
local type = type
local unpack = unpack

local ngx = ngx -- nil in plain LuaJIT
local in_nginx = host.in_nginx
local exiting = in_nginx and ngx.worker.exiting
local kill = in_nginx and ngx.thread.kill
local sleep = in_nginx and ngx.sleep
local spawn = in_nginx and ngx.thread.spawn
local timer_at = in_nginx and ngx.timer.at
local encode = resp.encode

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

-- A read waits this long: the PINGs every 10 s make a longer silence a
-- dead server, and keep idle reads from timing out into the error log.
local READ_TIMEOUT = 30000
local PING_EVERY = 10 -- s

local CALLBACKS = { "prepare", "on_message", "on_pmessage", "on_up",
                    "on_down", "on_exit" }
local ACK = { subscribe = true, psubscribe = true }

local function noop() end

local K_RECONNECTS = metrics.key("passport_subscriber_reconnects_total")

-- passport_subscriber_up{worker}: the subscriber that carries emit's
-- channel says whether it is subscribed (opts.report_up).
local function report_up(self, up)
    if self.report_up and metrics.enabled() then
        metrics.set_gauge(metrics.key("passport_subscriber_up", { worker = ngx.worker.id() }),
                          up and 1 or 0)
    end
end

local function argerr(msg)
    error("bad argument #2 to 'pubsub.new' (" .. msg .. ")", 3)
end

function _M.new(store, opts)
    if type(store) ~= "table" or type(store.conn) ~= "table" then
        error("bad argument #1 to 'pubsub.new' (a Redis store expected)", 2)
    end
    if type(opts) ~= "table" then
        argerr("table expected, got " .. type(opts))
    end
    local c = opts.conn or store.conn
    if type(c) ~= "table" or type(c.raw) ~= "function" then
        argerr("conn: a conn or router expected")
    end
    local channels = opts.channels or {}
    if type(channels) ~= "table" then argerr("channels: list expected") end
    for _, ch in ipairs(channels) do
        if type(ch) ~= "string" then argerr("channels: strings expected") end
    end
    local max = opts.max_message_size or 1048576
    if type(max) ~= "number" or max < 1 then
        argerr("max_message_size: positive number expected")
    end
    local self = { conn = c, channels = channels, report_up = opts.report_up,
                   max_message_size = max, up = false }
    for _, name in ipairs(CALLBACKS) do
        local fn = opts[name]
        if fn ~= nil and type(fn) ~= "function" then
            argerr(name .. ": function expected")
        end
        self[name] = fn or noop
    end
    return setmetatable(self, mt)
end

-- Runs callback name; an error is logged.
local function call(self, name, ...)
    local ok, err = pcall(self[name], ...)
    if not ok then
        host.log("err", "passport: subscriber " .. name .. " raised: "
                        .. tostring(err))
    end
end

-- Keeps the subscription talking: a PING every 10 s, and a QUIT when the
-- worker exits (so the reader wakes at once instead of holding up a
-- reload).  Same timer, other light thread: one cosocket may be read in
-- one thread while another writes.
local function pinger(self, sock, state)
    local since = 0
    while not state.done do
        sleep(1)
        if state.done then return end
        if exiting() or self.stopped then
            sock:send(encode("QUIT"))
            return
        end
        since = since + 1
        if since >= PING_EVERY then
            since = 0
            sock:send(encode("PING"))
        end
    end
end

-- One reply on the subscribed connection.  Returns a reason to stop, or
-- nil to go on.
local function on_reply(self, st, v)
    if type(v) ~= "table" then return end
    if v.err then
        if not self.up then return "subscribe refused: " .. v.err end
        return
    end
    local kind = v[1]
    local payload = kind == "pmessage" and v[4] or v[3]
    if type(payload) == "table" and payload.oversize then
        if not self.warned_oversize then
            self.warned_oversize = true
            host.log("warn", "passport: subscriber dropped a message of " .. payload.oversize
                     .. " bytes on " .. tostring(kind == "pmessage" and v[3] or v[2])
                     .. ": over max_message_size (" .. self.max_message_size
                     .. "); further ones are dropped without a log line")
        end
        return
    end
    if kind == "message" then
        call(self, "on_message", v[2], v[3])
    elseif kind == "pmessage" then
        call(self, "on_pmessage", v[2], v[3], v[4])
    elseif ACK[kind] and not self.up then
        st.want = st.want - 1
        if st.want == 0 then
            self.up = true
            report_up(self, true)
            call(self, "on_up", st.confirmed)
        end
    end
end

-- Reads and dispatches until the connection ends; returns why.
local function read_loop(self, sock, st)
    if st.want == 0 then
        self.up = true
        report_up(self, true)
        call(self, "on_up", st.confirmed)
    end
    local p = resp.parser(self.max_message_size, nil, nil, true)
    while true do
        local v, err = p:get()
        if v ~= nil then
            local why = on_reply(self, st, v)
            if why then return why end
        elseif err then
            return err
        else
            local data
            data, err = sock:receiveany(65536)
            if not data then
                return err == "closed" and exiting() and "exiting" or err
            end
            p:feed(data)
        end
    end
end

-- The SUBSCRIBE and PSUBSCRIBE commands, and how many acknowledgements
-- they bring (one per channel or pattern).
local function subscriptions(self, patterns)
    local cmds, want = {}, #self.channels
    if want > 0 then
        cmds[1] = encode("SUBSCRIBE", unpack(self.channels))
    end
    if type(patterns) == "table" and patterns[1] then
        cmds[#cmds + 1] = encode("PSUBSCRIBE", unpack(patterns))
        want = want + #patterns
    end
    return cmds, want
end

-- One connection's life.  Returns the reason it ended.
local function subscribe_once(self)
    local sock, err = self.conn:raw(READ_TIMEOUT)
    if not sock then return err end
    -- not call(): the reason below is logged already
    local ok, patterns, confirmed = pcall(self.prepare)
    if not ok then
        sock:close()
        return "prepare raised: " .. tostring(patterns)
    end
    local cmds, want = subscriptions(self, patterns)
    if cmds[1] then
        ok, err = sock:send(cmds)
        if not ok then
            sock:close()
            return err
        end
    end
    local state = {}
    local thread = spawn(pinger, self, sock, state)
    local why
    ok, why = pcall(read_loop, self, sock,
                    { want = want, confirmed = confirmed })
    state.done = true
    kill(thread)
    sock:close()
    if not ok then error(why, 0) end
    return why
end

local function loop(premature, self)
    if premature then
        call(self, "on_exit")
        return
    end
    local backoff = 0.1
    while not exiting() and not self.stopped do
        self.up = false
        -- why: the reason, or the error when subscribe_once raised
        local _, why = pcall(subscribe_once, self)
        local was_up = self.up
        self.up = false
        if was_up then report_up(self, false) end
        call(self, "on_down", was_up, why)
        if exiting() or self.stopped then break end
        if metrics.enabled() then metrics.add(K_RECONNECTS) end
        if was_up then backoff = 0.1 end
        host.log("warn", "passport: subscriber disconnected ("
                         .. tostring(why) .. "); reconnecting in " .. backoff
                         .. " s")
        sleep(backoff * (0.5 + math_random()))
        backoff = math_min(backoff * 2, 5)
    end
    if not self.stopped then call(self, "on_exit") end
end

-- Ends the subscription (its server left the cluster, say): the pinger
-- sends QUIT within a second, and the loop does not reconnect.
function _M.stop(self)
    self.stopped = true
end

-- Starts the subscriber in a timer: true, or nil and the timer's error.
-- Raises where ngx.timer.at is not allowed (init_by_lua) and outside nginx.
function _M.start(self)
    if not in_nginx then
        error("pubsub needs nginx", 2)
    end
    local ok, err = timer_at(0, loop, self)
    if not ok then
        return nil, err
    end
    return true
end

return _M
