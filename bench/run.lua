-- `make bench` (bench-core): the core benchmark of issue 2, in one run.
--   (a) floor: C, HMAC-SHA256 verify with a precomputed key state
--   (b) ours:  LuaJIT -> FFI, cookie.express_sid on a 5-cookie header
--   (c) node:  cookie.parse + cookie-signature unsign (express-session 1.19)
-- and session records: session.decode vs cjson.decode.
--
-- usage: luajit bench/run.lua FLOOR_BINARY NODE_COMMAND
-- (LUA_PATH/LUA_CPATH must find lua/ and build/, as mk/bench.mk sets them)
local cookie = require "resty.passport.cookie"
local session = require "resty.passport.session"
local cjson = require "cjson"
local h = require "bench.harness"

local floor_bin, node = arg[1], arg[2] or "node"
assert(floor_bin, "usage: luajit bench/run.lua FLOOR_BINARY [NODE]")

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

-- Runs a peer program; returns { key = { ns = ..., share = ... } } from its
-- "key ns cpu_share" lines.
local function run_peer(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("*a")
    local ok = p:close()
    local res = {}
    for k, v, sh in out:gmatch("(%S+) ([%d.]+) ([%d.]+)\n") do
        res[k] = { ns = tonumber(v), share = tonumber(sh) }
    end
    return (ok and next(res)) and res or nil, out
end

local function cpu_model()
    local f = io.open("/proc/cpuinfo")
    local m = f and f:read("*a"):match("model name%s*:%s*([^\n]+)")
    if f then f:close() end
    return m or "unknown CPU"
end

-- A result got less than this share of a CPU: another process competed
-- with it, and its time is inflated.
local BUSY = 0.9
local busy = {}

local function fmt_ns(r, what)
    if not r then return "      n/a   " end
    local mark = " "
    if r.share < BUSY then
        mark = "*"
        busy[#busy + 1] = ("%s %.0f%%"):format(what, r.share * 100)
    end
    return ("%9.1f ns%s"):format(r.ns, mark)
end

local function verdict(ok)
    return ok and "met" or "MISSED"
end

-- C first, node second, LuaJIT last: one thing runs at a time.
local args = { floor_bin, HEADER, NAME, SECRET }
for _, r in ipairs(RECORDS) do args[#args + 1] = r.path end
for i, a in ipairs(args) do args[i] = sh_quote(a) end
local c, c_out = run_peer(table.concat(args, " "))
if not c then
    io.stderr:write("bench: the C floor failed:\n", c_out)
    os.exit(1)
end

-- The peer runs on the repository's node_modules (`npm ci`), nothing else.
local node_ok = io.open("node_modules/cookie-signature/package.json")
local nd, nd_out
if node_ok then
    node_ok:close()
    nd, nd_out = run_peer(table.concat({ sh_quote(node), "bench/node.js",
        sh_quote(HEADER), NAME, sh_quote(SECRET), SID }, " "))
else
    nd_out = "node_modules/ is missing: run `npm ci` first"
end

local ring = cookie.keyring({ SECRET })
local b_ns, b_jit = h.measure(cookie.express_sid, HEADER, NAME, ring,
                              function(sid) return sid == SID end)
local b = { ns = b_ns, share = b_jit.share }

local sess = {}
for i, r in ipairs(RECORDS) do
    local expect_user = cjson.decode(r.json).passport.user
    local ours_ns, ours_jit = h.measure(session.decode, r.json, NOW_MS, nil,
        function(s)
            local u = s and s.user
            return u ~= nil and (u == expect_user or
                                 (type(u) == "table" and u.id == expect_user.id))
        end)
    -- cjson.decode takes exactly one argument; the JIT inlines the wrapper.
    local decode = cjson.decode
    local full_ns, full_st = h.measure(function(j) return decode(j) end,
        r.json, nil, nil,
        function(t) return type(t) == "table" and t.passport ~= nil end)
    sess[i] = { ours = { ns = ours_ns, share = ours_jit.share },
                full = { ns = full_ns, share = full_st.share }, jit = ours_jit }
end

-- The report.
local a, cn = c.unsign, nd and nd.express_sid
local p = print
p(("lua-resty-passport core benchmark: %s, %s, %s, node %s (%s)"):format(
    cpu_model(), jit.version, os.date("!%Y-%m-%d"),
    (io.popen(sh_quote(node) .. " -v 2>/dev/null"):read("*l") or "?"),
    nd_out and nd_out:match("peer ([^\n]+)") or "peer not run"))
p(("ns/op, median of %d runs of ~%d ms each, after warm-up"):format(
    h.RUNS, h.RUN_NS / 1e6))
p()
p(("Cookie header -> verified session id (%d-byte header, 5 cookies, %s 4th, URL-encoded)")
    :format(#HEADER, NAME))
p(("  (a) floor  C rp_unsign: HMAC-SHA256 verify, precomputed key   %s"):format(fmt_ns(a, "(a)")))
p(("  (b) ours   LuaJIT: cookie.express_sid (find+decode+unsign)    %s  (b)/(a) = %5.2f   target <= 2   %s")
    :format(fmt_ns(b, "(b)"), b.ns / a.ns, verdict(b.ns / a.ns <= 2)))
if cn then
    p(("  (c) node   cookie.parse + cookie-signature unsign             %s  (c)/(b) = %5.1f   target >= 10  %s")
        :format(fmt_ns(cn, "(c)"), cn.ns / b.ns, verdict(cn.ns / b.ns >= 10)))
else
    p("  (c) node   NOT MEASURED: " .. (nd_out or ""):gsub("\n+$", ""))
end
p(("  (b) from C without FFI: rp_express_sid %.1f ns = rp_cookie_get %.1f + rp_unsign; rp_hmac_b64 alone %.1f ns")
    :format(c.express_sid.ns, c.cookie_get.ns, c.hmac_b64.ns))
p("  JIT, (b) loop: " .. h.jit_note(b_jit))
p()
p("Session record -> cookie.expires + passport.user")
p("                                  ours: session.decode   cjson.decode   cjson/ours   C rp_session_parse")
for i, r in ipairs(RECORDS) do
    local s = sess[i]
    p(("  %5d B (%-18s)       %s  %s     %5.2f      %s")
        :format(#r.json, r.label, fmt_ns(s.ours, "ours " .. #r.json),
                fmt_ns(s.full, "cjson " .. #r.json), s.full.ns / s.ours.ns,
                fmt_ns(c["session_parse:" .. #r.json], "C " .. #r.json)))
end
for i, r in ipairs(RECORDS) do
    p(("  JIT, decode loop %d B: %s"):format(#r.json, h.jit_note(sess[i].jit)))
end
if #busy > 0 then
    p()
    p("* the machine was busy: these got less than " .. BUSY * 100
      .. "% of a CPU while timed (" .. table.concat(busy, ", ")
      .. "); their times are inflated, run again on a quiet machine")
end

if not nd then
    os.exit(1)
end
