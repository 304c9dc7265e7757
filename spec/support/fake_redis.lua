-- A tiny TCP server that speaks broken RESP, for the one fault a real
-- redis-server cannot be made to show: garbage replies.  It reads RESP
-- commands; a GET for <prefix><sid> is answered with the bytes listed for
-- that sid (anything else gets "$-1"), then:
--   reply  keep the connection (the default)
--   close  close it right after the bytes
--   hang   never answer again, keep the connection open (peer closes)
--   drip   send the bytes one at a time, 20 ms apart, then close
--
--   local fake = require("support.fake_redis").start {
--       cases = { [sid] = { bytes = "...", after = "close" }, ... } }
--   fake.port, fake:stop()
--
-- The server is a separate process (luajit running this file), so nginx
-- and the spec talk to it over real sockets while it runs.
local socket = require "socket"
local proc = require "support.proc"
local nginx_server = require "support.nginx_server"

local M = {}
local Fake = {}
Fake.__index = Fake

function M.start(opts)
    local self = setmetatable({ port = proc.free_port() }, Fake)
    self.file = os.tmpname()
    local f = assert(io.open(self.file, "w"))
    for sid, case in pairs(opts.cases) do
        f:write(sid, " ", case.after or "reply", " ",
                (case.bytes:gsub(".", function(ch)
                    return ("%02x"):format(ch:byte()) end)), "\n")
    end
    f:close()
    local script = nginx_server.root .. "/spec/support/fake_redis_server.lua"
    local out = proc.sh("cd " .. nginx_server.root .. " && LUA_PATH='"
        .. nginx_server.root .. "/spec/?.lua;" .. nginx_server.root
        .. "/lua/?.lua;;' nohup luajit " .. script .. " "
        .. self.port .. " " .. self.file .. " " .. (opts.prefix or "sess:")
        .. " > /dev/null 2>&1 & echo $!")
    self.pid = tonumber(out:match("(%d+)%s*$"))
    local deadline = socket.gettime() + 5
    while socket.gettime() < deadline do
        local c = socket.tcp()
        c:settimeout(0.2)
        local ok = c:connect("127.0.0.1", self.port)
        c:close()
        if ok then return self end
        socket.sleep(0.02)
    end
    self:stop()
    error("the fake Redis did not come up")
end

function Fake:stop()
    if self.pid then
        os.execute("kill -9 " .. self.pid .. " 2>/dev/null")
        self.pid = nil
    end
    if self.file then
        os.remove(self.file)
        self.file = nil
    end
end

return M
