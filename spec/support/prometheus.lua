-- A real Prometheus server for specs (Debian's prometheus: /usr/bin/
-- prometheus), scraping one target every second; and promtool's linter.
--
--   local prometheus = require "support.prometheus"
--   local prom = prometheus.start {
--       target = "127.0.0.1:8080",   -- host:port to scrape
--       metrics_path = "/metrics",   -- default /metrics
--       scrape_interval = "1s",      -- default 1s
--   }
--   prom.port, prom.dir, prom.pid
--   prom:query("sum(passport_handshakes_total)")
--       --> data.result (the decoded JSON's), the whole decoded body
--       --> nil, err when the API did not answer "success"
--   prom:wait_for(expr, function(result) return ... end, timeout)
--       --> the first result the predicate accepts | nil, err (timeout)
--   prom:targets()     --> data.activeTargets of /api/v1/targets
--   prom:log()         --> Prometheus's own log so far
--   prom:stop()        -- TERM, KILL after 5 s; removes the temp dir
--
--   prometheus.promtool_check(text)  --> ok, output
--       `promtool check metrics` on text: ok only when it exits 0 and says
--       nothing (its lint warnings, e.g. a counter without _total, fail too).
--
-- Every server still running when the Lua state closes is killed and its
-- temp dir removed, so a failing spec does not leave one behind.
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"
local proc = require "support.proc"

local M = {}

M.prometheus = os.getenv("PROMETHEUS") or "prometheus"
M.promtool = os.getenv("PROMTOOL") or "promtool"

local running = {} -- pid -> server, for the exit hook

local sh = proc.sh
local q = proc.q
local alive = proc.alive
local read_file = proc.read_file

local function tmpdir()
    return (sh("mktemp -d /tmp/passport-prometheus.XXXXXX"):gsub("%s+$", ""))
end

-- s as a single-quoted YAML scalar.
local function yaml(s)
    return "'" .. tostring(s):gsub("'", "''") .. "'"
end

local function urlencode(s)
    return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- GET on 127.0.0.1:port: status, body.
local function get(port, path, timeout)
    http.TIMEOUT = timeout or 5
    local chunks = {}
    local _, status = http.request {
        url = "http://127.0.0.1:" .. port .. path,
        sink = ltn12.sink.table(chunks),
        redirect = false,
    }
    return status, table.concat(chunks)
end

local Server = {}
Server.__index = Server

function Server:log()
    return read_file(self.dir .. "/prometheus.log") or ""
end

-- GET of an API path; data of the decoded body, and the body.
local function api(self, path)
    local status, body = get(self.port, path)
    if type(status) ~= "number" then
        return nil, "no answer from prometheus: " .. tostring(status)
    end
    local ok, doc = pcall(cjson.decode, body)
    if not ok or type(doc) ~= "table" then
        return nil, "status " .. status .. ", not JSON: " .. body
    end
    if doc.status ~= "success" then
        return nil, "status " .. status .. ": " .. tostring(doc.errorType) .. ": " .. tostring(doc.error)
    end
    return doc.data, doc
end

function Server:query(expr)
    local data, doc = api(self, "/api/v1/query?query=" .. urlencode(expr))
    if not data then
        return nil, doc
    end
    return data.result, doc
end

function Server:targets()
    local data, err = api(self, "/api/v1/targets")
    if not data then
        return nil, err
    end
    return data.activeTargets
end

-- Polls expr until predicate(result) is true, every 0.2 s for at most
-- timeout seconds (default 15).
function Server:wait_for(expr, predicate, timeout)
    local deadline = socket.gettime() + (timeout or 15)
    local last, err
    repeat
        last, err = self:query(expr)
        if last and predicate(last) then
            return last
        end
        socket.sleep(0.2)
    until socket.gettime() > deadline
    return nil, "timed out waiting for " .. expr .. "; last result: "
        .. (last and cjson.encode(last) or tostring(err))
end

local wait_gone = proc.wait_gone

function Server:stop()
    if self.pid then
        local pid = self.pid
        sh("kill -TERM " .. pid)
        if not wait_gone(pid, 5) then
            sh("kill -KILL " .. pid)
            wait_gone(pid, 2)
        end
        running[pid] = nil
        self.pid = nil
    end
    if self.dir and self.dir:match("^/tmp/passport%-prometheus%.") then
        sh("rm -rf " .. q(self.dir))
        self.dir = nil
    end
end

function M.start(opts)
    assert(type(opts) == "table" and opts.target, "prometheus.start{ target = \"host:port\" }")
    local self = setmetatable({ port = proc.free_port(), dir = tmpdir() }, Server)
    local conf = table.concat({
        "global:",
        "  scrape_interval: " .. (opts.scrape_interval or "1s"),
        "  scrape_timeout: 1s",
        "  evaluation_interval: 1s",
        "scrape_configs:",
        "  - job_name: passport",
        "    metrics_path: " .. yaml(opts.metrics_path or "/metrics"),
        "    static_configs:",
        "      - targets: [" .. yaml(opts.target) .. "]",
        "",
    }, "\n")
    local f = assert(io.open(self.dir .. "/prometheus.yml", "w"))
    f:write(conf)
    f:close()
    self.conf = conf

    local out = sh("nohup " .. M.prometheus
        .. " --config.file=" .. q(self.dir .. "/prometheus.yml")
        .. " --storage.tsdb.path=" .. q(self.dir .. "/data")
        .. " --web.listen-address=127.0.0.1:" .. self.port
        .. " --log.level=warn"
        .. " > " .. q(self.dir .. "/prometheus.log") .. " 2>&1 < /dev/null & echo $!")
    self.pid = tonumber(out:match("(%d+)%s*$"))
    if not self.pid then
        local dir = self.dir
        self.dir = nil
        sh("rm -rf " .. q(dir))
        error("prometheus did not start: " .. out)
    end
    running[self.pid] = self

    local deadline = socket.gettime() + 20
    while socket.gettime() < deadline do
        local status = get(self.port, "/-/ready", 1)
        if status == 200 then
            return self
        end
        if not alive(self.pid) then
            break
        end
        socket.sleep(0.05)
    end
    local log = self:log()
    self:stop()
    error("prometheus did not become ready on port " .. self.port .. ":\n" .. log)
end

function M.promtool_check(text)
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    local out, ok = sh(M.promtool .. " check metrics < " .. q(path))
    os.remove(path)
    return ok and not out:match("%S"), out
end

-- Kill whatever is left when the Lua state closes (busted exits with
-- os.exit(code, true), which closes it).
M._guard = newproxy(true)
getmetatable(M._guard).__gc = function()
    for pid, server in pairs(running) do
        os.execute("kill -9 " .. pid .. " 2>/dev/null")
        if server.dir and server.dir:match("^/tmp/passport%-prometheus%.") then
            os.execute("rm -rf " .. q(server.dir))
        end
    end
end

return M
