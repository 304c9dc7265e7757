-- Abuse of socket.io's HTTP long-polling transport (passport.socketio with
-- lua_shared_dict passport_eio) against a real nginx with 2 workers and a
-- real redis-server: handshake floods that never poll, unknown sids,
-- oversize and binary POSTs, overlapping GETs, someone else's sid, an
-- upgrade left half done, clients that vanish mid-request.  Each case
-- checks the exact answer, npm engine.io 4's where it has one
-- (node_modules/engine.io/build/transports/polling.js and socket.js), then
-- that both workers still serve a well-behaved client.
--
-- Heartbeats are short (pingInterval 300 ms, pingTimeout 200 ms), so a
-- session nobody polls closes on its ping timeout after 0.5 s; its dict
-- keys live close_ttl = pingTimeout + 2 s more (for the last GET), so
-- everything of it is gone about 2.7 s after its handshake.  /mem reports
-- a worker's Lua memory after a full collection, the dict's session keys
-- and the sessions the worker is home to (and, to explain a failure, its
-- anonymous RSS and the Lua threads lua-nginx-module holds).
--
-- Within a case the answers are checked softly (check(), then verdict()),
-- so that a case reports every wrong answer it saw, not just the first.
-- KEEP_LOG=<file> in the environment keeps the gateway's error log there.
local redis_server = require "support.redis_server"
local nginx_server = require "support.nginx_server"
local ws = require "support.ws_raw"
local cookie = require "resty.passport.cookie"
local socket = require "socket"
local cjson = require "cjson"

local SECRET = "polling abuse spec secret"
local PING_INTERVAL, PING_TIMEOUT, CONNECT_TIMEOUT = 300, 200, 1000
local MAX_PAYLOAD = 10000
local POLL = "/socket.io/?EIO=4&transport=polling"
local WS = "/socket.io/?EIO=4&transport=websocket"
local UNKNOWN_SID = '{"code":1,"message":"Session ID unknown"}'
-- a closed session's keys outlive its close by pingTimeout + 2 s
local CLOSE_TTL = PING_TIMEOUT / 1000 + 2
-- from a handshake to the last of its keys, for a session nobody polls:
-- the first ping, its timeout, the close TTL, and a second of slack for
-- the host timer's ticks and a loaded machine
local DRAIN = (PING_INTERVAL + PING_TIMEOUT) / 1000 + CLOSE_TTL + 1

local RECORD = '{"cookie":{"originalMaxAge":3600000,"expires":"2099-01-01T00:00:00.000Z",'
               .. '"httpOnly":true,"path":"/"},"passport":{"user":%d}}'

local OPEN_PACKET = '^0{"sid":"([01]%.[%w_-]+)","upgrades":%["websocket"%],"pingInterval":'
                    .. PING_INTERVAL .. ',"pingTimeout":' .. PING_TIMEOUT .. ',"maxPayload":'
                    .. MAX_PAYLOAD .. '}$'

describe("socket.io long-polling under abuse (2 workers)", function()
    local redis, gw
    local ck = {}
    local fails

    setup(function()
        redis = redis_server.start {}
        for name, user in pairs { ann = 1, bob = 2 } do
            redis:call("SET", "sess:sid-" .. name, RECORD:format(user), "EX", "3600")
            ck[name] = "connect.sid=" .. cookie.sign("sid-" .. name, SECRET)
        end
        gw = nginx_server.start {
            workers = 2,
            http = ([[
    lua_shared_dict passport_eio 10m;
    lua_shared_dict sio_log 1m;
    init_by_lua_block {
        require("support.sio_app").configure {
            redis_port = %d, secret = %q,
            ping_interval = %d, ping_timeout = %d, connect_timeout = %d, max_payload = %d,
            send_timeout = 1,
        }
    }
]]):format(redis.port, SECRET, PING_INTERVAL, PING_TIMEOUT, CONNECT_TIMEOUT, MAX_PAYLOAD),
            server = [[
        client_max_body_size 1m;
        client_body_buffer_size 1m;
        location /socket.io/ { content_by_lua_block { require("support.sio_app").io:serve() } }
        # the README's recommended directive, for case 9
        location /abortable/ {
            lua_check_client_abort on;
            content_by_lua_block { require("support.sio_app").io:serve() }
        }
        location = /probe { content_by_lua_block { require("support.sio_app").probe() } }
        location = /mem {
            content_by_lua_block {
                collectgarbage()
                collectgarbage()
                local dict = ngx.shared.passport_eio
                local all = dict:get_keys(0)
                -- a session's keys (h<wid> and w<wid> are the workers'); a
                -- POSTed body, one sid a line, counts only those sessions'
                ngx.req.read_body()
                local only
                local body = ngx.req.get_body_data()
                if body then
                    only = {}
                    for sid in body:gmatch("[^\n]+") do only[sid] = true end
                end
                local n, sample = 0, {}
                for _, k in ipairs(all) do
                    if k:find("^[msioIOgPr]") and (not only or only[k:sub(2)]) then
                        n = n + 1
                        if #sample < 8 then sample[#sample + 1] = k .. " ttl " .. tostring(dict:ttl(k)) end
                    end
                end
                -- the Lua threads lua-nginx-module holds (its coroutine
                -- table in the registry: the largest table of threads there)
                local threads = 0
                for _, v in pairs(debug.getregistry()) do
                    if type(v) == "table" then
                        local t = 0
                        for _, x in pairs(v) do
                            if type(x) == "thread" then t = t + 1 end
                        end
                        if t > threads then threads = t end
                    end
                end
                local f = io.open("/proc/self/status")
                local status = f and f:read("*a") or ""
                if f then f:close() end
                ngx.print(require("cjson").encode {
                    pid = ngx.worker.pid(), kb = collectgarbage("count"), keys = #all,
                    anon_kb = tonumber(status:match("RssAnon:%s*(%d+)")), threads = threads,
                    session_keys = n, sample = sample,
                    homes = require("resty.passport.engineio.sessions").home_count(),
                })
            }
        }
]],
        }
        -- each worker builds its io on first use
        for _ = 1, 6 do
            local status, body = gw:get("/probe")
            assert(status == 200 and body == "ok", "the gateway cannot serve socket.io: " .. tostring(body))
        end
    end)

    teardown(function()
        if gw then
            local log = gw:error_log()
            if os.getenv("KEEP_LOG") then
                local f = io.open(os.getenv("KEEP_LOG"), "w")
                f:write(log)
                f:close()
            end
            gw:stop()
            for _, bad in ipairs { "%[alert%]", "%[crit%]", "%[emerg%]", "runtime error",
                                   "entry thread aborted", "exited on signal" } do
                assert(not log:match(bad), "the gateway's error log has " .. bad .. ":\n" .. log)
            end
        end
        if redis then redis:stop() end
    end)

    -- the sids a case was given (handshake()), for its drain check
    local made

    before_each(function()
        fails, made = {}, {}
    end)

    ---------------------------------------------------------------------------
    -- Soft checks.

    local function check(ok, what)
        if not ok then fails[#fails + 1] = what end
        return ok
    end

    local function verdict()
        assert(#fails == 0, #fails .. " wrong answer(s):\n  " .. table.concat(fails, "\n  "))
    end

    -- A response, short, for messages.
    local function show(status, body, h)
        body = body or ""
        if #body > 120 then body = body:sub(1, 120) .. "... (" .. #body .. " bytes)" end
        return ("%s [%s] %q"):format(tostring(status), h and h["content-type"] or "-", body)
    end

    ---------------------------------------------------------------------------
    -- Raw HTTP (LuaSocket, one connection per request).

    -- Sends a request; returns the connection.  opts: headers, body,
    -- chunks (a list: sent chunked), raw (bytes after the head, as is),
    -- length (the Content-Length to claim).
    local function send(method, path, opts)
        opts = opts or {}
        local c = socket.tcp()
        c:settimeout(opts.timeout or 5)
        assert(c:connect("127.0.0.1", gw.port))
        local head = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Connection: close" }
        for k, v in pairs(opts.headers or {}) do head[#head + 1] = k .. ": " .. v end
        if opts.body then head[#head + 1] = "Content-Length: " .. (opts.length or #opts.body) end
        if opts.chunks then head[#head + 1] = "Transfer-Encoding: chunked" end
        assert(c:send(table.concat(head, "\r\n") .. "\r\n\r\n"))
        if opts.body then c:send(opts.body) end
        if opts.chunks then
            -- nginx may refuse and close before the last chunk: send errors are fine
            for _, chunk in ipairs(opts.chunks) do
                if not c:send(("%x\r\n%s\r\n"):format(#chunk, chunk)) then break end
            end
            c:send("0\r\n\r\n")
        end
        return c
    end

    -- Reads the response to the end: status, body, headers (lower-case
    -- names); nil and why when there is none.
    local function receive(c)
        local raw, err, partial = c:receive("*a")
        c:close()
        raw = raw or partial
        if not raw or raw == "" then return nil, "no response: " .. tostring(err) end
        local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
        if not head then return nil, "bad response: " .. raw end
        local h = {}
        for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do h[k:lower()] = v end
        if (h["transfer-encoding"] or ""):lower() == "chunked" then
            local out, i = {}, 1
            while true do
                local size, j = body:match("^(%x+)[^\r\n]*\r\n()", i)
                if not size or tonumber(size, 16) == 0 then break end
                out[#out + 1] = body:sub(j, j + tonumber(size, 16) - 1)
                i = j + tonumber(size, 16) + 2
            end
            body = table.concat(out)
        end
        return tonumber(head:match("^HTTP/%d%.%d (%d+)")), body, h
    end

    local function request(method, path, opts)
        return receive(send(method, path, opts))
    end

    local function get(sid, who)
        return request("GET", POLL .. "&sid=" .. sid, { headers = { Cookie = who } })
    end

    local function post(sid, who, body, headers)
        local h = { Cookie = who, ["Content-Type"] = "text/plain;charset=UTF-8" }
        for k, v in pairs(headers or {}) do h[k] = v end
        return request("POST", POLL .. "&sid=" .. sid, { headers = h, body = body })
    end

    local function split(body)
        local out = {}
        for p in (body .. "\30"):gmatch("(.-)\30") do out[#out + 1] = p end
        return out
    end

    -- The handshake: the sid (and the response), asserted.
    local function handshake(who)
        local status, body, h = request("GET", POLL, { headers = { Cookie = who } })
        assert(status == 200, "handshake: " .. show(status, body, h))
        local sid = body:match(OPEN_PACKET)
        assert(sid, "handshake: no open packet: " .. show(status, body, h))
        made[#made + 1] = sid
        return sid
    end

    -- GETs until a packet matches pattern, answering pings ("2" -> POST
    -- "3"): the packets seen, and the matching one (nil after timeout s
    -- or on a non-200 answer, whose status and body come third and fourth).
    local function poll_until(sid, who, pattern, timeout)
        local seen = {}
        local deadline = socket.gettime() + (timeout or 3)
        while socket.gettime() < deadline do
            local status, body, h = get(sid, who)
            if status ~= 200 then return seen, nil, status, show(status, body, h) end
            for _, p in ipairs(split(body)) do
                seen[#seen + 1] = p
                if p == "2" then post(sid, who, "3") end
                if p:find(pattern) then return seen, p end
            end
        end
        return seen, nil
    end

    -- Is the answer "the session is gone": 400 Session ID unknown, or a
    -- payload whose last packet is the close packet (what engine.io gives
    -- a GET that was pending when the session closed, or answers the
    -- next GET with once the session is forgotten)?
    local function closed_answer(status, body, h)
        if status == 400 then
            return body == UNKNOWN_SID and h["content-type"] == "application/json"
        end
        if status ~= 200 then return false end
        local packets = split(body)
        return packets[#packets] == "1"
    end

    -- The answers to requests for a closed session, until one says it is
    -- gone: true, or false and what was seen.
    local function session_gone(sid, who)
        local status, body, h = get(sid, who)
        local first = show(status, body, h)
        if not closed_answer(status, body, h) then return false, first end
        if status == 400 then return true, first end
        -- after the close packet: forgotten
        local status2, body2, h2 = get(sid, who)
        local second = show(status2, body2, h2)
        return status2 == 400 and body2 == UNKNOWN_SID, first .. " then " .. second
    end

    ---------------------------------------------------------------------------
    -- The workers.

    -- Both workers' reports: pid -> { kb, anon_kb, threads, keys,
    -- session_keys, homes, sample }; session_keys counts the keys of sids
    -- only, when given.
    local function workers(sids)
        local by_pid, n = {}, 0
        local list = sids and table.concat(sids, "\n") .. "\n"
        -- a worker idle in epoll takes every new connection while it stays
        -- idle (EPOLLEXCLUSIVE): ask several at once, so both answer
        for _ = 1, 50 do
            local conns = {}
            for i = 1, 6 do
                conns[i] = send(sids and "POST" or "GET", "/mem", { body = list })
            end
            for i = 1, 6 do
                local status, body = receive(conns[i])
                assert(status == 200, "/mem: " .. tostring(status) .. " " .. tostring(body))
                local r = cjson.decode(body)
                if not by_pid[r.pid] then n = n + 1 end
                by_pid[r.pid] = r
            end
            if n == 2 then return by_pid end
        end
        error("/mem: only one worker answered 300 requests")
    end

    -- Waits until the dict holds no session key (of sids, when given) and no
    -- worker is home to a session, at most timeout s: true, or false and
    -- the last reports.
    local function drained(timeout, sids)
        local deadline = socket.gettime() + timeout
        local reports
        repeat
            reports = workers(sids)
            local clean = true
            for _, r in pairs(reports) do
                if r.session_keys ~= 0 or r.homes ~= 0 then clean = false end
            end
            if clean then return true, reports end
            socket.sleep(0.2)
        until socket.gettime() > deadline
        return false, reports
    end

    local function describe_reports(reports)
        local out = {}
        for pid, r in pairs(reports) do
            out[#out + 1] = ("pid %s: Lua %.0f KB, RssAnon %s KB, Lua threads %d, homes %d, session keys %d %s")
                :format(pid, r.kb, tostring(r.anon_kb), r.threads, r.homes, r.session_keys, cjson.encode(r.sample))
        end
        table.sort(out)
        return table.concat(out, "; ")
    end

    -- Asserts that within timeout s nothing of any session (of sids) is left.
    local function assert_drained(timeout, what, sids)
        local ok, reports = drained(timeout, sids)
        assert(ok, (what or "sessions") .. " left after " .. timeout .. " s: " .. describe_reports(reports))
        return reports
    end

    -- A well-behaved client on the session sid: CONNECT to "/", the
    -- server's CONNECT answer and "hello", an echo, then the close packet.
    local function normal_client(sid, who, user)
        local status, body, h = post(sid, who, "40")
        assert(status == 200 and body == "ok", "normal client: POST 40: " .. show(status, body, h))
        local seen, hello, s2, why = poll_until(sid, who, '^42%["hello"')
        assert(hello, "normal client: no hello: " .. cjson.encode(seen) .. " " .. tostring(s2) .. " " .. tostring(why))
        local connected
        for _, p in ipairs(seen) do
            if p:find('^40{"sid":"[%w_-]+"}$') then connected = true end
        end
        assert(connected, "normal client: no CONNECT answer in " .. cjson.encode(seen))
        assert(hello:find('"username":"' .. user .. '"', 1, true), "normal client: hello " .. hello)
        status, body, h = post(sid, who, '42["echo","still here"]')
        assert(status == 200 and body == "ok", "normal client: POST echo: " .. show(status, body, h))
        seen, hello = poll_until(sid, who, '^42%["echo","still here"%]$')
        assert(hello, "normal client: no echo: " .. cjson.encode(seen))
        -- leave: the close packet, then GET until the session is forgotten
        post(sid, who, "1")
        for _ = 1, 3 do
            if get(sid, who) == 400 then break end
        end
    end

    -- Both workers serve: a normal client homed in each (the sid says
    -- whose), its requests landing on either.  The handshakes go 4 at a
    -- time, so that both workers answer some (see workers()); the sessions
    -- not needed leave at once.
    local function serves_normally()
        local served = {}
        for _ = 1, 20 do
            local conns, sids = {}, {}
            for i = 1, 4 do conns[i] = send("GET", POLL, { headers = { Cookie = ck.ann } }) end
            for i = 1, 4 do
                local status, body, h = receive(conns[i])
                local sid = status == 200 and body:match(OPEN_PACKET)
                assert(sid, "normal client: handshake: " .. show(status, body, h))
                made[#made + 1] = sid
                sids[i] = sid
            end
            -- one normal client per round, on a fresh session: an unpolled
            -- one is closed by its ping timeout (500 ms) while another runs
            local chosen
            for _, sid in ipairs(sids) do
                if not chosen and not served[sid:sub(1, 1)] then chosen = sid end
            end
            if chosen then
                normal_client(chosen, ck.ann, "ann")
                served[chosen:sub(1, 1)] = true
            end
            for _, sid in ipairs(sids) do
                if sid ~= chosen then
                    post(sid, ck.ann, "1")
                    get(sid, ck.ann)
                end
            end
            if served["0"] and served["1"] then return end
        end
        error("normal clients: 80 handshakes, all answered by one worker")
    end

    local function log_mark() return #gw:error_log() end
    local function log_since(mark) return gw:error_log():sub(mark + 1) end

    -- A sid of the right shape ("<worker>.<20 of [A-Za-z0-9_-]>") that
    -- nobody was given.
    local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    local function random_sid(wid, len)
        local t = {}
        for i = 1, len or 20 do
            local k = math.random(1, #ALPHABET)
            t[i] = ALPHABET:sub(k, k)
        end
        return (wid and wid .. "." or "") .. table.concat(t)
    end

    ---------------------------------------------------------------------------

    it("1. 2,000 handshakes that never poll again: all answered, then memory, homes and the dict "
       .. "back to their baseline", function()
        local N, BATCH = 2000, 50

        -- N handshakes, BATCH connections at a time: the answers' sids
        local function flood()
            local sids, bad = {}, {}
            for _ = 1, N / BATCH do
                local conns = {}
                for i = 1, BATCH do
                    conns[i] = send("GET", POLL, { headers = { Cookie = ck.ann } })
                end
                for i = 1, BATCH do
                    local status, body, h = receive(conns[i])
                    local sid = status == 200 and body:match(OPEN_PACKET)
                    if sid then
                        sids[#sids + 1] = sid
                    elseif #bad < 5 then
                        bad[#bad + 1] = show(status, body, h)
                    end
                end
            end
            return sids, bad
        end

        -- warm-up: the same flood once, so that what a worker keeps after
        -- its first big round (tables grown to thousands of sessions keep
        -- their size, code compiled, buffers) is in the baseline
        local sids, bad = flood()
        assert.equal(N, #sids, "warm-up: refused handshakes: " .. table.concat(bad, "; "))
        local baseline = assert_drained(DRAIN + 2, "warm-up sessions")

        local t0 = socket.gettime()
        sids, bad = flood()
        local took = socket.gettime() - t0
        assert.equal(N, #sids, "refused handshakes: " .. table.concat(bad, "; "))
        local per_worker = {}
        for _, sid in ipairs(sids) do
            local w = sid:sub(1, 1)
            per_worker[w] = (per_worker[w] or 0) + 1
        end
        local distinct = {}
        for _, sid in ipairs(sids) do distinct[sid] = true end
        local n = 0
        for _ in pairs(distinct) do n = n + 1 end
        assert.equal(N, n, "sids given twice")

        -- a session nobody polls closes on its ping timeout; its keys go
        -- close_ttl later
        local after = assert_drained(DRAIN + 2, "flood sessions (" .. took .. " s, homes "
                                     .. cjson.encode(per_worker) .. ")")
        for pid, r in pairs(after) do
            local base = baseline[pid]
            assert(base, "worker " .. pid .. " is new: a worker died? " .. describe_reports(after))
            -- Slack, 256 KB a worker: after a full collection the heap is
            -- not exactly where it was, since the tables that indexed the
            -- round's sessions (homes, waiters, the deadlines' buckets)
            -- keep the size the round's peak gave them until they rehash,
            -- and buffers (cjson, the string buffer) keep their last size;
            -- with nothing leaking that is 2-70 KB here.  A worker is home
            -- to ~1,000 of the round's sessions, so 256 KB still catches a
            -- leak of a quarter of a KB per session (a Lua thread, a
            -- closure and its upvalues, a table of the session's cost more).
            check(r.kb <= base.kb + 256,
                  ("worker %s: Lua %.0f KB after the flood, %.0f KB at baseline"):format(pid, r.kb, base.kb))
        end
        if #fails > 0 then
            fails[#fails + 1] = "baseline: " .. describe_reports(baseline)
            fails[#fails + 1] = "after:    " .. describe_reports(after)
        end
        serves_normally()
        verdict()
    end)

    it("2. GETs and POSTs for unknown sids: 400 Session ID unknown", function()
        -- a real session, and sids one step from it: the other worker's id,
        -- a character off; then the real one goes on (before its first ping
        -- needs an answer)
        local real = handshake(ck.ann)
        local near = { (real:sub(1, 1) == "0" and "1" or "0") .. real:sub(2),
                       real:sub(1, -2) .. (real:sub(-1) == "A" and "B" or "A") }
        local function refused(sid, who)
            local status, body, h = get(sid, who)
            check(status == 400 and body == UNKNOWN_SID and h["content-type"] == "application/json",
                  "GET sid " .. sid:sub(1, 40) .. ": " .. show(status, body, h))
            status, body, h = post(sid, who, "40")
            check(status == 400 and body == UNKNOWN_SID and h["content-type"] == "application/json",
                  "POST sid " .. sid:sub(1, 40) .. ": " .. show(status, body, h))
        end
        for _, sid in ipairs(near) do refused(sid, ck.ann) end
        local status, body, h = post(real, ck.ann, "40")
        check(status == 200 and body == "ok", "the real session's POST: " .. show(status, body, h))
        local seen, hello = poll_until(real, ck.ann, '^42%["hello"')
        check(hello, "the real session after the near sids: " .. cjson.encode(seen))
        post(real, ck.ann, "1")
        get(real, ck.ann)

        local sids = {
            "", "x", "0.", "1.", "0." .. random_sid(nil, 20), "1." .. random_sid(nil, 20),
            random_sid("0"), random_sid("1"), random_sid("7"), random_sid(nil, 64),
            random_sid("0") .. random_sid(nil, 3000), "%00", "..%2F..%2Fetc",
        }
        for _ = 1, 100 do sids[#sids + 1] = random_sid(tostring(math.random(0, 1))) end
        for i, sid in ipairs(sids) do refused(sid, i % 3 == 0 and "" or ck.ann) end
        verdict()
        serves_normally()
        -- nothing was made for the unknown sids, nothing is left of the others
        for _, sid in ipairs(sids) do made[#made + 1] = sid end
        for _, sid in ipairs(near) do made[#made + 1] = sid end
        assert_drained(DRAIN, "sessions", made)
    end)

    it("3. an oversize POST: 413, and the session is closed", function()
        -- exactly max_payload is fine
        local sid = handshake(ck.ann)
        post(sid, ck.ann, "40")
        local pad = MAX_PAYLOAD - #'42["echo",""]'
        local status, body, h = post(sid, ck.ann, '42["echo","' .. ("x"):rep(pad) .. '"]')
        check(status == 200 and body == "ok", "POST of max_payload bytes: " .. show(status, body, h))
        local seen, echo = poll_until(sid, ck.ann, '^42%["echo","x')
        check(echo and #echo == MAX_PAYLOAD, "the echo of max_payload bytes: " .. #seen .. " packets, "
              .. tostring(echo and #echo))
        post(sid, ck.ann, "1")
        get(sid, ck.ann)

        -- with a Content-Length: engine.io answers a bare 413 (writeHead(413).end())
        sid = handshake(ck.ann)
        status, body, h = post(sid, ck.ann, "4" .. ("x"):rep(MAX_PAYLOAD))
        check(status == 413 and body == "", "POST of max_payload + 1 bytes: " .. show(status, body, h))
        local gone, what = session_gone(sid, ck.ann)
        check(gone, "after the 413, the session's next GETs: " .. what)

        -- chunked, no Content-Length: 3 x 5000 bytes
        sid = handshake(ck.ann)
        local chunk = ("x"):rep(5000)
        status, body, h = receive(send("POST", POLL .. "&sid=" .. sid, {
            headers = { Cookie = ck.ann }, chunks = { "4" .. chunk, chunk, chunk } }))
        check(status == 413 and body == "", "chunked POST of 15001 bytes: " .. show(status, body, h))
        gone, what = session_gone(sid, ck.ann)
        check(gone, "after the chunked 413, the session's next GETs: " .. what)

        -- chunked beyond client_max_body_size (1m): nginx refuses it while
        -- reading; the session must close all the same (and keep no lock)
        sid = handshake(ck.ann)
        local chunks = {}
        for i = 1, 24 do chunks[i] = (i == 1 and "4" or "") .. ("x"):rep(50000) end
        status, body, h = receive(send("POST", POLL .. "&sid=" .. sid, {
            headers = { Cookie = ck.ann }, chunks = chunks }))
        check(status == 413, "chunked POST of 1.2 MB: " .. show(status, body, h))
        -- that 413 is nginx's own: the POST's Lua never resumes, and the
        -- session hears of it from the POST's watchdog after send_timeout
        -- (1 s here; its ping timeout, 0.5 s here, may come first)
        socket.sleep(1.3)
        gone, what = session_gone(sid, ck.ann)
        check(gone, "1.3 s after the chunked 1.2 MB 413, the session's next GETs: " .. what)
        serves_normally()
        local ok, reports = drained(DRAIN, made)
        check(ok, "left " .. DRAIN .. " s later: " .. describe_reports(reports))
        verdict()
    end)

    it("4. two concurrent GETs for one sid: one gets a bare 400, the session closes", function()
        local sid = handshake(ck.ann)
        -- the first GET waits (nothing queued; the first ping is 300 ms away)
        local first = send("GET", POLL .. "&sid=" .. sid, { headers = { Cookie = ck.ann } })
        socket.sleep(0.05)
        local t0 = socket.gettime()
        local s2, b2, h2 = get(sid, ck.ann)
        local s1, b1, h1 = receive(first)
        local waited = socket.gettime() - t0
        -- engine.io: the newcomer gets writeHead(400).end(); onError("overlap
        -- from client") closes the session, and closing it sends the pending
        -- GET the close packet
        check(s2 == 400 and b2 == "", "the second GET: " .. show(s2, b2, h2))
        check(s1 == 200 and closed_answer(s1, b1, h1),
              "the pending GET (engine.io sends it the close packet): " .. show(s1, b1, h1))
        check(waited < 1, "the pending GET returned after " .. waited .. " s")
        local status, body, h = get(sid, ck.ann)
        check(status == 400 and body == UNKNOWN_SID, "a later GET: " .. show(status, body, h))
        status, body, h = post(sid, ck.ann, "40")
        check(status == 400 and body == UNKNOWN_SID, "a later POST: " .. show(status, body, h))
        verdict()
        serves_normally()
    end)

    it("5. someone else's sid: the upgrade and the polling requests are refused, the victim "
       .. "goes on", function()
        local sid = handshake(ck.ann)
        -- bob upgrades ann's session
        local c, status, h, body = ws.connect(gw.port, WS .. "&sid=" .. sid, { Cookie = ck.bob })
        check(c == nil and status == 400 and body == "Session ID unknown"
              and (h and h["content-type"]) == "text/html",
              "bob's upgrade: " .. show(status, body, h))
        if c then c:close() end
        -- no cookie at all
        c, status, h, body = ws.connect(gw.port, WS .. "&sid=" .. sid, {})
        check(c == nil and status == 400 and body == "Session ID unknown",
              "a cookieless upgrade: " .. show(status, body, h))
        if c then c:close() end
        -- bob polls it, posts to it
        status, body, h = get(sid, ck.bob)
        check(status == 400 and body == UNKNOWN_SID and h["content-type"] == "application/json",
              "bob's GET: " .. show(status, body, h))
        status, body, h = post(sid, ck.bob, '42["echo","from bob"]')
        check(status == 400 and body == UNKNOWN_SID, "bob's POST: " .. show(status, body, h))
        status, body, h = get(sid, "")
        check(status == 400 and body == UNKNOWN_SID, "a cookieless GET: " .. show(status, body, h))
        verdict()
        -- ann goes on: her CONNECT is answered, her hello says ann, and
        -- nothing of bob's reached her
        status, body, h = post(sid, ck.ann, "40")
        assert(status == 200 and body == "ok", "ann's POST: " .. show(status, body, h))
        local seen, hello = poll_until(sid, ck.ann, '^42%["hello"')
        assert(hello, "ann's session: " .. cjson.encode(seen))
        local connected
        for _, p in ipairs(seen) do
            assert(not p:find("from bob", 1, true), "bob's message reached ann: " .. p)
            if p:find('^40{"sid":"[%w_-]+"}$') then connected = true end
        end
        assert(connected, "no CONNECT answer for ann: " .. cjson.encode(seen))
        assert.matches('"username":"ann"', hello)
        post(sid, ck.ann, "1")
        get(sid, ck.ann)
        serves_normally()
    end)

    it("6. an upgrade that never completes: the session closes on its ping timeout and "
       .. "leaves nothing", function()
        local t0 = socket.gettime()
        local sid = handshake(ck.ann)
        local c, status, h, body = ws.connect(gw.port, WS .. "&sid=" .. sid, { Cookie = ck.ann })
        assert(c, "upgrade: " .. show(status, body, h))
        c:send_frame("text", "2probe")
        local f = c:read_frame(2)
        assert(f and f.payload == "3probe", "the probe's answer: " .. cjson.encode(f or {}))
        -- then nothing: no "5", no polling, no pongs
        assert_drained(DRAIN, "the half-upgraded session", made)
        -- engine.io closes the probing transport when the session closes
        -- (Socket.maybeUpgrade's onClose -> transport.close()); by now the
        -- session is long closed
        local code, err = c:read_close(math.max(0.1, t0 + 1.5 - socket.gettime()))
        local ended = code ~= nil or err ~= "timeout"
        c:close()
        check(ended, ("the probing WebSocket is still open %.1f s after the handshake, though its "
              .. "session closed on its ping timeout %.1f s after it and nothing of it is left")
              :format(socket.gettime() - t0, (PING_INTERVAL + PING_TIMEOUT) / 1000))
        verdict()
        serves_normally()
    end)

    it("7. a binary POST closes the session (bare 400); a garbage POST is \"ok\" and closes it",
       function()
        local sid = handshake(ck.ann)
        local status, body, h = post(sid, ck.ann, "40", { ["Content-Type"] = "application/octet-stream" })
        check(status == 400 and body == "", "POST application/octet-stream: " .. show(status, body, h))
        local gone, what = session_gone(sid, ck.ann)
        check(gone, "after the binary POST, the session's next GETs: " .. what)

        sid = handshake(ck.ann)
        status, body, h = post(sid, ck.ann, "hello, not an engine.io payload")
        check(status == 200 and body == "ok" and h["content-type"] == "text/html",
              "a garbage POST: " .. show(status, body, h))
        gone, what = session_gone(sid, ck.ann)
        check(gone, "after the garbage POST, the session's next GETs: " .. what)
        status, body, h = post(sid, ck.ann, "40")
        check(status == 400 and body == UNKNOWN_SID, "a later POST: " .. show(status, body, h))
        verdict()
        serves_normally()
    end)

    it("8. clients that vanish mid-POST and mid-long-poll: the workers go on, nothing is left",
       function()
        local mark = log_mark()
        local sids = {}
        for i = 1, 4 do
            local sid = handshake(ck.ann)
            sids[#sids + 1] = sid
            local c = send("POST", POLL .. "&sid=" .. sid, {
                headers = { Cookie = ck.ann }, body = "4012345678", length = 5000 })
            socket.sleep(0.02)
            c:close()
            -- and one that vanishes while its GET waits
            sid = handshake(ck.ann)
            sids[#sids + 1] = sid
            c = send("GET", POLL .. "&sid=" .. sid, { headers = { Cookie = ck.ann } })
            socket.sleep(0.02)
            if i % 2 == 0 then c:shutdown("send") end
            c:close()
        end
        serves_normally()
        local ok, reports = drained(DRAIN, made)
        check(ok, "left " .. DRAIN .. " s after the vanished clients: " .. describe_reports(reports))
        for _, sid in ipairs(sids) do
            local status, body, h = get(sid, ck.ann)
            check(status == 400 and body == UNKNOWN_SID, "a vanished client's sid: " .. show(status, body, h))
        end
        local errors = {}
        for line in log_since(mark):gmatch("[^\n]+") do
            if line:find("[error]", 1, true) then errors[#errors + 1] = line end
        end
        check(#errors == 0, "error-level log lines:\n" .. table.concat(errors, "\n"))
        verdict()
    end)

    it("9. with lua_check_client_abort on, a long-poll whose client vanishes closes its session at once",
       function()
        local ABORTABLE = "/abortable/?EIO=4&transport=polling"
        local mark = log_mark()
        local sids = {}
        for i = 1, 4 do
            local sid = handshake(ck.ann)
            sids[i] = sid
            local t0 = socket.gettime()
            local c = send("GET", ABORTABLE .. "&sid=" .. sid, { headers = { Cookie = ck.ann } })
            socket.sleep(0.03)
            c:close()
            -- engine.io: "poll connection closed prematurely"; the session
            -- is gone long before its ping timeout (500 ms after the handshake)
            socket.sleep(0.05)
            local status, body, h = post(sid, ck.ann, "40")
            local took = socket.gettime() - t0
            check(status == 400 and body == UNKNOWN_SID and took < 0.3,
                  ("%.0f ms after the vanished GET, a POST: %s"):format(took * 1000, show(status, body, h)))
        end
        -- and mid-POST, under the same directive
        local sid = handshake(ck.ann)
        sids[#sids + 1] = sid
        local c = send("POST", ABORTABLE .. "&sid=" .. sid, {
            headers = { Cookie = ck.ann }, body = "4012345678", length = 5000 })
        socket.sleep(0.03)
        c:close()
        socket.sleep(0.05)
        local status, body, h = get(sid, ck.ann)
        check(status == 400 and body == UNKNOWN_SID, "after the vanished POST, a GET: " .. show(status, body, h))
        for _, s in ipairs(sids) do made[#made + 1] = s end
        local ok, reports = drained(DRAIN, sids)
        check(ok, "left after the vanished clients: " .. describe_reports(reports))
        local errors = {}
        for line in log_since(mark):gmatch("[^\n]+") do
            if line:find("[error]", 1, true) then errors[#errors + 1] = line end
        end
        check(#errors == 0, "error-level log lines:\n" .. table.concat(errors, "\n"))
        verdict()
        serves_normally()
    end)
end)
