-- `make bench` (bench-core): the core benchmark of issue 2, in one run.
--   (a) floor: C, HMAC-SHA256 verify with a precomputed key state
--   (b) ours:  LuaJIT -> FFI, cookie.express_sid on a 5-cookie header
--   (c) node:  cookie.parse + cookie-signature unsign (express-session 1.19)
-- and session records: session.decode vs cjson.decode.
--
-- usage: luajit bench/run.lua LIBFLOOR_SO [NODE]
-- (LUA_PATH/LUA_CPATH must find lua/ and build/, as mk/bench.mk sets them)
local ffi = require "ffi"
local cookie = require "resty.passport.cookie"
local session = require "resty.passport.session"
local cjson = require "cjson"
local h = require "bench.harness"

local floor_lib, node = arg[1], arg[2] or "node"
assert(floor_lib, "usage: luajit bench/run.lua LIBFLOOR_SO [NODE]")

ffi.cdef [[
int rp_bench_setup(const char *hdr, size_t hdr_len, const char *name,
                   size_t name_len, const char *secret, size_t secret_len);
void rp_bench_json(const char *json, size_t len);
int rp_bench_run(int which, long n);
]]
local F = ffi.load(floor_lib)
local UNSIGN, HMAC, COOKIE_GET, EXPRESS_SID, SESSION = 1, 2, 3, 4, 5

local NAME = "connect.sid"
local SECRET = "5e6f1c2a-keyboard-cat-9b7d-rotated-2026"
local SID = "pWq3kD0c5yZ8x_-H2m9TnRvLbE4sFgA1" -- uid-safe(24), as express-session
local NOW_MS = 1763888764318 -- before the records' cookie.expires

-- What Set-Cookie carries: encodeURIComponent("s:" .. sid .. "." .. sig).
local function encode_uri_component(s)
    return (s:gsub("[^%w%-_.!~*'()]", function(ch)
        return ("%%%02X"):format(ch:byte())
    end))
end

-- A realistic header: analytics, a preference, the session, a CSRF token.
local HEADER = table.concat({
    "_ga=GA1.1.1358472014.1763880000",
    "_gid=GA1.1.905811462.1763880000",
    "theme=dark",
    NAME .. "=" .. encode_uri_component(cookie.sign(SID, SECRET)),
    "XSRF-TOKEN=" .. encode_uri_component("c2VjcmV0LXRva2VuLWZvci1jc3Jm+/9kq="),
}, "; ")

local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

local RECORDS = {
    { path = "bench/session-300.json", label = "user: a string id" },
    { path = "bench/session-8k.json", label = "user: an object" },
}
for _, r in ipairs(RECORDS) do r.json = slurp(r.path) end

local function sh_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function cpu_model()
    local f = io.open("/proc/cpuinfo")
    local m = f and f:read("*a"):match("model name%s*:%s*([^\n]+)")
    if f then f:close() end
    return m or "unknown CPU"
end

-- (c): node in its own process, NODE_ROUNDS times spread over the run; its
-- median.  The peer runs on the repository's node_modules (`npm ci`) only.
local NODE_ROUNDS = 3
local node_ok = io.open("node_modules/cookie-signature/package.json")
if node_ok then node_ok:close() end
local node_runs, node_out = {}, "node_modules/ is missing: run `npm ci` first"
local function run_node()
    if not node_ok then return end
    local p = assert(io.popen(table.concat({ sh_quote(node), "bench/node.js",
        sh_quote(HEADER), NAME, sh_quote(SECRET), SID }, " ") .. " 2>&1"))
    node_out = p:read("*a")
    local ok = p:close()
    local ns, share = node_out:match("express_sid ([%d.]+) ([%d.]+)")
    if ok and ns then
        node_runs[#node_runs + 1] = { ns = tonumber(ns), share = tonumber(share) }
    end
end

-- Runners.
assert(F.rp_bench_setup(HEADER, #HEADER, NAME, #NAME, SECRET, #SECRET) == 0,
       "bench: the C side does not find the signed cookie")
local function c_loop(which)
    return h.c(function(n) return F.rp_bench_run(which, n) end,
               function(rc) return rc >= 0 end)
end
local ring = cookie.keyring({ SECRET })
local a = c_loop(UNSIGN)
local b = h.lua(cookie.express_sid, HEADER, NAME, ring,
                function(sid) return sid == SID end)
local c_hmac, c_get, c_sid = c_loop(HMAC), c_loop(COOKIE_GET), c_loop(EXPRESS_SID)

run_node()
h.interleave({ a, b, c_hmac, c_get, c_sid })
run_node()

local decode = cjson.decode
for _, r in ipairs(RECORDS) do
    local expect = cjson.decode(r.json).passport.user
    r.ours = h.lua(session.decode, r.json, NOW_MS, nil, function(s)
        local u = s and s.user
        return u ~= nil and (u == expect or
                             (type(u) == "table" and u.id == expect.id))
    end)
    -- cjson.decode takes exactly one argument; the JIT inlines the wrapper.
    r.full = h.lua(function(j) return decode(j) end, r.json, nil, nil,
                   function(t) return type(t) == "table" and t.passport ~= nil end)
    r.c = h.c(function(n)
        F.rp_bench_json(r.json, #r.json)
        return F.rp_bench_run(SESSION, n)
    end, function(rc) return rc >= 0 end)
    h.interleave({ r.ours, r.full, r.c })
end
run_node()

local cn
if #node_runs > 0 then
    table.sort(node_runs, function(x, y) return x.ns < y.ns end)
    cn = node_runs[math.ceil(#node_runs / 2)]
    cn.lo, cn.hi = node_runs[1].ns, node_runs[#node_runs].ns
    for _, r in ipairs(node_runs) do cn.share = math.min(cn.share, r.share) end
end

-- The report.  A result that got less than BUSY of a CPU is starred.
local BUSY = 0.9
local busy = {}
local function fmt_ns(r, what)
    local mark = " "
    if r.share < BUSY then
        mark = "*"
        busy[#busy + 1] = ("%s %.0f%%"):format(what, r.share * 100)
    end
    return ("%9.1f ns%s"):format(r.ns, mark)
end
local function spread(r)
    return ("[%.0f-%.0f]"):format(r.lo, r.hi)
end
local function verdict(ok)
    return ok and "met" or "MISSED"
end

local p = print
p(("lua-resty-passport core benchmark: %s, %s, %s, node %s (%s)"):format(
    cpu_model(), jit.version, os.date("!%Y-%m-%d"),
    (io.popen(sh_quote(node) .. " -v 2>/dev/null"):read("*l") or "?"),
    node_out:match("peer ([^\n]+)") or "peer not run"))
p(("ns/op: median of %d runs of ~%d ms, C and LuaJIT runs interleaved in one process,")
    :format(h.RUNS, h.RUN_NS / 1e6))
p(("ratios: median of side-by-side run pairs; node: median of %d processes; [fastest-slowest run]")
    :format(NODE_ROUNDS))
p()
p(("Cookie header -> verified session id (%d-byte header, 5 cookies, %s 4th, URL-encoded)")
    :format(#HEADER, NAME))
local ba = h.ratio(b, a)
p(("  (a) floor  C rp_unsign: HMAC-SHA256 verify, precomputed key   %s %-13s")
    :format(fmt_ns(a, "(a)"), spread(a)))
p(("  (b) ours   LuaJIT: cookie.express_sid (find+decode+unsign)    %s %-13s (b)/(a) = %5.2f  target <= 2   %s")
    :format(fmt_ns(b, "(b)"), spread(b), ba, verdict(ba <= 2)))
if cn then
    p(("  (c) node   cookie.parse + cookie-signature unsign             %s %-13s (c)/(b) = %5.1f  target >= 10  %s")
        :format(fmt_ns(cn, "(c)"), spread(cn), cn.ns / b.ns, verdict(cn.ns / b.ns >= 10)))
else
    p("  (c) node   NOT MEASURED: " .. node_out:gsub("\n+$", ""))
end
p(("  (b) in C, no FFI: rp_express_sid %.1f ns = rp_cookie_get %.1f + rp_unsign; rp_hmac_b64 alone %.1f;")
    :format(c_sid.ns, c_get.ns, c_hmac.ns))
p(("      LuaJIT + FFI add (b)/rp_express_sid = %.2f"):format(h.ratio(b, c_sid)))
p("  JIT, (b) loop: " .. h.jit_note(b))
p()
p("Session record -> cookie.expires + passport.user")
p("                            ours: session.decode   cjson.decode   cjson/ours   C rp_session_parse")
for _, r in ipairs(RECORDS) do
    p(("  %5d B (%-17s)  %s  %s     %5.2f     %s")
        :format(#r.json, r.label, fmt_ns(r.ours, "ours " .. #r.json),
                fmt_ns(r.full, "cjson " .. #r.json), h.ratio(r.full, r.ours),
                fmt_ns(r.c, "C " .. #r.json)))
end
for _, r in ipairs(RECORDS) do
    p(("  JIT, decode loop %d B: %s"):format(#r.json, h.jit_note(r.ours)))
end
if #busy > 0 then
    p()
    p("* got less than " .. BUSY * 100 .. "% of a CPU while timed ("
      .. table.concat(busy, ", ") .. "): another process competed; run again")
end

if not cn then
    os.exit(1)
end
