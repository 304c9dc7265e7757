-- Process helpers shared by the specs and their servers: shell commands and
-- quoting, whole files, free ports, liveness of a pid and waiting for its end.
local socket = require "socket"

local M = {}

-- Runs a shell command: its output (stdout and stderr) and whether it
-- exited with 0.
function M.sh(cmd)
    local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"rc=$?\""))
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("rc=(%d+)%s*$"))
    return (out:gsub("rc=%d+%s*$", "")), rc == 0
end

-- s as one shell word (single-quoted).
function M.q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The whole content of a file, or nil when it cannot be opened.
function M.read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

-- A port nobody listens on right now (bound to 0, read back, released).
function M.free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end

-- A zombie (exited, not yet reaped by its parent) counts as gone.
function M.alive(pid)
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then
        return false
    end
    local stat = f:read("*a") or ""
    f:close()
    return not stat:match("^%d+ %b() Z")
end

-- Waits until pid is gone (at most timeout s): true, or false if it lives.
function M.wait_gone(pid, timeout)
    local deadline = socket.gettime() + timeout
    while socket.gettime() < deadline do
        if not M.alive(pid) then
            return true
        end
        socket.sleep(0.02)
    end
    return not M.alive(pid)
end

return M
