-- A custom session store over an ngx.shared dict: the example that any
-- table with get(self, sid) keeping the store contract works
--
--   get(self, sid) --> json             the session record
--                  --> nil              no such session (a 401, not an error)
--                  --> nil, err         the store failed (a 503)
--
-- Two uses:
--
--   -- sessions an operator writes (a sidecar, a timer, a test):
--   local sessions = shdict.new { dict = "sessions" }
--   sessions:set(sid, json, 3600000)
--
--   -- a read-through cache, shared by every worker, in front of Redis:
--   local store = shdict.new {
--       dict = "sessions", ttl = 500,
--       backend = passport.redis { port = 6379 },
--   }
--   store:delete(sid)  -- a logout seen by every worker at once
--
-- Unlike the Redis store's cache_ttl (an lrucache per worker), entries here
-- are shared by all workers and can be dropped from any of them; a hit
-- costs a shared-memory lookup under a lock instead of a Lua table read.
local host = require "resty.passport.host"

local error = error
local floor = math.floor
local pairs = pairs
local setmetatable = setmetatable
local tostring = tostring
local type = type

local ngx = ngx -- nil in plain LuaJIT
local now = ngx and ngx.now

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local KNOWN = { dict = "string", ttl = "number", backend = "table",
                prefix = "string" }

-- opts: dict (lua_shared_dict name, required), backend (a store; optional),
-- ttl (ms an entry copied from the backend lives; default 500), prefix
-- (prepended to the sid in the dict; default "").
function _M.new(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'shdict.new' (table expected, got "
              .. type(opts) .. ")", 2)
    end
    for k, v in pairs(opts) do
        if not KNOWN[k] then
            error("bad argument #1 to 'shdict.new' (unknown option '"
                  .. tostring(k) .. "')", 2)
        end
        if type(v) ~= KNOWN[k] then
            error("bad option '" .. k .. "' to 'shdict.new' (" .. KNOWN[k]
                  .. " expected, got " .. type(v) .. ")", 2)
        end
    end
    if not (host.in_nginx and ngx.shared) then
        error("shdict store needs nginx (ngx.shared)", 2)
    end
    local dict = opts.dict and ngx.shared[opts.dict]
    if not dict then
        error("bad option 'dict' to 'shdict.new' (no lua_shared_dict "
              .. tostring(opts.dict) .. ")", 2)
    end
    local backend = opts.backend
    if backend and type(backend.get) ~= "function" then
        error("bad option 'backend' to 'shdict.new' (a store with a "
              .. "get(self, sid) method expected)", 2)
    end
    local ttl = opts.ttl or 500
    if ttl <= 0 then
        error("bad option 'ttl' to 'shdict.new' (positive number expected)",
              2)
    end
    return setmetatable({
        dict = dict,
        backend = backend,
        ttl = ttl / 1000,
        prefix = opts.prefix or "",
    }, mt)
end

-- A delete (a logout) must not be undone by a backend fetch that was in
-- flight when it landed, in this worker or another.  So every key has a
-- generation in the dict, at GEN .. key, which delete() bumps before it
-- deletes; a fetched record is stored only if the generation did not move
-- while it was fetched, and taken back if it moved as it was stored.  A
-- generation lives GEN_TTL s from the first delete that made it: a fetch
-- that takes longer stores nothing (its generation may have come and
-- gone), and a new one starts from the clock in ms, past any number the
-- one before it reached.
-- No record's key starts with GEN: sids come from signed cookies, which
-- hold no NUL byte (a prefix starting with one would be asking for it).
local GEN = "\0"
local GEN_TTL = 60

function _M.get(self, sid)
    if type(sid) ~= "string" then
        error("bad argument #2 to 'get' (string expected, got " .. type(sid)
              .. ")", 2)
    end
    local dict, key = self.dict, self.prefix .. sid
    local json = dict:get(key)
    if json ~= nil then
        return json
    end
    local backend = self.backend
    if not backend then
        return nil
    end
    local gkey = GEN .. key
    local gen, t0 = dict:get(gkey), now()
    local err
    json, err = backend:get(sid)
    if json == nil then
        -- neither a miss nor a failure is cached: a session created a
        -- moment later must be seen at once
        return nil, err
    end
    if dict:get(gkey) == gen and now() - t0 < GEN_TTL then
        -- "no memory" only costs the next get a trip to the backend
        dict:set(key, json, self.ttl)
        if dict:get(gkey) ~= gen then
            dict:delete(key) -- a delete landed between the check and the set
        end
    end
    return json
end

-- Stores a record for ttl_ms (0 or nil: until deleted or evicted).
function _M.set(self, sid, json, ttl_ms)
    if type(sid) ~= "string" or type(json) ~= "string" then
        error("bad argument to 'set' (sid and json strings expected)", 2)
    end
    local ok, err = self.dict:set(self.prefix .. sid, json,
                                  ttl_ms and ttl_ms > 0
                                  and floor(ttl_ms) / 1000 or 0)
    if not ok then
        return nil, err
    end
    return true
end

-- Drops a record (a logout), in every worker at once; the backend, if
-- any, is not touched.  nil, err when the generation could not be bumped
-- (the dict is full): the record is gone, but a fetch in flight may bring
-- it back for up to ttl.
function _M.delete(self, sid)
    local dict, key = self.dict, self.prefix .. sid
    -- first: see get()
    local _, err = dict:incr(GEN .. key, 1, floor(now() * 1000), GEN_TTL)
    dict:delete(key)
    if err then
        return nil, "shdict: " .. err
    end
    return true
end

return _M
