-- Prometheus metrics for the gateway: counters, gauges and histograms kept
-- in one lua_shared_dict, so that every worker's counts add up exactly, and
-- rendered in the text exposition format 0.0.4.
--
--   metrics.configure { dict = "passport_metrics" }  -- init or init_worker
--   metrics.enabled()                 --> boolean
--
--   -- fast path: build keys once, cache them, one dict:incr per event
--   local K = metrics.key("passport_handshakes_total",
--                         { mode = "socketio", outcome = "accepted", reason = "none" })
--   metrics.add(K)                    -- +1 (or +n; gauges also -n)
--   local H = metrics.histogram_key("passport_store_request_duration_seconds", { op = "get" })
--   metrics.observe(H, seconds)
--   metrics.set_gauge(metrics.key("passport_subscriber_up", { worker = ngx.worker.id() }), 1)
--
--   -- convenience (builds the key on every call)
--   local c = metrics.counter("passport_store_errors_total")
--   c:inc({ kind = "timeout" })       c:inc(nil, 2) for a metric without labels
--   local g = metrics.gauge("passport_sockets")
--   g:add({ protocol = "websocket" }, -1)   g:set(labels, v)
--
--   metrics.render()   --> the exposition text | nil, "not configured"
--   metrics.serve()    -- content_by_lua: 200 text/plain 0.0.4, or 503
--
-- A dict key is the sample's own text: name{label="value",...} with the
-- labels in definition order and the values escaped, e.g.
--   passport_handshakes_total{mode="socketio",outcome="accepted",reason="none"}
-- A histogram stores per-bucket (non-cumulative) counts under
-- name_bucket{...,le="0.005"} and the sum under name_sum{...}; render()
-- makes the buckets cumulative and derives _count from them, so _count and
-- the +Inf bucket always agree.
--
-- Until configure() runs, every counting call returns at once (one upvalue
-- test): the hot path pays nothing when metrics are off.  Key builders work
-- before configure(), so callers may build their keys at load time.
local host = require "resty.passport.host"

local ngx = ngx -- luacheck: ignore 211 (nil outside nginx)
local timer_at = ngx and ngx.timer and ngx.timer.at

local concat = table.concat
local error = error
local floor = math.floor
local format = string.format
local gsub = string.gsub
local huge = math.huge
local ipairs = ipairs
local match = string.match
local next = next
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local sort = table.sort
local sub = string.sub
local tonumber = tonumber
local tostring = tostring
local type = type

local _M = { _VERSION = "0.1.0" }

local CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

local STORE_BUCKETS = { .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1 }

-- Every metric the gateway exposes, in render order.
local DEFINITIONS = {
    { name = "passport_handshakes_total", type = "counter",
      labels = { "mode", "outcome", "reason" },
      help = "Handshakes decided by the gateway, by mode (guard, terminate, engineio, socketio), "
          .. "outcome (accepted, refused, error) and reason (none when accepted)." },
    { name = "passport_store_request_duration_seconds", type = "histogram",
      labels = { "op" }, buckets = STORE_BUCKETS,
      help = "Time the session store took to answer a request, by operation." },
    { name = "passport_store_errors_total", type = "counter", labels = { "kind" },
      help = "Session store requests that failed, by kind "
          .. "(connect, timeout, io, protocol, reply, too_big, other)." },
    { name = "passport_cache_lookups_total", type = "counter", labels = { "result" },
      help = "Session cache lookups, by result (hit, miss)." },
    { name = "passport_cache_invalidations_total", type = "counter", labels = {},
      help = "Session cache entries invalidated." },
    { name = "passport_cache_coherent", type = "gauge", labels = { "worker" },
      help = "1 when the worker's session cache is kept coherent by invalidations, else 0." },
    { name = "passport_sockets", type = "gauge", labels = { "protocol" },
      help = "Sockets held now, by protocol (websocket, engineio, socketio)." },
    { name = "passport_emits_published_total", type = "counter", labels = {},
      help = "Emitter messages published." },
    { name = "passport_emits_received_total", type = "counter", labels = {},
      help = "Emitter messages that reached a worker's subscriber." },
    { name = "passport_emit_deliveries_total", type = "counter", labels = {},
      help = "Emitter messages handed to a socket." },
    { name = "passport_emit_drops_total", type = "counter", labels = { "reason" },
      help = "Emitter messages dropped before reaching a socket, by reason (queue_full, closed)." },
    { name = "passport_logout_closes_total", type = "counter", labels = {},
      help = "Sockets closed because their session ended." },
    { name = "passport_subscriber_reconnects_total", type = "counter", labels = {},
      help = "Times a worker's Redis subscriber reconnected." },
    { name = "passport_subscriber_up", type = "gauge", labels = { "worker" },
      help = "1 when the worker's Redis subscriber is connected and subscribed, else 0." },
    { name = "passport_redis_discoveries_total", type = "counter", labels = { "mode", "outcome" },
      help = "Redis topology discoveries (Sentinel master discovery, Cluster slot-map refresh), "
          .. "by mode (sentinel, cluster) and outcome (ok, error)." },
    { name = "passport_redis_redirects_total", type = "counter", labels = { "kind" },
      help = "Redis Cluster redirections followed, by kind (moved, ask)." },
    { name = "passport_metrics_errors_total", type = "counter", labels = { "worker" },
      help = "Metric updates lost because the metrics lua_shared_dict was full." },
}
_M.DEFINITIONS = DEFINITIONS

local ERRORS_METRIC = "passport_metrics_errors_total"

-- A number as Prometheus reads it: integers without exponent, others in
-- the shortest form that reads back the same.
local function number(v)
    if v ~= v then
        return "NaN"
    elseif v == huge then
        return "+Inf"
    elseif v == -huge then
        return "-Inf"
    elseif v == floor(v) and v > -1e15 and v < 1e15 then
        return format("%d", v)
    end
    local s = format("%.15g", v)
    if tonumber(s) ~= v then
        s = format("%.17g", v)
    end
    return s
end

local VALUE_ESCAPES = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }
local HELP_ESCAPES = { ["\\"] = "\\\\", ["\n"] = "\\n" }

local BY_NAME = {}   -- metric name -> definition
local SAMPLE_OF = {} -- name part of a dict key -> definition
for _, def in ipairs(DEFINITIONS) do
    BY_NAME[def.name] = def
    local known = {}
    for _, l in ipairs(def.labels) do known[l] = true end
    def.known = known
    def.help_text = gsub(def.help, "[\\\n]", HELP_ESCAPES)
    if def.type == "histogram" then
        local les = {}
        for i, b in ipairs(def.buckets) do les[i] = number(b) end
        les[#les + 1] = "+Inf"
        def.les = les
        SAMPLE_OF[def.name .. "_bucket"] = def
        SAMPLE_OF[def.name .. "_sum"] = def
    else
        SAMPLE_OF[def.name] = def
    end
end

local function definition(name, fname, want)
    local def = BY_NAME[name]
    if not def then
        error("bad argument #1 to '" .. fname .. "' (no metric named " .. tostring(name) .. ")", 3)
    end
    if want == "histogram" and def.type ~= "histogram" then
        error("bad argument #1 to '" .. fname .. "' (" .. name .. " is a " .. def.type
              .. ", not a histogram)", 3)
    elseif want ~= "histogram" and def.type == "histogram" then
        error("bad argument #1 to '" .. fname .. "' (" .. name
              .. " is a histogram: use histogram_key)", 3)
    elseif want == "counter" and def.type ~= "counter" then
        error("bad argument #1 to '" .. fname .. "' (" .. name .. " is a " .. def.type
              .. ", not a counter)", 3)
    elseif want == "gauge" and def.type ~= "gauge" then
        error("bad argument #1 to '" .. fname .. "' (" .. name .. " is a " .. def.type
              .. ", not a gauge)", 3)
    end
    return def
end

-- The escaped label pairs in definition order ("" without labels), or nil
-- and what is wrong with labels.
local function label_text(def, labels)
    local names = def.labels
    if labels == nil then
        if #names == 0 then return "" end
        return nil, def.name .. " needs labels " .. concat(names, ", ")
    elseif type(labels) ~= "table" then
        return nil, "table of label values expected, got " .. type(labels)
    end
    for k in pairs(labels) do
        if not def.known[k] then
            return nil, "unknown label " .. tostring(k) .. " for " .. def.name
                .. (#names > 0 and " (labels: " .. concat(names, ", ") .. ")" or " (no labels)")
        end
    end
    local parts = {}
    for i, l in ipairs(names) do
        local v = labels[l]
        local t = type(v)
        if v == nil then
            return nil, "missing label " .. l .. " for " .. def.name
                .. " (labels: " .. concat(names, ", ") .. ")"
        elseif t == "number" then
            v = number(v)
        elseif t ~= "string" then
            return nil, "label " .. l .. " of " .. def.name .. " needs a string or number, got " .. t
        end
        parts[i] = l .. '="' .. gsub(v, '[\\"\n]', VALUE_ESCAPES) .. '"'
    end
    return concat(parts, ",")
end

local function build_key(def, labels, fname, argn)
    local text, err = label_text(def, labels)
    if not text then
        error("bad argument #" .. argn .. " to '" .. fname .. "' (" .. err .. ")", 3)
    end
    return text == "" and def.name or def.name .. "{" .. text .. "}"
end

local function bucket_key(name, text, le)
    return name .. "_bucket{" .. (text == "" and "" or text .. ",") .. 'le="' .. le .. '"}'
end

local function braced(name, text)
    return text == "" and name or name .. "{" .. text .. "}"
end

-- The dict key of a counter's or gauge's sample.
function _M.key(name, labels)
    local k = build_key(definition(name, "key"), labels, "key", 2)
    return k -- not a tail call: build_key's error level counts this frame
end

-- A histogram's precomputed keys: [i] the i-th bucket, sum, and the bounds
-- (the last is +Inf).  Opaque to callers: pass it to observe().
function _M.histogram_key(name, labels)
    local def = definition(name, "histogram_key", "histogram")
    local text, err = label_text(def, labels)
    if not text then
        error("bad argument #2 to 'histogram_key' (" .. err .. ")", 2)
    end
    local h = { bounds = {}, sum = braced(name .. "_sum", text) }
    for i, le in ipairs(def.les) do
        h[i] = bucket_key(name, text, le)
        h.bounds[i] = def.buckets[i] or huge
    end
    h.n = #def.les
    return h
end

local dict           -- the shared dict once configured: the on/off switch
local dict_name
local lost = 0       -- updates this worker could not make (dict full)
local lost_key       -- this worker's passport_metrics_errors_total key
local logged = false

-- nil outside a worker.  In init_by_lua ngx.worker.id() says 0 (nginx has
-- not become a master yet), which every forked worker would inherit.
local function worker_id()
    if not (ngx and ngx.get_phase) or ngx.get_phase() == "init" then
        return nil
    end
    return ngx.worker.id()
end

-- An update failed: count it, where every worker's scrape can see it if
-- possible (an incr of an existing key needs no memory), and log once.
local function failed(key, err)
    lost = lost + 1
    if not logged then
        logged = true
        host.log("err", "passport: metrics: cannot update " .. key .. " in lua_shared_dict "
                 .. dict_name .. ": " .. tostring(err) .. " (make it bigger; further losses are "
                 .. "counted in " .. ERRORS_METRIC .. ", not logged)")
    end
    if not lost_key then
        local id = worker_id()
        lost_key = id and braced(ERRORS_METRIC, 'worker="' .. id .. '"')
    end
    -- configured in init_by_lua, the key may not exist yet: add it if room
    if lost_key and not dict:incr(lost_key, 1) then
        dict:safe_add(lost_key, lost)
    end
    return nil, err
end

-- First update of a key.  incr's own init would allocate by evicting the
-- least recently used keys when the dict is full, silently resetting other
-- counters; safe_add never evicts, so a full dict loses only this update.
local function create(key, n)
    local ok, err = dict:safe_add(key, 0)
    if not ok and err ~= "exists" then
        return failed(key, err)
    end
    local v
    v, err = dict:incr(key, n)
    if not v then
        return failed(key, err)
    end
    return v
end

-- n added to key in the dict: the new value, or nil, err.
local function incr(key, n)
    local v = dict:incr(key, n)
    if v then return v end
    return create(key, n)
end

-- Configured in a worker (init_worker_by_lua), additions wait in a table
-- of the worker's and reach the dict FLUSH_DELAY s later, in a timer:
-- the event pays a table update, not a shared-memory lock and an FFI call
-- (measured: 1.2 us per uncached handshake with increments at the event).
-- A scrape sees another worker's counts at most FLUSH_DELAY late (its own
-- are flushed first); configured in init_by_lua, each addition goes to
-- the dict at once.
local FLUSH_DELAY = 0.1
local buffered = false
local pending = {}       -- key -> what this worker added since its flush
local flush_queued = false

local function flush()
    flush_queued = false
    for k, n in next, pending do
        pending[k] = nil
        if n ~= 0 then incr(k, n) end
    end
end
_M.flush = flush

-- The timer's: at worker exit (premature) too, so nothing is lost.
local function flush_timer()
    flush()
end

-- Adds n (default 1; negative for a gauge going down) to a key from key().
-- Returns true (buffered) or the new value, nothing when not configured,
-- or nil, err.
local function add(key, n)
    if not dict then return end
    n = n or 1
    if not buffered then return incr(key, n) end
    pending[key] = (pending[key] or 0) + n
    if not flush_queued then
        flush_queued = true
        local ok, queued = pcall(timer_at, FLUSH_DELAY, flush_timer)
        if not (ok and queued) then flush() end
    end
    return true
end
_M.add = add

-- Records one observation in a histogram from histogram_key(): one incr
-- for its bucket, one for the sum.  NaN is ignored.
function _M.observe(h, v)
    if not dict then return end
    if v ~= v then return nil, "NaN" end
    local bounds = h.bounds
    local i = 1
    -- the last bound is +Inf: the scan always stops
    while v > bounds[i] do i = i + 1 end
    local ok, err = add(h[i], 1)
    if not ok then return nil, err end
    return add(h.sum, v)
end

-- Sets a gauge's key to v.  safe_set: it never evicts other samples.
function _M.set_gauge(key, v)
    if not dict then return end
    local ok, err = dict:safe_set(key, v)
    if not ok then
        return failed(key, err)
    end
    return true
end

local Counter = {}
Counter.__index = Counter

-- labels: the label values by name (nil for a metric without labels).
function Counter:inc(labels, n)
    if not dict then return end
    n = n or 1
    if type(n) ~= "number" or n < 0 then
        error("bad argument #2 to 'inc' (a counter goes up: number >= 0 expected, got "
              .. tostring(n) .. ")", 2)
    end
    return add(build_key(self.def, labels, "inc", 1), n)
end

function _M.counter(name)
    return setmetatable({ def = definition(name, "counter", "counter") }, Counter)
end

local Gauge = {}
Gauge.__index = Gauge

function Gauge:set(labels, v)
    if not dict then return end
    return _M.set_gauge(build_key(self.def, labels, "set", 1), v)
end

function Gauge:add(labels, n)
    if not dict then return end
    return add(build_key(self.def, labels, "add", 1), n)
end

function _M.gauge(name)
    return setmetatable({ def = definition(name, "gauge", "gauge") }, Gauge)
end

-- opts.dict: the name of a lua_shared_dict of nginx.conf.  From
-- init_by_lua or init_worker_by_lua.  It also puts the workers'
-- passport_metrics_errors_total in the dict now, while there is room, so
-- that losses can still be counted there once it is full.
function _M.configure(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'configure' (table expected, got " .. type(opts) .. ")", 2)
    end
    local name = opts.dict
    if type(name) ~= "string" then
        error("bad argument #1 to 'configure' (opts.dict: the name of a lua_shared_dict expected, got "
              .. type(name) .. ")", 2)
    end
    local shared = ngx and ngx.shared
    if not shared then
        error("bad argument #1 to 'configure' (no lua_shared_dict outside nginx)", 2)
    end
    local d = shared[name]
    if not d then
        error("bad argument #1 to 'configure' (no lua_shared_dict " .. name
              .. " in nginx.conf: add 'lua_shared_dict " .. name .. " 1m;' to the http block)", 2)
    end
    dict, dict_name = d, name
    buffered = ngx.get_phase() ~= "init"
    local id = worker_id()
    if id then
        lost_key = braced(ERRORS_METRIC, 'worker="' .. id .. '"')
        d:safe_add(lost_key, 0)
    else
        lost_key = nil -- known in the worker, at the first loss
        for w = 0, ngx.worker.count() - 1 do
            d:safe_add(braced(ERRORS_METRIC, 'worker="' .. w .. '"'), 0)
        end
    end
    return true
end

-- The configured lua_shared_dict (passport.status keeps its per-worker
-- reports there too), or nil.
function _M.dict()
    return dict
end

function _M.enabled()
    return dict ~= nil
end

-- Appends a histogram's samples: per label set, cumulative buckets in
-- bound order, the sum and the count (the +Inf bucket).
local function render_histogram(out, n, def, keys, values)
    local groups, seen = {}, {}
    for _, k in ipairs(keys) do
        local text = match(k, '^[^{]*_bucket{(.*)le="[^"]*"}$')
        if text then
            if sub(text, -1) == "," then text = sub(text, 1, -2) end
        else
            text = match(k, "^[^{]*{(.*)}$") or ""
        end
        if not seen[text] then
            seen[text] = true
            groups[#groups + 1] = text
        end
    end
    sort(groups)
    local name = def.name
    for _, text in ipairs(groups) do
        local total = 0
        for _, le in ipairs(def.les) do
            local k = bucket_key(name, text, le)
            total = total + (values[k] or 0)
            n = n + 1
            out[n] = k .. " " .. number(total)
        end
        local sum = braced(name .. "_sum", text)
        out[n + 1] = sum .. " " .. number(values[sum] or 0)
        out[n + 2] = braced(name .. "_count", text) .. " " .. number(total)
        n = n + 2
    end
    return n
end

-- The exposition text of every defined metric, samples sorted; nil, err
-- when not configured.  Reads every key of the dict once.
function _M.render()
    if not dict then
        return nil, "not configured"
    end
    flush()
    local keys = dict:get_keys(0)
    sort(keys)
    local values, samples = {}, {}
    for _, k in ipairs(keys) do
        local def = SAMPLE_OF[match(k, "^[^{]*")]
        if def then
            local v = dict:get(k)
            if type(v) == "number" then
                values[k] = v
                local list = samples[def]
                if not list then
                    list = {}
                    samples[def] = list
                end
                list[#list + 1] = k
            end
        end
    end
    -- Losses this worker could not even count in the dict.
    local id = worker_id()
    local own = id and braced(ERRORS_METRIC, 'worker="' .. id .. '"')
    if own and lost > 0 and not values[own] then
        local def = BY_NAME[ERRORS_METRIC]
        values[own] = lost
        local list = samples[def] or {}
        samples[def] = list
        list[#list + 1] = own
        sort(list)
    end

    local out, n = {}, 0
    for _, def in ipairs(DEFINITIONS) do
        out[n + 1] = "# HELP " .. def.name .. " " .. def.help_text
        out[n + 2] = "# TYPE " .. def.name .. " " .. def.type
        n = n + 2
        local list = samples[def]
        if list then
            if def.type == "histogram" then
                n = render_histogram(out, n, def, list, values)
            else
                for _, k in ipairs(list) do
                    n = n + 1
                    out[n] = k .. " " .. number(values[k])
                end
            end
        end
    end
    out[n + 1] = ""
    return concat(out, "\n")
end

-- content_by_lua: the exposition text, or 503 when not configured.
function _M.serve()
    local body, err = _M.render()
    if not body then
        ngx.status = 503
        ngx.header["Content-Type"] = "text/plain; charset=utf-8"
        ngx.say("passport metrics: ", err,
                " (call metrics.configure{ dict = ... } in init_worker_by_lua)")
        return
    end
    ngx.header["Content-Type"] = CONTENT_TYPE
    ngx.print(body)
end

return _M
