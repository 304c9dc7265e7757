-- lua-resty-passport: who is this WebSocket?  The entry point.
--
--   local passport = require "resty.passport"
--   local auth = passport.authorize { secret = ..., store = passport.redis { ... } }
--   auth:access()      -- nginx access phase
--   auth:check(req)    -- any host
local authorize = require "resty.passport.authorize"

local require = require

local _M = { _VERSION = "0.1.0" }

_M.messages = authorize.messages

function _M.authorize(opts)
    return authorize.new(opts)
end

-- A connect-redis compatible store (resty.passport.store.redis).
function _M.redis(opts)
    return require("resty.passport.store.redis").new(opts)
end

return _M
