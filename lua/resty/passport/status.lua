-- passport.status(): the gateway's health as JSON, every worker's view.
-- A request reaches one worker, so each worker writes its view into the
-- metrics lua_shared_dict every second (and the answering worker reports
-- its own fresh); a view older than STALE seconds means a worker that is
-- stuck or gone.
--
--   init_worker_by_lua: passport.init_metrics{ dict = "passport_metrics" }
--   location = /status { content_by_lua_block { passport.status() } }
--
-- 200 when every worker reported lately and, where passport.init_worker
-- runs a subscriber, every subscriber is up; 503 otherwise (a health check
-- reads the status code, a person the body).
local cjson = require "cjson.safe"
local host = require "resty.passport.host"
local metrics = require "resty.passport.metrics"
local registry = require "resty.passport.registry"
local bus = require "resty.passport.bus"

local pcall = pcall
local tostring = tostring

local ngx = ngx -- luacheck: ignore 211 (nil outside nginx)

local _M = { _VERSION = "0.1.0" }

local EVERY = 1 -- s between a worker's reports
local STALE = 3 -- s after which a report is a worker not answering

local function key_of(id)
    return "passport_status:" .. id
end

-- This worker's view.
local function view()
    local v = bus.state() or { subscriber = "off" }
    v.worker = ngx.worker.id()
    v.pid = ngx.worker.pid()
    v.sockets = registry.count()
    v.at = ngx.now()
    return v
end
_M.view = view

local function report(premature)
    if premature then return end
    local dict = metrics.dict()
    if not dict then return end
    local ok, json = pcall(cjson.encode, view())
    if ok and json then dict:safe_set(key_of(ngx.worker.id()), json, STALE * 10) end
end

-- init_worker (from passport.init_metrics): reports every second.
function _M.start()
    local ok, err = ngx.timer.every(EVERY, report)
    if not ok then
        host.log("err", "passport: cannot start the status reports: " .. tostring(err))
        return
    end
    ngx.timer.at(0, report)
end

-- { ok = bool, workers = { view... } }: a missing or stale report is
-- { worker = id, stale = true }.
function _M.collect()
    local dict = metrics.dict()
    local me = ngx.worker.id()
    local now = ngx.now()
    local out, ok = {}, true
    for id = 0, ngx.worker.count() - 1 do
        local v
        if id == me then
            v = view()
        else
            local json = dict and dict:get(key_of(id))
            v = json and cjson.decode(json)
            if not v or now - (v.at or 0) > STALE then
                v = { worker = id, stale = true }
            end
        end
        if v.stale or v.subscriber == "down" then ok = false end
        out[#out + 1] = v
    end
    return { ok = ok, workers = out }
end

-- content_by_lua: the JSON, 200 when healthy, else 503.
function _M.serve()
    local st = _M.collect()
    ngx.status = st.ok and 200 or 503
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(cjson.encode(st))
end

return _M
