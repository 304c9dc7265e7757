-- Shared by the fault and abuse specs (spec/integration/fault_*_spec.lua):
-- what a worker holds (fds by kind, RSS), the invariants checked after each
-- fault, half handshakes, and many handshakes at once through bench/loadgen.c
-- in its script mode (built on demand by `make loadgen`).
--
--   local fault = require "support.fault"
--   local base = fault.snapshot(nginx, { redis = redis.port, upstream = up.port })
--   ... a fault ...
--   fault.invariants(nginx, base, { probe = probe_port, rss = true })
--   local res = fault.load(port, lines, { action = "hold", conc = 500 })
local cjson = require "cjson"
local socket = require "socket"
local proc = require "support.proc"
local nginx_server = require "support.nginx_server"

local M = {}
local ROOT = nginx_server.root
local TRACE = os.getenv("FAULT_TRACE")
local T0 = socket.gettime()
local read_file = proc.read_file

-- With FAULT_TRACE set, timestamps on stderr (where the wall time goes).
function M.trace(label)
    if TRACE then io.stderr:write(("[trace %.2f] %s\n"):format(socket.gettime() - T0, label)) end
end

-- The worker pids of an nginx (children of the master).
function M.workers(nginx)
    local out = proc.sh("pgrep -P " .. nginx.pid)
    local pids = {}
    for pid in out:gmatch("%d+") do pids[#pids + 1] = tonumber(pid) end
    table.sort(pids)
    return pids
end

-- inode -> { lport, rport, state } for every TCP socket on the host that
-- is not in TIME_WAIT (ss over netlink: /proc/net/tcp gets slow with the
-- hundred thousand TIME_WAIT entries a load run leaves).
local function tcp_table()
    local t = {}
    local out = proc.sh("ss -Htane state big")
    for st, lp, rp, ino in out:gmatch("(%S+)%s+%d+%s+%d+%s+%S-:(%d+)%s+%S-:([%d*]+)%s+ino:(%d+)") do
        t[ino] = { lport = tonumber(lp), rport = tonumber(rp), state = st }
    end
    return t
end

-- What one worker holds: { total, files, listen, client, redis, upstream,
-- other, rss (kB) }.  ports = { listen = {p...}, redis = p or {p...},
-- upstream = {p...} }: Redis connections are pooled, upstream ones not.
function M.worker_state(pid, ports, tcp)
    tcp = tcp or tcp_table()
    local s = { total = 0, files = 0, listen = 0, client = 0, redis = 0,
                upstream = 0, other = 0 }
    local listen = {}
    for _, p in ipairs(ports.listen or {}) do listen[p] = true end
    local upstream, redis = {}, {}
    for _, p in ipairs(ports.upstream or {}) do upstream[p] = true end
    for _, p in ipairs(type(ports.redis) == "table" and ports.redis or { ports.redis }) do
        redis[p] = true
    end
    local out = proc.sh("ls -l /proc/" .. pid .. "/fd")
    for target in out:gmatch("%-> ([^\n]+)") do
        s.total = s.total + 1
        local ino = target:match("^socket:%[(%d+)%]")
        local sock = ino and tcp[ino]
        if not ino then
            s.files = s.files + 1
        elseif not sock then
            s.other = s.other + 1 -- unix sockets, socketpairs
        elseif sock.state == "LISTEN" then
            s.listen = s.listen + 1
        elseif listen[sock.lport] then
            s.client = s.client + 1
        elseif redis[sock.rport] then
            s.redis = s.redis + 1
            s.redis_states = (s.redis_states or "") .. sock.state .. " "
        elseif upstream[sock.rport] then
            s.upstream = s.upstream + 1
        else
            s.other = s.other + 1
        end
    end
    local status = read_file("/proc/" .. pid .. "/status") or ""
    s.rss = tonumber(status:match("VmRSS:%s*(%d+)")) or 0
    return s
end

function M.describe(s)
    return ("%d fds (files %d, listen %d, clients %d, redis %d, upstream %d, "
            .. "other %d), RSS %d kB"):format(s.total, s.files, s.listen,
            s.client, s.redis, s.upstream, s.other, s.rss)
end

-- pid -> worker_state for every worker; the pids in .pids.
function M.snapshot(nginx, ports)
    local snap = { pids = M.workers(nginx), ports = ports, by = {} }
    local tcp = tcp_table()
    for _, pid in ipairs(snap.pids) do
        snap.by[pid] = M.worker_state(pid, ports, tcp)
    end
    return snap
end

-- The worker pids that answer GET /_pid on the reuseport probe port (the
-- kernel spreads those connections over the workers by source port).
function M.answering(port, tries, path)
    local seen, n = {}, 0
    for _ = 1, tries or 40 do
        local c = socket.tcp()
        c:settimeout(2)
        if c:connect("127.0.0.1", port) then
            c:send("GET " .. (path or "/_pid") .. " HTTP/1.0\r\nHost: x\r\n\r\n")
            local raw = c:receive("*a")
            local pid = raw and tonumber(raw:match("\r\n\r\n(%d+)"))
            if pid and not seen[pid] then
                seen[pid] = true
                n = n + 1
            end
        end
        c:close()
    end
    return seen, n
end

-- A location for the spec's nginx: a full Lua GC, then glibc's malloc_trim,
-- so RSS shows the memory in use rather than what the allocator kept
-- from a peak.  Answers the worker's pid.
M.TRIM_LOCATION = [[
        location = /_trim {
            content_by_lua_block {
                collectgarbage()
                collectgarbage()
                local ffi = require "ffi"
                pcall(ffi.cdef, "int malloc_trim(size_t pad);")
                ffi.C.malloc_trim(0)
                ngx.print(ngx.worker.pid())
            }
        }
]]

-- Runs /_trim in every worker of nginx (through the reuseport port).
function M.trim(nginx, port)
    local want = #M.workers(nginx)
    for _ = 1, 5 do
        local _, n = M.answering(port, 40, "/_trim")
        if n >= want then return true end
    end
    error("could not reach every worker's /_trim")
end

-- The baseline for the RSS check after a load: the cold snapshot's fds and
-- ports, with each worker's RSS taken from the settled (warmed-up) snapshot
-- of M.settle.  Reports both RSS figures per worker on stderr.
function M.warm_baseline(base, rss_base)
    local cmp = { pids = rss_base.pids, ports = base.ports, by = {} }
    for _, pid in ipairs(rss_base.pids) do
        local b = {}
        for k, v in pairs(base.by[pid]) do b[k] = v end
        b.rss = rss_base.by[pid].rss
        cmp.by[pid] = b
        io.stderr:write(("worker %d RSS: cold %d kB, after warm-up %d kB\n"):format(
            pid, base.by[pid].rss, b.rss))
    end
    return cmp
end

-- The first line of text that holds needle (plain), or nil.  (A pattern
-- like "[^\n]*needle" is quadratic on a log of a hundred thousand lines.)
local function line_with(text, needle)
    local at = text:find(needle, 1, true)
    if not at then return nil end
    local from = at
    while from > 1 and text:byte(from - 1) ~= 10 do from = from - 1 end
    local to = text:find("\n", at, true) or #text + 1
    return text:sub(from, to - 1)
end
M.line_with = line_with

-- Runs run() (one load) until every worker's RSS, after GC + malloc_trim,
-- grew less than `step` (default 2 %) over the run before: RSS climbs over
-- the first runs as LuaJIT and malloc keep what the peak needed, then stays
-- flat; a leak never settles.  At most `max` runs (default 6); raises if
-- RSS is still climbing then.  Returns the settled snapshot (the RSS
-- baseline) and the per-run history for the report.
function M.settle(nginx, port, ports, run, opts)
    opts = opts or {}
    local step, max = opts.step or 0.02, opts.max or 9
    local prev, history = nil, {}
    -- settled: two runs in a row without growth (with several workers, one
    -- that got little of a run's load looks flat once by chance)
    local calm = 0
    for k = 1, max do
        run(k)
        M.trim(nginx, port)
        local snap = M.snapshot(nginx, ports)
        local row, settled = {}, prev ~= nil
        for _, pid in ipairs(snap.pids) do
            local r = snap.by[pid].rss
            row[#row + 1] = ("%d:%d"):format(pid, r)
            if not prev or not prev.by[pid] or r > prev.by[pid].rss * (1 + step) then
                settled = false
            end
        end
        history[#history + 1] = table.concat(row, " ")
        calm = settled and calm + 1 or 0
        if calm >= 2 then
            return snap, history
        end
        prev = snap
    end
    error("worker RSS still growing after " .. max .. " runs (kB per run): "
          .. table.concat(history, " | "))
end

-- Checks, after a fault, that:
--   * no worker exited on a signal (error log) and the pids are the same;
--   * every worker answers on the probe port;
--   * each worker's fds come back to the baseline (within `wait` s): the
--     same files, listeners, other sockets; no client or upstream
--     connection left; Redis connections at most the pool size (plus any
--     the baseline had: nginx inherits the spec's own open sockets);
--   * with opts.rss: RSS within 5 % of the baseline's.
-- Returns a report string (for the spec's output); raises on a breach.
function M.invariants(nginx, base, opts)
    opts = opts or {}
    local log = nginx:error_log()
    local crash = line_with(log, "exited on signal")
    assert(not crash, "a worker crashed: " .. tostring(crash))
    local alert = line_with(log, "[alert]")
    assert(not alert, "an alert in the error log: " .. tostring(alert))
    local pids = M.workers(nginx)
    assert(table.concat(pids, ",") == table.concat(base.pids, ","),
           "workers changed: " .. table.concat(base.pids, ",") .. " -> "
           .. table.concat(pids, ","))
    if opts.probe then
        local seen, n = M.answering(opts.probe)
        assert(n == #pids, "only " .. n .. " of " .. #pids .. " workers answer")
        for _, pid in ipairs(pids) do
            assert(seen[pid], "worker " .. pid .. " does not answer")
        end
    end
    local pool = opts.pool_size or 30
    local deadline = socket.gettime() + (opts.wait or 10)
    local report, bad
    local t0 = socket.gettime()
    repeat
        local tcp = tcp_table()
        report, bad = {}, nil
        for _, pid in ipairs(pids) do
            local b = base.by[pid]
            local s = M.worker_state(pid, base.ports, tcp)
            report[#report + 1] = ("worker %d: %s (baseline %s)"):format(
                pid, M.describe(s), M.describe(b))
            if s.files ~= b.files or s.listen ~= b.listen or s.other > b.other
               or s.client > 0 or s.upstream > (opts.upstream_pool or 0)
               or s.redis > pool + b.redis then
                bad = "worker " .. pid .. " fds not back to baseline: "
                      .. M.describe(s) .. " vs " .. M.describe(b)
                      .. (s.redis_states and " (Redis socket states: " .. s.redis_states .. ")" or "")
            end
            if opts.rss and s.rss > b.rss * 1.05 then
                bad = (bad and bad .. "; " or "") .. ("worker %d RSS %d kB, "
                      .. "more than 5 %% over its baseline %d kB"):format(
                      pid, s.rss, b.rss)
            end
        end
        if bad then socket.sleep(0.2) end
    until not bad or socket.gettime() > deadline
    M.trace(("invariants waited %.2f s"):format(socket.gettime() - t0))
    assert(not bad, bad)
    return table.concat(report, "\n")
end

-- n clients that each send the start of an upgrade request for /ws (a
-- different cut each), then vanish: every other one with a reset
-- (SO_LINGER 0), the rest with a FIN.
function M.half_handshakes(port, cookie, n)
    local full = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 .. "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 .. "Cookie: " .. cookie .. "\r\n\r\n"
    for i = 1, n do
        local c = socket.tcp()
        c:settimeout(5)
        assert(c:connect("127.0.0.1", port))
        c:send(full:sub(1, (i * 7) % #full))
        if i % 2 == 0 then c:setoption("linger", { on = true, timeout = 0 }) end
        c:close()
    end
end

---------------------------------------------------------------------------
-- Many handshakes at once: bench/loadgen.c's script mode (one thread, epoll:
-- thousands of connections in flight, which LuaSocket's select() cannot do).

-- The load generator, built by `make loadgen` when it is missing or stale.
function M.loadgen_bin()
    local out, ok = proc.sh("make --no-print-directory -s -C " .. proc.q(ROOT) .. " loadgen")
    assert(ok, "building bench/loadgen.c failed: " .. out)
    return ROOT .. "/build/bench/loadgen"
end

-- Starts the load generator against 127.0.0.1:port in the background, one
-- connection per line of lines = { "<path>\t<cookie>" }.  opts: action (what
-- a connection does once the response head is in: close, hold, half,
-- frame, hframe; see bench/loadgen.c), conc, rounds, timeout (s).  :wait()
-- returns a list per round of { status = n, seen = s } in line order, and a
-- summary line.
local Load = {}
Load.__index = Load

function M.load_async(port, lines, opts)
    opts = opts or {}
    local bin = M.loadgen_bin()
    local self = setmetatable({ input = os.tmpname(), output = os.tmpname(),
                                errput = os.tmpname(), done = os.tmpname(),
                                lines = #lines, rounds = opts.rounds or 1 }, Load)
    local f = assert(io.open(self.input, "wb"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    os.remove(self.done)
    local cmd = ("%s -m script -p %d -f %s -c %d -a %s -r %d -T %d > %s 2> %s; "
                 .. "echo $? > %s.tmp; mv %s.tmp %s"):format(
        bin, port, self.input, opts.conc or 100, opts.action or "close", self.rounds,
        math.floor((opts.timeout or 10) * 1000), self.output, self.errput, self.done, self.done, self.done)
    os.execute("(" .. cmd .. ") &")
    return self
end

function Load:wait(limit)
    local t0 = socket.gettime()
    local deadline = t0 + (limit or 120)
    while (read_file(self.done) or "") == "" and socket.gettime() < deadline do
        socket.sleep(0.02)
    end
    M.trace(("loadgen waited %.2f s"):format(socket.gettime() - t0))
    local rc = read_file(self.done)
    local text = read_file(self.output) or ""
    local errput = read_file(self.errput) or ""
    for _, k in ipairs { "input", "output", "errput", "done" } do os.remove(self[k]) end
    local done = cjson.decode(("\n" .. text):match("\n({\"event\":\"done\"[^\n]*)") or "null")
    assert(rc and tonumber(rc) == 0 and done, "loadgen failed or did not finish: " .. errput
           .. text:sub(-500))
    local rounds = {}
    for r, i, st, seen in text:gmatch("%f[^\n%z](%d+) (%d+) (%-?%d+) ([^\n]*)") do
        r, i = tonumber(r), tonumber(i) + 1
        rounds[r] = rounds[r] or {}
        rounds[r][i] = { status = tonumber(st), seen = seen }
    end
    M.trace("loadgen output parsed")
    local summary = ("loadgen: %d requests x %d rounds in %.2f s: %d upgraded, %d refused, "
                     .. "%d failed, %d timed out"):format(self.lines, self.rounds, done.elapsed_s,
                     done.ok, done.rejected, done.errors - done.err_timeout, done.err_timeout)
    return rounds, summary
end

-- The same, waiting for it.
function M.load(port, lines, opts)
    return M.load_async(port, lines, opts):wait()
end

-- Counts of statuses in one round's results: { [status] = n }.
function M.tally(results)
    local t = {}
    for _, r in ipairs(results) do t[r.status] = (t[r.status] or 0) + 1 end
    return t
end

function M.show_tally(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do out[#out + 1] = k .. ": " .. t[k] end
    return table.concat(out, ", ")
end

-- The sid inside an express-session Cookie header value ("connect.sid=s%3A<sid>.<sig>").
function M.sid_of(cookie)
    return cookie:match("s%%3A(.-)%.[^.]*$") or cookie:match("s:(.-)%.[^.]*$")
end

return M
