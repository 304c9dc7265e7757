-- Sums the machine-readable results of every suite (busted's JSON and the
-- suites that write the same shape) and prints the closing line
-- "N passed, N failed".  A suite whose results are missing or unreadable
-- counts as one failure: a crashed runner must not look green.
-- usage: luajit tools/test-summary.lua <results dir> <suite> [<suite> ...]
local cjson = require "cjson.safe"

local dir = assert(arg[1], "results directory expected")
local passed, failed = 0, 0

for i = 2, #arg do
    local suite = arg[i]
    local f = io.open(dir .. "/" .. suite .. ".json")
    local text = f and f:read("*a") or ""
    if f then f:close() end
    local doc = cjson.decode(text)
    if type(doc) ~= "table" then
        -- a spec that printed to stdout: busted's JSON is still its last line
        doc = cjson.decode(text:match("([^\n]+)\n*$") or "")
        if type(doc) == "table" then
            print(("[%s] note: text before the JSON on stdout (a spec prints)"):format(suite))
        end
    end
    if type(doc) ~= "table" or type(doc.successes) ~= "table" then
        failed = failed + 1
        print(("[%s] no results: the suite did not finish"):format(suite))
    else
        local bad = 0
        for _, kind in ipairs { "failures", "errors" } do
            for _, t in ipairs(doc[kind] or {}) do
                bad = bad + 1
                local where = t.trace and t.trace.short_src
                    and (" (" .. t.trace.short_src .. ":" .. (t.trace.currentline or "?") .. ")") or ""
                print(("[%s] FAILED %s%s"):format(suite, t.name or "?", where))
                if t.message then
                    print("    " .. tostring(t.message):sub(1, 2000):gsub("\n", "\n    "))
                end
            end
        end
        local rcf = io.open(dir .. "/" .. suite .. ".rc")
        local rc = rcf and tonumber(rcf:read("*a")) or 0
        if rcf then rcf:close() end
        if rc ~= 0 and bad == 0 then
            -- The runner failed although every test it reported passed.
            bad = 1
            print(("[%s] FAILED: the runner exited with status %d"):format(suite, rc))
        end
        passed = passed + #doc.successes
        failed = failed + bad
        print(("[%s] %d passed, %d failed, %d pending"):format(
            suite, #doc.successes, bad, #(doc.pending or {})))
    end
end

print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and passed > 0 and 0 or 1)
