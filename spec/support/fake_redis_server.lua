-- The fake Redis's server loop (see fake_redis.lua, which starts it):
--   luajit fake_redis_server.lua <port> <cases file> <prefix>
-- Cases file: one line per sid, "<sid> <after> <hex bytes>".
local socket = require "socket"
local resp = require "resty.passport.redis.resp"

local port, cases_file, prefix = tonumber(arg[1]), arg[2], arg[3] or "sess:"
local cases = {}
for line in io.lines(cases_file) do
    local sid, after, hex = line:match("^(%S+) (%S+) (%x*)$")
    if sid then
        cases[sid] = { after = after, bytes = hex:gsub("%x%x", function(h)
            return string.char(tonumber(h, 16)) end) }
    end
end
local server = assert(socket.bind("127.0.0.1", port, 128))
server:settimeout(0)
local clients = {} -- sock -> { parser, hang, drip = { bytes, at, next } }
local function drop(c)
    clients[c] = nil
    c:close()
end
-- Commands are RESP arrays: the library's own parser reads them.
local MAX_COMMAND = 1048576
while true do
    local recvt = { server }
    for c in pairs(clients) do recvt[#recvt + 1] = c end
    local readable = socket.select(recvt, nil, 0.01)
    for _, s in ipairs(readable) do
        if s == server then
            local c = server:accept()
            if c then
                c:settimeout(0)
                c:setoption("tcp-nodelay", true)
                clients[c] = { parser = resp.parser(MAX_COMMAND) }
            end
        elseif clients[s] then
            local st = clients[s]
            local data, err, partial = s:receive(65536)
            data = data or partial
            if err == "closed" then
                drop(s)
            elseif data and data ~= "" and not st.hang then
                st.parser:feed(data)
                while clients[s] and not st.hang and not st.drip do
                    local args, perr = st.parser:get()
                    if perr or (args ~= nil and type(args) ~= "table") then
                        drop(s)
                        break
                    end
                    if not args then break end
                    local cmd = (args[1] or ""):upper()
                    local case = cmd == "GET" and args[2]
                                 and cases[args[2]:sub(#prefix + 1)]
                    if cmd ~= "GET" then
                        s:settimeout(1)
                        s:send("+OK\r\n")
                        s:settimeout(0)
                    elseif not case then
                        s:settimeout(1)
                        s:send("$-1\r\n")
                        s:settimeout(0)
                    elseif case.after == "drip" then
                        st.drip = { bytes = case.bytes, at = 1, next = 0 }
                    else
                        s:settimeout(1)
                        s:send(case.bytes)
                        s:settimeout(0)
                        if case.after == "close" then
                            drop(s)
                        elseif case.after == "hang" then
                            st.hang = true
                        end
                    end
                end
            end
        end
    end
    local t = socket.gettime()
    for c, st in pairs(clients) do
        local d = st.drip
        if d and t >= d.next then
            if d.at > #d.bytes then
                drop(c)
            else
                c:send(d.bytes:sub(d.at, d.at))
                d.at = d.at + 1
                d.next = t + 0.02
            end
        end
    end
end
