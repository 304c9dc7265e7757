-- Real Redis high-availability topologies for specs, on 127.0.0.1: a
-- Sentinel-watched master/replica pair, and a Redis Cluster.  Every node is
-- a support.redis_server (free port, temp dir, stopped by pid, killed by its
-- exit hook); the sentinels and background redis-cli runs this module starts
-- itself have an exit hook of their own here.
--
--   local redis_ha = require "support.redis_ha"
--
--   local ha = redis_ha.sentinel {
--       master_name = "mymaster",     -- the default
--       down_after = 1000,            -- sentinel down-after-milliseconds
--       failover_timeout = 5000,      -- sentinel failover-timeout
--       config = { "notify-keyspace-events KA" }, -- extra lines, both nodes
--       password = nil,               -- requirepass + masterauth + auth-pass
--   }
--   ha.master, ha.replica     -- redis_server objects (.port, :call, :kill,
--                             -- :stop, :restart); wait_failover swaps them
--   ha.sentinels[i]           -- .port, :call, :kill, :stop
--   ha:master_addr(i)         --> "127.0.0.1", port (what sentinel i says)
--   ha:seed_addrs()           --> { { "127.0.0.1", port }, ... } (sentinels)
--   ha:seed_string()          --> "127.0.0.1:p1,..." (REDIS_SENTINELS)
--   ha:node(port)             --> the master or replica on that port
--   ha:kill_master()          --> socket.gettime() of the SIGKILL
--   ha:wait_failover(old_port [, timeout_s]) --> the promoted node's port
--   ha:stop()
--
--   local cl = redis_ha.cluster {
--       masters = 3, replicas = 0,    -- replicas per master
--       node_timeout = 3000,          -- cluster-node-timeout
--       config = { ... },             -- extra lines, every node
--       password = nil,               -- requirepass + masterauth
--   }
--   cl.nodes[i]               -- redis_server objects, plus .id (CLUSTER MYID)
--   cl:node(port_or_id)       --> that node
--   cl:masters()              --> { { node =, id =, port =, ranges = {{a, b}..},
--                             --      count = slots }, ... } sorted by port
--   cl:owner(slot)            --> the node serving the slot now
--   cl:keyslot(key)           --> CLUSTER KEYSLOT
--   cl:reshard(from, to, n [, opts]) -- redis-cli --cluster reshard, blocking
--   cl:reshard_async(from, to, n [, opts]) --> handle: :wait([timeout_s]),
--                             --   :done(), :kill(); opts.pipeline = keys
--                             --   per MIGRATE (redis-cli's default 10)
--   cl:wait_agreed([timeout_s]) -- every node: state ok, one slot map
--   cl:seed_addrs()           --> { { "127.0.0.1", port }, ... }
--   cl:seed_string()          --> "127.0.0.1:p1,127.0.0.1:p2,..." (the app's env)
--   cl:stop()
local socket = require "socket"
local proc = require "support.proc"
local redis_server = require "support.redis_server"

local M = {}

local sh = proc.sh
local q = proc.q
local read_file = proc.read_file
local alive = proc.alive
local now = socket.gettime

local HOST = "127.0.0.1"

-- pid -> { dir =, group = }: the sentinels and background redis-cli runs
-- this module started, for the exit hook (redis-servers have their own).
local running = {}

-- Polls f until it returns a true value (returned) or timeout seconds pass
-- (nil and f's last second result, the reason it was not ready yet).
local function poll(timeout, f)
    local deadline = now() + timeout
    local why
    repeat
        local ok, reason = f()
        if ok then
            return ok
        end
        why = reason
        socket.sleep(0.05)
    until now() > deadline
    return nil, why
end

-- A flat field/value reply (SENTINEL MASTER, one SENTINEL REPLICAS entry)
-- as a table.
local function fields(list)
    local t = {}
    for i = 1, #(list or {}) - 1, 2 do
        t[list[i]] = list[i + 1]
    end
    return t
end

local function tail(path, n)
    local text = read_file(path) or ""
    local lines = {}
    for line in text:gmatch("[^\n]+") do
        lines[#lines + 1] = line
    end
    return table.concat(lines, "\n", math.max(1, #lines - (n or 20) + 1))
end

local wait_gone = proc.wait_gone

------------------------------------------------------------------------------
-- Sentinels
------------------------------------------------------------------------------

-- A sentinel is driven like a redis-server (RESP over a raw socket), so it
-- takes redis_server's Server methods (connect, call, kill, stop).  That
-- module does not export the class: it is taken from a started server.
local Sentinel = {}
Sentinel.__index = Sentinel

local function inherit(server)
    if not getmetatable(Sentinel) then
        setmetatable(Sentinel, { __index = getmetatable(server).__index })
    end
end

local function forget(self)
    if self.pid then
        running[self.pid] = nil
    end
end

function Sentinel:kill()
    forget(self)
    getmetatable(Sentinel).__index.kill(self)
end

function Sentinel:stop()
    forget(self)
    getmetatable(Sentinel).__index.stop(self)
end

local function start_sentinel(opts, master)
    local self = setmetatable({
        host = HOST,
        port = redis_server.free_port(),
        dir = redis_server.tmpdir("sentinel"),
    }, Sentinel)
    self.log = self.dir .. "/sentinel.log"
    local name = opts.master_name
    local conf = {
        "bind " .. HOST,
        "port " .. self.port,
        "dir " .. self.dir,
        "daemonize yes",
        "pidfile " .. self.dir .. "/sentinel.pid",
        "logfile " .. self.log,
        "protected-mode no",
        -- What the sentinels tell each other (hello messages) and clients:
        -- the loopback address, never an interface the client cannot reach.
        "sentinel announce-ip " .. HOST,
        "sentinel announce-port " .. self.port,
        -- Quorum 2 of 3: one sentinel alone cannot declare the master down.
        "sentinel monitor " .. name .. " " .. HOST .. " " .. master.port .. " 2",
        "sentinel down-after-milliseconds " .. name .. " " .. opts.down_after,
        "sentinel failover-timeout " .. name .. " " .. opts.failover_timeout,
        "sentinel parallel-syncs " .. name .. " 1",
    }
    if opts.password then
        conf[#conf + 1] = "sentinel auth-pass " .. name .. " " .. opts.password
    end
    -- Sentinel rewrites its config (the replicas, sentinels and epochs it
    -- learns), so each one needs its own writable file.
    local path = self.dir .. "/sentinel.conf"
    local f = assert(io.open(path, "w"))
    f:write(table.concat(conf, "\n"), "\n")
    f:close()
    local out, ok = sh("redis-server " .. q(path) .. " --sentinel")
    if not ok then
        error("redis-sentinel failed to start: " .. out)
    end
    local pid = poll(5, function()
        return tonumber(read_file(self.dir .. "/sentinel.pid") or "")
    end)
    if pid then
        self.pid = pid
        running[pid] = { dir = self.dir }
    end
    if not pid or not poll(5, function() return self:call("PING") == "PONG" end) then
        error("sentinel did not answer on port " .. self.port .. "\n" .. tail(self.log))
    end
    return self
end

local Sentinels = {}
Sentinels.__index = Sentinels

-- Servers' addresses: { { "127.0.0.1", port }, ... }.
local function addrs_of(servers)
    local list = {}
    for _, s in ipairs(servers) do
        list[#list + 1] = { HOST, s.port }
    end
    return list
end

-- The sentinels' addresses, and as the app's REDIS_SENTINELS
-- ("127.0.0.1:p1,127.0.0.1:p2,...").
function Sentinels:seed_addrs()
    return addrs_of(self.sentinels)
end

local function join_addrs(list)
    local out = {}
    for _, a in ipairs(list) do
        out[#out + 1] = a[1] .. ":" .. a[2]
    end
    return table.concat(out, ",")
end

function Sentinels:seed_string()
    return join_addrs(self:seed_addrs())
end

-- The master's address as sentinel i (default 1) says now.
function Sentinels:master_addr(i)
    local r, err = self.sentinels[i or 1]:call("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                              self.master_name)
    if type(r) ~= "table" then
        return nil, err or "no master"
    end
    return r[1], tonumber(r[2])
end

function Sentinels:node(port)
    for _, n in ipairs(self.nodes) do
        if n.port == port then
            return n
        end
    end
end

-- Whether sentinel s knows the master, its replica (linked, not down) and
-- the 2 other sentinels; a reason when not.
local function sentinel_ready(self, s)
    local m = fields(s:call("SENTINEL", "MASTER", self.master_name))
    if m.flags ~= "master" then
        return nil, "sentinel " .. s.port .. ": master flags " .. tostring(m.flags)
    end
    local replicas = s:call("SENTINEL", "REPLICAS", self.master_name) or {}
    local up = 0
    for _, entry in ipairs(replicas) do
        local r = fields(entry)
        if r.flags == "slave" and r["master-link-status"] == "ok" then
            up = up + 1
        end
    end
    if up < 1 then
        return nil, "sentinel " .. s.port .. ": " .. up .. " replica(s) up"
    end
    local others = s:call("SENTINEL", "SENTINELS", self.master_name) or {}
    if #others < #self.sentinels - 1 then
        return nil, "sentinel " .. s.port .. ": knows " .. #others .. " other sentinel(s)"
    end
    return true
end

local function replica_synced(replica)
    local info = replica:call("INFO", "replication") or ""
    if info:match("master_link_status:up") then
        return true
    end
    return nil, "replica " .. replica.port .. " not in sync"
end

function M.sentinel(opts)
    opts = opts or {}
    local o = {
        master_name = opts.master_name or "mymaster",
        down_after = opts.down_after or 1000,
        failover_timeout = opts.failover_timeout or 5000,
        password = opts.password,
    }
    local self = setmetatable({ master_name = o.master_name, sentinels = {}, nodes = {} },
                              Sentinels)
    local ok, err = pcall(function()
        local function conf(extra)
            -- A diskless full sync waits 5 s by default for more replicas to
            -- share the transfer: start it at once.
            local lines = { "repl-diskless-sync-delay 0" }
            -- After a failover the old master comes back as a replica of the
            -- new one, so both nodes carry masterauth.
            if o.password then
                lines[#lines + 1] = "masterauth " .. o.password
            end
            for _, line in ipairs(opts.config or {}) do
                lines[#lines + 1] = line
            end
            lines[#lines + 1] = extra
            return lines
        end
        self.master = redis_server.start { password = o.password, config = conf() }
        self.nodes[1] = self.master
        self.replica = redis_server.start {
            password = o.password,
            config = conf("replicaof " .. HOST .. " " .. self.master.port),
        }
        self.nodes[2] = self.replica
        -- In sync before the sentinels start: their first INFO of the master
        -- then lists the replica (else they only see it 10 s later).
        local synced, why = poll(10, function() return replica_synced(self.replica) end)
        if not synced then
            error(why .. "\n" .. tail(self.replica.dir .. "/redis.log"))
        end
        inherit(self.master)
        for i = 1, 3 do
            self.sentinels[i] = start_sentinel(o, self.master)
        end
        -- Sentinels find each other through hello messages on the monitored
        -- instances (every 2 s): a few seconds.
        local ready
        ready, why = poll(20, function()
            for _, s in ipairs(self.sentinels) do
                local yes, reason = sentinel_ready(self, s)
                if not yes then
                    return nil, reason
                end
            end
            return true
        end)
        if not ready then
            error("sentinels not ready: " .. tostring(why) .. "\n"
                  .. tail(self.sentinels[1].log))
        end
    end)
    if not ok then
        self:stop()
        error(err, 0)
    end
    return self
end

-- SIGKILLs the node the sentinels call master now (a crash: no goodbye to
-- the replica or the sentinels).  Returns when it happened.
function Sentinels:kill_master()
    local _, port = assert(self:master_addr(1))
    local node = assert(self:node(port), "no node on port " .. port)
    node:kill()
    self.killed_port = port
    return now()
end

-- Waits until every sentinel names a master other than old_port (the same
-- one) and that node answers ROLE as a master; returns its port.  Then
-- ha.master is that node and ha.replica the other one: the old master, down.
-- ha.replica:restart() brings it back as a master on its port; the
-- sentinels turn it into a replica of the new one some 10 s later (their
-- INFO period), so wait for ROLE "slave" before relying on it.
function Sentinels:wait_failover(old_port, timeout)
    old_port = old_port or self.killed_port
    local port, why = poll(timeout or 30, function()
        local seen
        for i = 1, #self.sentinels do
            if self.sentinels[i].pid then
                local _, p = self:master_addr(i)
                if not p or p == old_port then
                    return nil, "sentinel " .. self.sentinels[i].port .. " says " .. tostring(p)
                end
                if seen and p ~= seen then
                    return nil, "sentinels disagree: " .. seen .. " / " .. p
                end
                seen = p
            end
        end
        local node = seen and self:node(seen)
        local role = node and node:call("ROLE")
        if type(role) ~= "table" or role[1] ~= "master" then
            return nil, "node " .. tostring(seen) .. " is not a master yet"
        end
        return seen
    end)
    if not port then
        error("no failover from " .. tostring(old_port) .. ": " .. tostring(why) .. "\n"
              .. tail(self.sentinels[1].log), 2)
    end
    self.master = self:node(port)
    for _, n in ipairs(self.nodes) do
        if n ~= self.master then
            self.replica = n
        end
    end
    return port
end

-- Sentinels first, so that they do not fail over while the nodes go.
function Sentinels:stop()
    for _, s in ipairs(self.sentinels) do
        s:stop()
    end
    for _, n in ipairs(self.nodes) do
        n:stop()
    end
end

------------------------------------------------------------------------------
-- Cluster
------------------------------------------------------------------------------

-- Whether nobody listens on a port now.
local function port_free(port)
    local s = socket.bind(HOST, port)
    if not s then
        return false
    end
    s:close()
    return true
end

-- A port whose cluster bus port (port + 10000) is free too.  Both are taken
-- from 20000-22767 / 30000-32767, below Linux's ephemeral range (32768+),
-- so an outgoing connection cannot take a bus port between this check and
-- redis-server's bind.  The start point moves with the clock, so that specs
-- running side by side do not probe in step.
local next_port = 20000 + math.floor(now() * 1000) % 2700
local function cluster_port()
    for _ = 1, 2768 do
        local p = next_port
        next_port = next_port + 1
        if next_port > 22767 then
            next_port = 20000
        end
        if port_free(p) and port_free(p + 10000) then
            return p
        end
    end
    error("no free port pair for a cluster node")
end

local Cluster = {}
Cluster.__index = Cluster

function Cluster:seed_addrs()
    return addrs_of(self.nodes)
end

function Cluster:seed_string()
    return join_addrs(self:seed_addrs())
end

function Cluster:node(port_or_id)
    for _, n in ipairs(self.nodes) do
        if n.port == port_or_id or n.id == port_or_id then
            return n
        end
    end
end

-- A running node to ask about the cluster.
local function any_node(self)
    for _, n in ipairs(self.nodes) do
        if n.pid then
            return n
        end
    end
    error("no cluster node is running")
end

function Cluster:keyslot(key)
    return assert(any_node(self):call("CLUSTER", "KEYSLOT", key))
end

-- CLUSTER SLOTS as one string (ranges by start: "a-b:master_port/replicas"),
-- to compare what the nodes believe.
local function slot_map(node)
    local slots = node:call("CLUSTER", "SLOTS")
    if type(slots) ~= "table" then
        return nil
    end
    table.sort(slots, function(x, y) return x[1] < y[1] end)
    local parts, covered = {}, 0
    for _, r in ipairs(slots) do
        local reps = {}
        for i = 4, #r do
            reps[#reps + 1] = r[i][2]
        end
        table.sort(reps)
        parts[#parts + 1] = r[1] .. "-" .. r[2] .. ":" .. r[3][2] .. "/" .. table.concat(reps, "+")
        covered = covered + r[2] - r[1] + 1
    end
    return table.concat(parts, " "), covered
end

-- Every running node: cluster_state:ok, all 16384 slots, the same map.
function Cluster:wait_agreed(timeout)
    local ok, why = poll(timeout or 20, function()
        local first
        for _, n in ipairs(self.nodes) do
            if n.pid then
                local info = n:call("CLUSTER", "INFO") or ""
                if not info:match("cluster_state:ok") then
                    return nil, "node " .. n.port .. ": cluster_state not ok"
                end
                local map, covered = slot_map(n)
                if covered ~= 16384 then
                    return nil, "node " .. n.port .. ": " .. tostring(covered) .. " slots covered"
                end
                if first and map ~= first then
                    return nil, "slot maps differ:\n  " .. first .. "\n  " .. map
                end
                first = map
            end
        end
        return true
    end)
    if not ok then
        error("cluster not agreed: " .. tostring(why), 2)
    end
end

function Cluster:masters()
    local slots = assert(any_node(self):call("CLUSTER", "SLOTS"))
    local by_id, list = {}, {}
    for _, r in ipairs(slots) do
        local id = r[3][3]
        local m = by_id[id]
        if not m then
            m = { id = id, port = r[3][2], node = self:node(id), ranges = {}, count = 0 }
            by_id[id] = m
            list[#list + 1] = m
        end
        m.ranges[#m.ranges + 1] = { r[1], r[2] }
        m.count = m.count + r[2] - r[1] + 1
    end
    for _, m in ipairs(list) do
        table.sort(m.ranges, function(x, y) return x[1] < y[1] end)
    end
    table.sort(list, function(x, y) return x.port < y.port end)
    return list
end

function Cluster:owner(slot)
    for _, m in ipairs(self:masters()) do
        for _, r in ipairs(m.ranges) do
            if slot >= r[1] and slot <= r[2] then
                return m.node
            end
        end
    end
end

local function reshard_cmd(self, from, to, nslots, opts)
    opts = opts or {}
    return "redis-cli --cluster reshard " .. HOST .. ":" .. from.port
        .. " --cluster-from " .. from.id .. " --cluster-to " .. to.id
        .. " --cluster-slots " .. nslots .. " --cluster-yes"
        -- keys per MIGRATE (redis-cli's default is 10); 1 = key by key
        .. (opts.pipeline and " --cluster-pipeline " .. opts.pipeline or "")
        .. (self.password and " -a " .. q(self.password) .. " --no-auth-warning" or "")
end

-- Moves nslots slots (redis-cli takes from's lowest slots first) from one
-- master to another, keys and all; returns once every node agrees.
function Cluster:reshard(from, to, nslots, opts)
    local out, ok = sh(reshard_cmd(self, from, to, nslots, opts))
    if not ok then
        error("reshard failed:\n" .. out, 2)
    end
    self:wait_agreed()
    return out
end

local Job = {}
Job.__index = Job

function Job:done()
    return not alive(self.pid)
end

-- Waits for the background reshard; errors if redis-cli failed or it takes
-- longer than timeout seconds (then it is killed).  Returns its output.
function Job:wait(timeout)
    if not wait_gone(self.pid, timeout or 60) then
        self:kill()
        error("reshard still running after " .. (timeout or 60) .. " s", 2)
    end
    running[self.pid] = nil
    local rc = tonumber(read_file(self.dir .. "/rc") or "")
    local out = read_file(self.dir .. "/out") or ""
    sh("rm -rf " .. q(self.dir))
    if rc ~= 0 then
        error("reshard failed (rc " .. tostring(rc) .. "):\n" .. out, 2)
    end
    self.cluster:wait_agreed()
    return out
end

function Job:kill()
    if running[self.pid] then
        if alive(self.pid) then
            sh("kill -KILL -- -" .. self.pid .. " 2>/dev/null")
            wait_gone(self.pid, 5)
        end
        running[self.pid] = nil
        sh("rm -rf " .. q(self.dir))
    end
end

-- The same reshard in the background, so that a spec can drive load while
-- keys migrate (MIGRATE moves them a batch at a time: a client asking for a
-- key already moved gets -ASK).  setsid makes it a process group of its own
-- (its pid is the group id), so the shell and redis-cli die together.
function Cluster:reshard_async(from, to, nslots, opts)
    local job = setmetatable({ cluster = self, dir = redis_server.tmpdir("reshard") }, Job)
    local script = reshard_cmd(self, from, to, nslots, opts)
        .. " > " .. q(job.dir .. "/out") .. " 2>&1; echo $? > " .. q(job.dir .. "/rc")
    local out = sh("setsid sh -c " .. q(script) .. " > /dev/null 2>&1 < /dev/null & echo $!")
    job.pid = assert(tonumber(out:match("(%d+)%s*$")), out)
    running[job.pid] = { dir = job.dir, group = true }
    self.jobs[#self.jobs + 1] = job
    return job
end

function M.cluster(opts)
    opts = opts or {}
    local masters = opts.masters or 3
    local replicas = opts.replicas or 0
    local self = setmetatable({ nodes = {}, jobs = {}, password = opts.password }, Cluster)
    local ok, err = pcall(function()
        for i = 1, masters * (1 + replicas) do
            local conf = {
                "cluster-enabled yes",
                -- Relative to the node's dir: each node its own file.
                "cluster-config-file nodes.conf",
                "cluster-node-timeout " .. (opts.node_timeout or 3000),
            }
            if opts.password then
                conf[#conf + 1] = "masterauth " .. opts.password
            end
            for _, line in ipairs(opts.config or {}) do
                conf[#conf + 1] = line
            end
            self.nodes[i] = redis_server.start {
                port = cluster_port(), password = opts.password, config = conf,
            }
            self.nodes[i].id = assert(self.nodes[i]:call("CLUSTER", "MYID"))
        end
        local addrs = {}
        for _, n in ipairs(self.nodes) do
            addrs[#addrs + 1] = HOST .. ":" .. n.port
        end
        local out, created = sh("redis-cli --cluster create " .. table.concat(addrs, " ")
                                .. " --cluster-replicas " .. replicas .. " --cluster-yes"
                                .. (opts.password and " -a " .. q(opts.password)
                                    .. " --no-auth-warning" or ""))
        if not created then
            error("redis-cli --cluster create failed:\n" .. out)
        end
        self:wait_agreed()
    end)
    if not ok then
        self:stop()
        error(err, 0)
    end
    return self
end

function Cluster:stop()
    for _, job in ipairs(self.jobs) do
        job:kill()
    end
    for _, n in ipairs(self.nodes) do
        n:stop()
    end
end

-- Kill whatever is left when the Lua state closes (busted exits with
-- os.exit(code, true), which closes it).
M._guard = newproxy(true)
getmetatable(M._guard).__gc = function()
    for pid, what in pairs(running) do
        os.execute("kill -9 " .. (what.group and "-- -" or "") .. pid .. " 2>/dev/null")
        if what.dir and what.dir:match("^/tmp/passport%-") then
            os.execute("rm -rf " .. what.dir)
        end
    end
end

return M
