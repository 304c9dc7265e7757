-- luacheck over every Lua file in the tree, reported like busted's JSON
-- output, so the test summary counts one success or failure per file.
local cjson = require "cjson"

local function lines(cmd)
    local out = {}
    local p = assert(io.popen(cmd))
    for l in p:lines() do out[#out + 1] = l end
    p:close()
    return out
end

local files = lines("git ls-files -co --exclude-standard -- '*.lua' ':!node_modules'")
local report = lines("luacheck --formatter=plain --codes --no-color "
                     .. table.concat(files, " ") .. " 2>&1")

local warnings = {}
for _, l in ipairs(report) do
    local f = l:match("^(.-):%d+:%d+:")
    if f then
        warnings[f] = (warnings[f] and warnings[f] .. "\n" or "") .. l
    end
end

local result = { successes = {}, failures = {}, errors = {}, pending = {} }
for _, f in ipairs(files) do
    local entry = { name = "luacheck " .. f, message = warnings[f] }
    if warnings[f] then
        table.insert(result.failures, entry)
        io.stderr:write(warnings[f], "\n")
    else
        table.insert(result.successes, entry)
    end
end
io.write(cjson.encode(result))
