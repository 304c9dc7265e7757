-- Redis Cluster (nginx only): the slot map learnt with CLUSTER SLOTS from
-- the seeds or any node known, a key's slot by CRC16 (redis/slot.lua, in
-- C), and the redirects: MOVED (the slot moved: this slot's entry is
-- changed at once, the whole map refreshed in a timer, the request sent to
-- the new owner), ASK (the key is being migrated: ASKING + the request,
-- once, on the node named).  A connection error refreshes the map in a
-- timer too: a dead master's replica takes its slots.
--
--   local r, name, why = cluster.new(opts, settings, max_bulk, multiplex)
--   r:request(bytes, reader, again, key) --> as conn:request, + the address
--   r:command("PUBLISH", ch, msg)         --> on any node
--   r:get_many(keys, reader)  --> { reply | false | { err = why } ... } |
--                                 nil, err (GETs pipelined per node,
--                                 redirects followed; a key that failed
--                                 says why in its place)
--   r:raw(read_timeout)       --> sock on any node (the emit subscriber)
--   r:masters(), r.version    --> the masters' addresses, and a number that
--                                 changes when that list changes
--   r:node(addr)              --> { addr, conn, client }
--   r:refresh()               --> true | nil, err
--
-- A request of several commands (reader.commands > 1) gets an ASK reply
-- back as it is: ASKING covers one command, the caller sends its key's
-- commands one by one then.
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"
local conn = require "resty.passport.redis.conn"
local nodes = require "resty.passport.redis.nodes"
local resp = require "resty.passport.redis.resp"
local sentinel = require "resty.passport.redis.sentinel"
local slot = require "resty.passport.redis.slot"

local concat = table.concat
local ipairs = ipairs
local match = string.match
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local sort = table.sort
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type

local ngx = ngx -- nil in plain LuaJIT
local now = host.in_nginx and ngx.now
local timer_at = host.in_nginx and ngx.timer.at
local once = nodes.once
local reply_error = nodes.reply_error
local slot_of = slot.of
local encode = resp.encode

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local NSLOTS = 16384
local MAX_REDIRECTS = 5
local ASKING = encode("ASKING")
local ASKING_REPLY = resp.reader(0, nil, resp.accept("+-"))
local SLOTS_READER = resp.reader(4096)

local K_FOUND = metrics.key("passport_redis_discoveries_total", { mode = "cluster", outcome = "ok" })
local K_FAILED = metrics.key("passport_redis_discoveries_total", { mode = "cluster", outcome = "error" })
local K_MOVED = metrics.key("passport_redis_redirects_total", { kind = "moved" })
local K_ASK = metrics.key("passport_redis_redirects_total", { kind = "ask" })

-- Reads ASKING's +OK, then the request's own reply.
local Asking = {}
local asking_mt = { __index = Asking }
function Asking.read(self, sock)
    local ok, err, kind, begun = ASKING_REPLY:read(sock)
    if ok == nil then return nil, err, kind, begun end
    return self.inner:read(sock)
end

-- n replies read with one reader, as a list (false for a null).
local Many = {}
local many_mt = { __index = Many }
function Many.read(self, sock)
    local out = {}
    for i = 1, self.n do
        local v, err, kind, begun = self.inner:read(sock)
        if v == nil then return nil, err, kind, begun or i > 1 end
        out[i] = v
    end
    return out
end

function _M.new(opts, settings, max_bulk, multiplex)
    local seeds, why = sentinel.addresses(opts.cluster)
    if not seeds then return nil, "cluster", why end
    if (settings.db or 0) ~= 0 then
        return nil, "db", "Redis Cluster has database 0 only"
    end
    local ttl = opts.discovery_ttl or 5
    if ttl <= 0 then return nil, "discovery_ttl", "positive number expected" end
    return setmetatable({
        mode = "cluster", seeds = seeds, ttl = ttl, db = 0,
        set = nodes.new(settings, max_bulk, multiplex), flight = {},
        slots = nil, list = {}, version = 0, next_any = 1,
        reader = resp.reader(max_bulk),
        wait_s = ((settings.connect_timeout or 1000)
                  + (settings.read_timeout or 1000)) * 2 / 1000,
    }, mt)
end

function _M.node(self, addr)
    return self.set:get(addr)
end

-- CLUSTER SLOTS --> slots (index slot + 1 -> address), or nil, why.  An
-- empty host means "the node you asked".
local function parse_slots(v, asked_host)
    if type(v) ~= "table" or v.err then
        return nil, v and v.err or "unexpected reply"
    end
    local map, masters = {}, {}
    for i = 1, #v do
        local r = v[i]
        local first, last, node = type(r) == "table" and r[1], r and r[2], r and r[3]
        if type(first) ~= "number" or type(last) ~= "number" or type(node) ~= "table"
           or first < 0 or last >= NSLOTS or first > last then
            return nil, "bad slot range in CLUSTER SLOTS"
        end
        local h, p = node[1], node[2]
        if type(h) ~= "string" or type(p) ~= "number" then
            return nil, "bad node in CLUSTER SLOTS"
        end
        if h == "" or h == "?" then h = asked_host end
        local addr = h .. ":" .. p
        masters[addr] = true
        for s = first + 1, last + 1 do map[s] = addr end
    end
    local list = {}
    for addr in pairs(masters) do list[#list + 1] = addr end
    sort(list)
    return map, list
end

local function try_slots(self, addr)
    local e, err = self.set:get(addr)
    if not e then return nil, err end
    local v
    v, err = e.client:request(encode("CLUSTER", "SLOTS"), SLOTS_READER)
    if v == nil then return nil, addr .. ": " .. tostring(err) end
    local map, list = parse_slots(v, match(addr, "^(.+):%d+$"))
    if not map then return nil, addr .. ": " .. list end
    return map, list
end

-- Learns the map from the masters known, else the seeds.
local function load_map(self)
    local why, tried = {}, {}
    local candidates = {}
    for i = 1, #self.list do candidates[#candidates + 1] = self.list[i] end
    for i = 1, #self.seeds do candidates[#candidates + 1] = self.seeds[i] end
    for i = 1, #candidates do
        local addr = candidates[i]
        if not tried[addr] then
            tried[addr] = true
            local map, list = try_slots(self, addr)
            if map then
                if concat(list, " ") ~= concat(self.list, " ") then
                    self.version = self.version + 1
                end
                self.slots, self.list = map, list
                self.expires = now() + self.ttl
                metrics.add(K_FOUND)
                return true
            end
            why[#why + 1] = list
        end
    end
    metrics.add(K_FAILED)
    return nil, "redis: cluster: no node gave its slot map: " .. concat(why, "; ")
end

function _M.refresh(self)
    return once(self.flight, self.wait_s, load_map, self)
end

local function refresh_timer(premature, self)
    if premature then return end
    self.refresh_queued = false
    local ok, err = self:refresh()
    if not ok then host.log("warn", "passport: " .. tostring(err)) end
end

-- A refresh soon, in a timer (one queued at a time).
local function refresh_soon(self)
    if self.refresh_queued then return end
    self.refresh_queued = true
    local ok = pcall(timer_at, 0, refresh_timer, self)
    if not ok then self.refresh_queued = false end
end
_M.refresh_soon = refresh_soon

-- The map, learnt first if need be: true | nil, err.
local function ready(self)
    if self.slots then
        if now() >= self.expires then refresh_soon(self) end
        return true
    end
    return self:refresh()
end

-- "MOVED 3999 127.0.0.1:6381" / "ASK ..." --> "MOVED"|"ASK", slot, addr.
local function redirect_of(v)
    local err = reply_error(v)
    if not err then return nil end
    local c = sub(err, 1, 1)
    if c ~= "M" and c ~= "A" then return nil end
    local kind, s, addr = match(err, "^(%u+) (%d+) (%S+)$")
    if kind ~= "MOVED" and kind ~= "ASK" then return nil end
    return kind, tonumber(s), addr
end
_M.redirect_of = redirect_of

-- The address of any node: the masters in turn, else the seeds.
local function any_addr(self, skip)
    local list = self.list[1] and self.list or self.seeds
    local n = #list
    local i = self.next_any
    if skip then
        i = i % n + 1
        self.next_any = i
    end
    return list[(i - 1) % n + 1]
end

function _M.request(self, bytes, reader, again, key)
    local ok, err = ready(self)
    if not ok and key then return nil, err, "setup" end
    local addr, s
    if key then
        s = slot_of(key)
        addr = self.slots[s + 1]
        if not addr then
            refresh_soon(self)
            return nil, "redis: cluster: slot " .. s .. " has no node", "setup"
        end
    else
        addr = any_addr(self)
    end
    for _ = 1, MAX_REDIRECTS do
        local e
        e, err = self.set:get(addr)
        if not e then return nil, err, "setup" end
        local v, kind
        v, err, kind = e.client:request(bytes, reader, again)
        if v == nil then
            if kind ~= "protocol" then
                refresh_soon(self)
                if not key and kind == "setup" then any_addr(self, true) end
            end
            return nil, err, kind, addr
        end
        local redirect, rs, to = redirect_of(v)
        if not redirect then return v, nil, nil, addr end
        metrics.add(redirect == "MOVED" and K_MOVED or K_ASK)
        if redirect == "MOVED" then
            if rs and rs < NSLOTS then self.slots[rs + 1] = to end
            refresh_soon(self)
        elseif (reader.commands or 1) > 1 then
            return v, nil, nil, addr
        else
            bytes = { ASKING, bytes }
            reader = setmetatable({ inner = reader }, asking_mt)
        end
        addr = to
    end
    return nil, "redis: cluster: more than " .. MAX_REDIRECTS .. " redirects", "protocol", addr
end

_M.command = conn.command

-- GETs of keys, pipelined per node: a list of replies (false: no key),
-- or nil, err on the first failure.
function _M.get_many(self, keys, reader)
    local ok, err = ready(self)
    if not ok then return nil, err end
    local groups, order = {}, {}
    for i = 1, #keys do
        local addr = self.slots[slot_of(keys[i]) + 1] or "?"
        local g = groups[addr]
        if not g then
            g = {}
            groups[addr] = g
            order[#order + 1] = addr
        end
        g[#g + 1] = i
    end
    local out = {}
    for _, addr in ipairs(order) do
        local g = groups[addr]
        local parts = {}
        for j = 1, #g do parts[j] = encode("GET", keys[g[j]]) end
        -- a slot with no node ("?"), or a pipeline that failed: each key
        -- goes on its own, which says why
        local e = addr ~= "?" and self.set:get(addr) or nil
        local v = e and e.client:request(parts,
                                         setmetatable({ inner = reader, n = #g }, many_mt), true) or nil
        for j = 1, #g do
            local i = g[j]
            local r = v and v[j]
            if r == nil or redirect_of(r) then
                r, err = self:request(encode("GET", keys[i]), reader, true, keys[i])
                if r == nil then r = { err = err } end
            elseif type(r) == "table" and r.err then
                r = { err = "redis: GET failed: " .. r.err }
            end
            out[i] = r
        end
    end
    return out
end

-- A connection of its own on any node: PUBLISH reaches every node's
-- subscribers, so the emit subscriber may sit anywhere.
function _M.raw(self, read_timeout)
    ready(self)
    local addr = any_addr(self)
    local e, err = self.set:get(addr)
    if not e then return nil, err end
    local sock
    sock, err = e.conn:raw(read_timeout)
    if not sock then
        any_addr(self, true)
        refresh_soon(self)
    end
    return sock, err
end

function _M.masters(self)
    return self.list
end

function _M.address(self)
    return concat(self.list, ",")
end

return _M
