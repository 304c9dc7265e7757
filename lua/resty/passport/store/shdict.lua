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

function _M.get(self, sid)
    if type(sid) ~= "string" then
        error("bad argument #2 to 'get' (string expected, got " .. type(sid)
              .. ")", 2)
    end
    local key = self.prefix .. sid
    local json = self.dict:get(key)
    if json ~= nil then
        return json
    end
    local backend = self.backend
    if not backend then
        return nil
    end
    local err
    json, err = backend:get(sid)
    if json == nil then
        -- neither a miss nor a failure is cached: a session created a
        -- moment later must be seen at once
        return nil, err
    end
    -- "no memory" only costs the next get a trip to the backend
    self.dict:set(key, json, self.ttl)
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

-- Drops a record (a logout); the backend, if any, is not touched.
function _M.delete(self, sid)
    self.dict:delete(self.prefix .. sid)
    return true
end

return _M
