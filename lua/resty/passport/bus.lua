-- Reaching sockets on every worker and every gateway node: Redis pub/sub.
-- Each worker runs one subscriber (a timer started in init_worker) that
-- delivers what passport.emit publishes to its own sockets, and closes
-- the sockets of sessions that end (keyspace notifications, else periodic
-- revalidation).
--
-- Delivery is at most once: a worker whose subscriber is reconnecting
-- misses what is published meanwhile; nothing is stored or retried.
--
-- Wire format of a published message (version 1):
--   "1" kind len ":" key type data
--   kind: "u" (key = a user key) or "f" (key = a filter name);
--   type: "t" (text) or "b" (binary).
local cjson = require "cjson.safe"
local registry = require "resty.passport.registry"
local websocket = require "resty.passport.websocket"
local resp = require "resty.passport.resp"
local session = require "resty.passport.session"
local host = require "resty.passport.host"

local ngx = ngx
local byte = string.byte
local error = error
local find = string.find
local gsub = string.gsub
local math_min = math.min
local math_random = math.random
local now = ngx.now
local pairs = pairs
local pcall = pcall
local sub = string.sub
local timer_at = ngx.timer.at
local timer_every = ngx.timer.every
local tonumber = tonumber
local tostring = tostring
local type = type
local unpack = unpack
local exiting = ngx.worker.exiting
local sleep = ngx.sleep
local tcp = ngx.socket.tcp
local spawn = ngx.thread.spawn
local kill = ngx.thread.kill
local encode_frame = websocket.encode
local utf8_valid = require("resty.passport.frame").utf8_valid

local _M = { _VERSION = "0.1.0" }

local conf -- set by init_worker

local ENDED = { del = true, expired = true, evicted = true, rename_from = true }
local MGET_BATCH = 100

local function close_all(code, reason)
    for _, s in pairs(registry.all()) do s:close(code, reason) end
end

---------------------------------------------------------------------------
-- Delivery on this worker.

-- Delivers one published message; returns how many sockets got it.
local function deliver(msg)
    if byte(msg, 1) ~= 49 then return 0 end -- "1"
    local kind = sub(msg, 2, 2)
    local colon = find(msg, ":", 3, true)
    local len = colon and tonumber(sub(msg, 3, colon - 1))
    if not len then return 0 end
    local key = sub(msg, colon + 1, colon + len)
    local typ = sub(msg, colon + len + 1, colon + len + 1)
    local data = sub(msg, colon + len + 2)
    local sockets
    if kind == "u" then
        sockets = registry.of_key(key)
    elseif kind == "f" then
        local fn = conf.filters[key]
        if not fn then
            host.log("warn", "passport: emit to filter '" .. key
                     .. "', which this worker does not have")
            return 0
        end
        local ok, res = pcall(registry.filter, fn)
        if not ok then
            host.log("err", "passport: filter '" .. key .. "' raised: " .. tostring(res))
            return 0
        end
        sockets = res
    else
        return 0
    end
    if sockets[1] == nil then return 0 end
    local frame = encode_frame(typ == "b" and 0x2 or 0x1, data)
    local n = 0
    for i = 1, #sockets do
        if sockets[i]:send_frame(frame) then n = n + 1 end
    end
    return n
end
_M.deliver = deliver

---------------------------------------------------------------------------
-- Logout: sessions that end close their sockets.

local function session_ended(sid, why)
    local socks = registry.of_sid(sid)
    for i = 1, #socks do
        socks[i]:close(websocket.CLOSE_SESSION_ENDED, "session ended")
    end
    if socks[1] then
        host.log("info", "passport: " .. #socks .. " socket(s) closed: session " .. why)
    end
end

-- Checks the sessions of sids against the store: gone, expired, logged out
-- or now another user closes their sockets.  A store error closes nothing.
local function revalidate(sids)
    local store, prefix = conf.store, conf.store.prefix
    for first = 1, #sids, MGET_BATCH do
        local keys, batch = {}, {}
        for i = first, math_min(first + MGET_BATCH - 1, #sids) do
            batch[#batch + 1] = sids[i]
            keys[#keys + 1] = prefix .. sids[i]
        end
        local vals, err = store:command("MGET", unpack(keys))
        if type(vals) ~= "table" then
            host.log("warn", "passport: revalidation skipped: " .. tostring(err or "bad reply"))
            return
        end
        local t = now() * 1000
        for i, sid in pairs(batch) do
            local json = vals[i]
            if not json then
                session_ended(sid, "gone")
            else
                local s = session.decode(json, t)
                if not s or s.expired or not s.passport or not s.user_ok then
                    session_ended(sid, s and s.expired and "expired" or "logged out")
                else
                    local key = registry.key_of(s.user)
                    local socks = registry.of_sid(sid)
                    for j = 1, #socks do
                        if socks[j]._key ~= key then
                            socks[j]:close(websocket.CLOSE_SESSION_ENDED, "session ended")
                        end
                    end
                end
            end
        end
    end
end
_M.revalidate = revalidate

local revalidating = false
local function revalidate_all(premature)
    if premature or revalidating then return end
    revalidating = true
    local ok, err = pcall(revalidate, registry.sids())
    revalidating = false
    if not ok then host.log("err", "passport: revalidation failed: " .. tostring(err)) end
end

local function revalidate_one(premature, sid)
    if premature then return end
    local ok, err = pcall(revalidate, { sid })
    if not ok then host.log("err", "passport: revalidation failed: " .. tostring(err)) end
end

local periodic_started = false
local function start_periodic(interval)
    if periodic_started or not interval then return end
    local ok, err = timer_every(interval, revalidate_all)
    if ok then
        periodic_started = true
    else
        host.log("err", "passport: cannot start revalidation: " .. err)
    end
end

-- true when the server sends the keyspace events logout needs.
local function events_usable(flags)
    if type(flags) ~= "string" or not find(flags, "K", 1, true) then return false end
    return find(flags, "A", 1, true) or (find(flags, "g", 1, true) and find(flags, "x", 1, true))
end

-- Decides, per connection, between keyspace events and revalidation.
-- Returns the PSUBSCRIBE pattern or nil, and whether the server said it
-- sends the events (a coherent cache trusts nothing less).
local function logout_plan()
    local lo = conf.logout
    if not lo then return nil end
    local store = conf.store
    local pattern = "__keyspace@" .. store.db .. "__:"
                    .. gsub(store.prefix, "[%*%?%[%]\\]", "\\%0") .. "*"
    if lo.events == false then
        start_periodic(lo.revalidate_interval)
        return nil
    end
    local reply, err = store:command("CONFIG", "GET", "notify-keyspace-events")
    local flags = type(reply) == "table" and reply[2] or nil
    if not events_usable(flags) and lo.configure and flags then
        local ok
        ok, err = store:command("CONFIG", "SET", "notify-keyspace-events", flags .. "Kgxe$")
        if ok then flags = flags .. "Kgxe$" end
    end
    if events_usable(flags) then
        if lo.revalidate_set then start_periodic(lo.revalidate_interval) end
        return pattern, true
    else
        if not lo.warned then
            lo.warned = true
            host.log("warn", "passport: Redis keyspace notifications are off "
                     .. "(notify-keyspace-events \"" .. tostring(flags or err)
                     .. "\"): logout is seen by revalidating every "
                     .. lo.revalidate_interval .. " s instead")
        end
        start_periodic(lo.revalidate_interval)
        if flags then return nil end -- known off: nothing would arrive
    end
    return pattern
end

---------------------------------------------------------------------------
-- The subscriber.

local function on_push(v, ks_prefix)
    if type(v) ~= "table" then return end
    local kind = v[1]
    if kind == "message" then
        local ok, err = pcall(deliver, v[3])
        if not ok then host.log("err", "passport: delivery failed: " .. tostring(err)) end
    elseif kind == "pmessage" and ks_prefix then
        local channel, event = v[3], v[4]
        if type(channel) ~= "string" or sub(channel, 1, #ks_prefix) ~= ks_prefix then return end
        local sid = sub(channel, #ks_prefix + 1)
        -- any change to the key: a cached copy is stale
        local store = conf.store
        if store.cache then store:invalidate(sid) end
        if ENDED[event] then
            session_ended(sid, event == "expired" and "expired" or "ended")
        elseif event == "set" and registry.of_sid(sid)[1] then
            -- rewritten: maybe logged out or another user; check off-loop
            timer_at(0, revalidate_one, sid)
        end
    end
end

-- Keeps the subscription talking: a PING every 10 s (so the reader's 30 s
-- timeout means a dead server, and idle reads never time out into the
-- error log), and a QUIT when the worker exits (so the reader wakes at
-- once instead of holding up a reload).  Same timer, other light thread:
-- one cosocket may be read in one thread while another writes.
local function pinger(sock, state)
    local since = 0
    while not state.done do
        sleep(1)
        if state.done then return end
        if exiting() then
            sock:send(resp.encode("QUIT"))
            return
        end
        since = since + 1
        if since >= 10 then
            since = 0
            sock:send(resp.encode("PING"))
        end
    end
end

-- One connection's life.  Returns true when it had subscribed (so the
-- backoff restarts), and the reason it ended.
local function subscribe_once()
    local store = conf.store
    local sock = tcp()
    sock:settimeouts(store.connect_timeout, store.read_timeout, 30000)
    local ok, err
    if store.path then
        ok, err = sock:connect(store.unix)
    else
        ok, err = sock:connect(store.host, store.port)
    end
    if not ok then return false, "connect to " .. store.addr .. ": " .. err end

    local pattern, confirmed = logout_plan()
    local cmds = { store.prelude or "", resp.encode("SUBSCRIBE", conf.channel) }
    if pattern then cmds[3] = resp.encode("PSUBSCRIBE", pattern) end
    ok, err = sock:send(cmds)
    if not ok then sock:close() return false, err end

    local ks_prefix = pattern and sub(pattern, 1, #pattern - 1)
    if ks_prefix then ks_prefix = gsub(ks_prefix, "\\(.)", "%1") end
    local buf, pos = "", 1
    local want = (store.password and 1 or 0) + (store.db ~= 0 and 1 or 0) + #cmds - 1
    local subscribed = false
    local state = {}
    local thread = spawn(pinger, sock, state)
    local why
    while true do
        local v, nxt = resp.parse(buf, pos, conf.max_message_size)
        if v ~= nil then
            pos = nxt
            if want > 0 then
                want = want - 1
                if type(v) == "string" and byte(v) == 45 then
                    why = "subscribe refused: " .. sub(v, 2)
                    break
                end
                if want == 0 then
                    subscribed = true
                    if confirmed and store.set_coherent then store:set_coherent(true) end
                end
            else
                on_push(v, ks_prefix)
            end
        elseif nxt then
            why = nxt
            break
        else
            if pos > 1 then buf, pos = sub(buf, pos), 1 end
            local data, rerr = sock:receiveany(65536)
            if not data then
                why = rerr == "closed" and exiting() and "exiting" or rerr
                break
            end
            buf = buf .. data
        end
    end
    state.done = true
    kill(thread)
    sock:close()
    if subscribed and confirmed and store.set_coherent then store:set_coherent(false) end
    return subscribed, why
end

local function subscriber(premature)
    if premature then
        close_all(1001, "going away")
        return
    end
    local backoff = 0.1
    while not exiting() do
        local ok, was_up, why = pcall(subscribe_once)
        if not ok then
            -- whatever broke, nothing keeps a coherent cache true now
            why, was_up = was_up, false
            local store = conf.store
            if store.set_coherent then store:set_coherent(false) end
        end
        if exiting() then break end
        if was_up then backoff = 0.1 end
        host.log("warn", "passport: subscriber disconnected (" .. tostring(why)
                 .. "); reconnecting in " .. backoff .. " s")
        sleep(backoff * (0.5 + math_random()))
        backoff = math_min(backoff * 2, 5)
    end
    close_all(1001, "going away")
end

---------------------------------------------------------------------------
-- The API.

local function argerr(name, msg)
    error("bad option '" .. name .. "' to 'init_worker' (" .. msg .. ")", 3)
end

function _M.init_worker(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'init_worker' (table expected, got " .. type(opts) .. ")", 2)
    end
    local store = opts.store
    if type(store) ~= "table" or type(store.command) ~= "function" or not store.prefix then
        argerr("store", "a passport.redis{...} store expected")
    end
    local channel = opts.channel or "passport:emit"
    if type(channel) ~= "string" or channel == "" then argerr("channel", "non-empty string expected") end
    local filters = opts.filters or {}
    if type(filters) ~= "table" then argerr("filters", "table of functions expected") end
    for name, fn in pairs(filters) do
        if type(name) ~= "string" or type(fn) ~= "function" then
            argerr("filters", "table of name = function expected")
        end
    end
    if opts.user_key ~= nil then
        if type(opts.user_key) ~= "string" then argerr("user_key", "string expected") end
        registry.user_key = opts.user_key
    end
    local logout = opts.logout
    if logout == nil then logout = {} end
    if logout ~= false then
        if type(logout) ~= "table" then argerr("logout", "table or false expected") end
        local iv = logout.revalidate_interval
        if iv ~= nil and iv ~= false and (type(iv) ~= "number" or iv <= 0) then
            argerr("logout", "revalidate_interval: positive number of seconds or false expected")
        end
        if logout.events ~= nil and type(logout.events) ~= "boolean" then
            argerr("logout", "events: boolean expected")
        end
        logout = {
            events = logout.events,
            configure = logout.configure == true,
            revalidate_set = iv ~= nil,
            revalidate_interval = iv == nil and 1 or (iv or nil),
        }
    end
    local max = opts.max_message_size or 1048576
    if type(max) ~= "number" or max < 1 then argerr("max_message_size", "positive number expected") end
    conf = {
        store = store, channel = channel, filters = filters,
        logout = logout or nil, max_message_size = max,
    }
    if ngx.get_phase() == "init_worker" or ngx.get_phase() == "timer" then
        local ok, err = timer_at(0, subscriber)
        if not ok then
            error("cannot start the passport subscriber: " .. tostring(err), 2)
        end
    else
        error("passport.init_worker must be called from init_worker_by_lua", 2)
    end
    return true
end

-- passport.emit{ user = <passport.user>, data = ... } or
-- passport.emit{ filter = "<name>", data = ... }; binary = true for a
-- binary message; a table data is sent as JSON text.  Returns the number
-- of workers (all nodes) that received it, or nil and an error.
function _M.emit(msg)
    if not conf then
        error("passport.emit needs passport.init_worker{...} in init_worker_by_lua", 2)
    end
    if type(msg) ~= "table" then
        error("bad argument #1 to 'emit' (table expected, got " .. type(msg) .. ")", 2)
    end
    local data = msg.data
    if type(data) == "table" then
        local json, err = cjson.encode(data)
        if not json then error("bad field 'data' to 'emit' (" .. err .. ")", 2) end
        data = json
    elseif type(data) ~= "string" then
        error("bad field 'data' to 'emit' (string or table expected, got " .. type(data) .. ")", 2)
    end
    local binary = msg.binary == true
    if not binary then
        if not utf8_valid(data) then
            error("bad field 'data' to 'emit' (text must be UTF-8; set binary = true)", 2)
        end
    end
    local kind, key
    if msg.filter ~= nil then
        if msg.user ~= nil then error("bad argument #1 to 'emit' (give user or filter, not both)", 2) end
        if type(msg.filter) ~= "string" or not conf.filters[msg.filter] then
            error("bad field 'filter' to 'emit' (a filter registered in init_worker expected, got "
                  .. tostring(msg.filter) .. ")", 2)
        end
        kind, key = "f", msg.filter
    else
        key = registry.key_of(msg.user)
        if key == nil then
            error("bad field 'user' to 'emit' (a passport.user value expected)", 2)
        end
        kind = "u"
    end
    if #data > conf.max_message_size then
        return nil, "message of " .. #data .. " bytes exceeds max_message_size"
    end
    local payload = "1" .. kind .. #key .. ":" .. key .. (binary and "b" or "t") .. data
    return conf.store:command("PUBLISH", conf.channel, payload)
end

-- For specs: whether init_worker ran.
function _M.configured()
    return conf ~= nil
end

return _M
