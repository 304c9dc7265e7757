-- Redis Cluster key slots, as CLUSTER KEYSLOT answers: CRC16 of the key (or
-- of its hash tag, the bytes between the first "{" and the first "}" after
-- it) mod 16384, computed in the C core (csrc/slot.c).
--
--   slot.of("{user1000}.following")  --> 3443, as "{user1000}.followers"
local C = require("resty.passport.ffi").C

local type = type

local _M = { _VERSION = "0.1.0", COUNT = 16384 }

function _M.of(key)
    if type(key) ~= "string" then
        error("bad argument #1 to 'slot.of' (string expected, got " .. type(key) .. ")", 2)
    end
    -- Never negative: a Lua string is never NULL.
    return tonumber(C.rp_key_slot(key, #key))
end

return _M
