-- The data path flows one way: a module may require only modules earlier
-- in FLOW (lua/resty/passport/README.md says what each one is for), and
-- every module under lua/ has its place in it.
local FLOW = {
    "resty.passport.ffi",
    "resty.passport.host",
    "resty.passport.metrics",
    "resty.passport.deadlines",
    "resty.passport.cookie",
    "resty.passport.session",
    "resty.passport.ws.frame",
    "resty.passport.socketio.parser",
    "resty.passport.engineio.payload",
    "resty.passport.redis.resp",
    "resty.passport.redis.conn",
    "resty.passport.redis.mux",
    "resty.passport.redis.nodes",
    "resty.passport.redis.sentinel",
    "resty.passport.redis.slot",
    "resty.passport.redis.cluster",
    "resty.passport.redis.pubsub",
    "resty.passport.redis.masters",
    "resty.passport.store.redis",
    "resty.passport.store.shdict",
    "resty.passport.authorize",
    "resty.passport.nginx",
    "resty.passport.registry",
    "resty.passport.ws.socket",
    "resty.passport.websocket",
    "resty.passport.attach",
    "resty.passport.engineio.sessions",
    "resty.passport.engineio.polling",
    "resty.passport.engineio.upgrade",
    "resty.passport.engineio",
    "resty.passport.socketio",
    "resty.passport.emitter",
    "resty.passport.logout",
    "resty.passport.bus",
    "resty.passport.status",
    "resty.passport",
}

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

local function modules_on_disk()
    local out = {}
    local p = assert(io.popen("cd lua && find resty -name '*.lua' | sort"))
    for path in p:lines() do
        out[#out + 1] = path:gsub("%.lua$", ""):gsub("/", ".")
    end
    p:close()
    return out
end

-- Every resty.passport.* module a file requires: require "x",
-- require("x"), and the facade's lazy "x".
local function requires_of(src)
    local out = {}
    for _, pat in ipairs { "require%s*%(?%s*[\"']([%w%._]+)[\"']", "lazy%s*%(?%s*[\"']([%w%._]+)[\"']" } do
        for name in src:gmatch(pat) do
            if name:find("^resty%.passport") then out[#out + 1] = name end
        end
    end
    return out
end

describe("layout", function()
    local rank = {}
    for i, m in ipairs(FLOW) do rank[m] = i end

    it("has every module of lua/ in the flow, and nothing else", function()
        local on_disk = modules_on_disk()
        for _, m in ipairs(on_disk) do
            assert(rank[m], m .. " is not in the flow (spec/unit/layout_spec.lua)")
        end
        assert.equal(#FLOW, #on_disk)
    end)

    it("has no module requiring one at or after it in the flow", function()
        local back = {}
        for _, m in ipairs(FLOW) do
            local src = read("lua/" .. m:gsub("%.", "/") .. ".lua")
            for _, dep in ipairs(requires_of(src)) do
                if dep ~= m and not (rank[dep] and rank[dep] < rank[m]) then
                    back[#back + 1] = m .. " requires " .. dep
                end
            end
        end
        assert.same({}, back)
    end)

    it("catches a back-reference (self-check)", function()
        local deps = requires_of('local x = require "resty.passport.bus"\n'
                                 .. 'local y = require("resty.passport.ws.socket")\n'
                                 .. 'local n = "resty.passport.not_a_require"')
        assert.same({ "resty.passport.bus", "resty.passport.ws.socket" }, deps)
        assert(rank["resty.passport.bus"] > rank["resty.passport.ws.socket"])
    end)
end)
