-- Vectors carry every byte string as hex (see spec/compat/README.md).
local char = string.char
local gsub = string.gsub
local tonumber = tonumber

local _M = {}

local null = require("cjson").null

-- JSON null (cjson.null) and nil both mean "no value".
function _M.decode(h)
    if h == nil or h == null then return nil end
    return (gsub(h, "%x%x", function(b) return char(tonumber(b, 16)) end))
end

function _M.encode(s)
    return (gsub(s, ".", function(c) return string.format("%02x", c:byte()) end))
end

function _M.list(t)
    local out = {}
    for i = 1, #t do out[i] = _M.decode(t[i]) end
    return out
end

return _M
