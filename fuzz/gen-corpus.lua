-- Writes the seed corpora under fuzz/corpus/<target>/ (committed; run again
-- only to change them):
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' luajit fuzz/gen-corpus.lua
-- Signed seeds use the fixed key ring of fuzz/fuzz.h, so they verify.
local cookie = require "resty.passport.cookie"

local KEYS = { "keyboard cat", "retired secret \195\169" } -- as fuzz.h
local SID = "pWq3kD0c5yZ8x_-H2m9TnRvLbE4sFgA1"

local function enc(s) -- encodeURIComponent, for the ASCII we use
    return (s:gsub("[^%w%-_.!~*'()]", function(c)
        return ("%%%02X"):format(c:byte())
    end))
end

local function write(target, name, bytes)
    os.execute("mkdir -p fuzz/corpus/" .. target)
    local f = assert(io.open("fuzz/corpus/" .. target .. "/" .. name, "wb"))
    f:write(bytes)
    f:close()
end

-- fuzz.h's named layout: length byte, name, header.
local function named(name, header)
    return string.char(#name) .. name .. header
end

local signed0 = cookie.sign(SID, KEYS[1])
local signed1 = cookie.sign(SID, KEYS[2])
local REAL = "_ga=GA1.1.1358472014.1763880000; _gid=GA1.1.905811462.1763880000; "
    .. "theme=dark; connect.sid=" .. enc(signed0) .. "; XSRF-TOKEN=abc%2Bdef%3D"

local headers = {
    real = REAL,
    raw_colon = "connect.sid=" .. signed0,
    rotated = "connect.sid=" .. enc(signed1),
    dup_valid_first = "connect.sid=" .. enc(signed0) .. "; connect.sid=s%3Abad.sig",
    dup_invalid_first = "connect.sid=s%3Abad.sig; connect.sid=" .. enc(signed0),
    quoted = 'connect.sid="' .. enc(signed0) .. '"',
    lone_quote = 'connect.sid="',
    double_encoded = "connect.sid=" .. enc(enc(signed0)),
    bad_percent = "connect.sid=s%3A" .. SID .. "%zz",
    trailing_percent = "connect.sid=abc%",
    utf8_escape = "connect.sid=%C3%A9t%C3%A9%F0%9F%8D%AA",
    surrogate = "connect.sid=%ED%A0%80",
    overlong = "connect.sid=%C0%AF",
    latin1 = "connect.sid=caf\233; x=\255",
    no_spaces = "a=1;connect.sid=" .. enc(signed0) .. ";b=2",
    tabs = "\tconnect.sid\t=\t" .. enc(signed0) .. "\t;",
    no_equals = "foo; bar; connect.sid=" .. enc(signed0),
    empty_value = "connect.sid=; other=1",
    only_name = "connect.sid",
    plus = "connect.sid=a+b%2Bc",
    semis = ";;;=;;",
    eq_in_value = "connect.sid=a=b=c",
    nul = "connect.sid=a\0b; c=d",
    joined_lines = "a=1; b=2; connect.sid=" .. enc(signed0) .. "; c=3",
    space_name = "connect .sid=x; connect.sid=y",
    case = "Connect.sid=x; CONNECT.SID=y",
}

-- cookie_get and the express path
for k, h in pairs(headers) do
    write("cookie_get", k, named("connect.sid", h))
end
write("cookie_get", "proto", named("__proto__", "__proto__=x; a=b"))
write("cookie_get", "empty_name", named("", "=x; a=b"))
write("cookie_get", "theme", named("theme", REAL))
write("cookie_get", "xsrf", named("XSRF-TOKEN", REAL))

-- unsign: the input is a signed value, a header and a sid all at once
write("unsign", "value_key0", signed0:sub(3))
write("unsign", "value_key1", signed1:sub(3))
write("unsign", "value_tampered", signed0:sub(3):gsub(".$", "B"))
write("unsign", "value_truncated", signed0:sub(3, -2))
write("unsign", "value_padded", signed0:sub(3) .. "=")
write("unsign", "value_no_dot", SID)
write("unsign", "value_dots", cookie.sign("a.b.c", KEYS[1]):sub(3))
write("unsign", "value_empty_sid", cookie.sign("", KEYS[1]):sub(3))
write("unsign", "value_urlsafe", (signed0:sub(3):gsub("[+/]", { ["+"] = "-", ["/"] = "_" })))
write("unsign", "value_hex", SID .. "." .. ("0f"):rep(32))
write("unsign", "value_unicode_sid", cookie.sign("caf\195\169", KEYS[1]):sub(3))
for k, h in pairs(headers) do
    write("unsign", "hdr_" .. k, h)
end

-- cookies_get and keygrip_session (cookie-session: base64 JSON + .sig)
local function b64(s)
    local alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return ((s:gsub(".", function(x)
        local r, b = "", x:byte()
        for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
        return r
    end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
        if #x < 6 then return "" end
        local c = 0
        for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
        return alpha:sub(c + 1, c + 1)
    end) .. ({ "", "==", "=" })[#s % 3 + 1])
end
local function cs(json, key)
    local v = b64(json)
    return v, cookie.keygrip_sign("session=" .. v, { key })
end
local v0, s0 = cs('{"passport":{"user":"42"}}', KEYS[1])
local v1, s1 = cs('{"passport":{"user":{"id":7,"name":"Zo\195\171"}},"views":3}', KEYS[2])
local ks = {
    real = "theme=dark; session=" .. v0 .. "; session.sig=" .. s0,
    rotated = "session=" .. v1 .. "; session.sig=" .. s1,
    sig_first = "session.sig=" .. s0 .. "; session=" .. v0,
    no_sig = "session=" .. v0,
    bad_sig = "session=" .. v0 .. "; session.sig=" .. s1,
    short_sig = "session=" .. v0 .. "; session.sig=" .. s0:sub(2),
    quoted = 'session="' .. v0 .. '"; session.sig=' .. s0,
    empty = "session=; session.sig=" .. s0,
    spaces = "   session=" .. v0 .. ";   session.sig=" .. s0,
    no_space = "a=b;session=" .. v0 .. ";session.sig=" .. s0,
    prefix_name = "mysession=x; session=" .. v0 .. "; session.sig=" .. s0,
    garbage_value = "session=!!!***; session.sig=" .. s0,
    latin1 = "session=\233\233; session.sig=" .. s0,
}
for k, h in pairs(ks) do
    write("keygrip_session", k, h)
    write("cookies_get", k, named("session", h))
end
write("cookies_get", "sig", named("session.sig", ks.real))
write("cookies_get", "lone_quote", named("session", 'session="'))
write("cookies_get", "quote_only_start", named("session", 'session="abc'))
write("cookies_get", "empty_name", named("", "=x"))

-- base64_decode
local b64s = {
    std = b64("hello, world"), url = "_-_-AAAA", padded = "QQ==",
    pad_middle = "QQ==QUFB", whitespace = "aGVs bG8=\n", garbage = "!!!*()",
    lone = "Q", two = "QU", three = "QUE", empty = "", json = v1,
    mixed = "ab+/cd-_", high = "\200\255QUFB",
}
for k, s in pairs(b64s) do write("base64_decode", k, s) end

-- session_parse: connect-redis records and broken ones
local cookie_part = '"cookie":{"originalMaxAge":86400000,"expires":"2026-11-24T09:12:44.318Z",'
    .. '"secure":true,"httpOnly":true,"path":"/","sameSite":"lax"}'
local sess = {
    real = io.open("bench/session-300.json"):read("*a"),
    user_number_zero = '{' .. cookie_part .. ',"passport":{"user":0}}',
    user_object = '{' .. cookie_part .. ',"passport":{"user":{"id":1,"roles":["a"]}}}',
    user_escaped = '{' .. cookie_part .. ',"passport":{"user":"a\\"b\\u00e9"}}',
    user_empty = '{' .. cookie_part .. ',"passport":{"user":""}}',
    user_null = '{"passport":{"user":null}}',
    user_false = '{"passport":{"user":false}}',
    user_true = '{"passport":{"user":true}}',
    user_array = '{"passport":{"user":[1,2]}}',
    passport_empty = '{' .. cookie_part .. ',"passport":{}}',
    passport_array = '{"passport":[{"user":1}]}',
    passport_zero = '{"passport":0}',
    dup_passport = '{"passport":{"user":"a"},"passport":{}}',
    dup_user = '{"passport":{"user":"a","user":"b"}}',
    escaped_keys = '{"pass\\u0070ort":{"\\u0075ser":"x"},"cookie":{"expires":"2026-01-01T00:00:00\\u002e000Z"}}',
    expires_null = '{"cookie":{"originalMaxAge":null,"expires":null},"passport":{"user":"x"}}',
    expires_invalid = '{"cookie":{"expires":"tomorrow"}}',
    expires_number = '{"cookie":{"expires":1763888764318}}',
    expires_offset = '{"cookie":{"expires":"2026-11-24T09:12:44+02:00"}}',
    numbers = '{"a":-0,"b":1e999,"c":-1.5E-3,"d":0.0,"passport":{"user":-0}}',
    unicode = '{"name":"Zo\195\171 \240\159\141\170","passport":{"user":"\195\169"}}',
    deep = '{"a":' .. ("["):rep(80) .. ("]"):rep(80) .. '}',
    deep_ok = '{"a":' .. ("["):rep(20) .. ("]"):rep(20) .. '}',
    truncated = ('{' .. cookie_part .. ',"passport":{"user":"abc'),
    truncated_escape = '{"passport":{"user":"\\u00',
    top_array = '[{"passport":{"user":1}}]',
    top_string = '"hello"',
    top_null = 'null',
    empty = '',
    ws_only = ' \n\t ',
    trailing_garbage = '{"passport":{"user":1}} x',
    trailing_comma = '{"passport":{"user":1},}',
    leading_zero = '{"a":01}',
    control_char = '{"a":"\1"}',
    bad_escape = '{"a":"\\x"}',
    single_quotes = "{'a':1}",
    bom = '\239\187\191{}',
    whitespace = ' {\r\n "passport" : { "user" : "x" } \n} ',
    lone_surrogate = '{"a":"\\ud800"}',
    nan = '{"a":NaN}',
}
for k, s in pairs(sess) do write("session_parse", k, s) end

-- parse_date
local dates = {
    iso = "2026-11-24T09:12:44.318Z", date_only = "2026-11-24", month = "2026-11",
    year = "2026", plus_year = "+275760-09-13T00:00:00.000Z",
    minus_year = "-271821-04-20T00:00:00.000Z", too_far = "+275760-09-13T00:00:00.001Z",
    minus_zero = "-000000-01-01T00:00:00Z", offset = "2026-11-24T09:12+05:30",
    neg_offset = "2026-11-24T09:12:44-08:00", h24 = "2026-11-24T24:00:00Z",
    h24_bad = "2026-11-24T24:00:01Z", leap = "2024-02-29", not_leap = "2023-02-29",
    century = "1900-02-29", y2000 = "2000-02-29", frac_long = "2026-11-24T09:12:44.123456789Z",
    frac_one = "2026-11-24T09:12:44.1Z", frac_none = "2026-11-24T09:12:44.Z",
    lower_z = "2026-11-24t09:12:44z", space = "2026-11-24 09:12:44Z",
    trailing = "2026-11-24T09:12:44.318Zx", no_zone = "2026-11-24T09:12:44",
    bad_month = "2026-13-01", day_zero = "2026-01-00", short = "202", empty = "",
    epoch = "1970-01-01T00:00:00.000Z", pre_epoch = "1969-12-31T23:59:59.999Z",
    rfc1123 = "Tue, 24 Nov 2026 09:12:44 GMT",
    to_string = "Tue Nov 24 2026 09:12:44 GMT+0000 (Coordinated Universal Time)",
    to_string_offset = "Tue Nov 24 2026 10:12:44 GMT+0100 (Central European Standard Time)",
    slashes_ymd = "2026/11/24", slashes_mdy = "11/24/2026 09:12", utc_word = "24 Nov 2026 UTC",
    offset_colon = "Nov 24 2026 09:12 +05:30", unclosed_comment = "Nov 24 2026 (oops",
    feb30 = "2026-02-30T00:00:00.000Z", lower_t = "2026-11-24t09:12:44.318z",
    space_t = "2026-11-24 09:12:44.318Z", big_number = "Nov 24 999999999",
}
for k, s in pairs(dates) do write("parse_date", k, s) end
-- utf8_scan: one seed per kind of maximal subpart (Unicode 3.9), and text
-- around them long enough for the 8-byte ASCII steps
local utf8s = {
    ascii = "plain ASCII text, long enough for several 8-byte steps",
    valid = "caf\195\169 \226\130\172 \240\159\141\170 \244\143\191\191 \238\128\128",
    stray = "a\128b\191c",
    never_lead = "\192\175 \193\191 \245\128\128\128 \255",
    surrogate = "x\237\160\128y",
    overlong = "\224\128\175 \240\128\128\175",
    past_max = "\244\144\128\128",
    cut_by_ascii = "\225\128a \240\159\141b",
    cut_by_end = "ok\240\159\141",
    cut_by_lead = "\226\130\226\130\172",
    late_error = ("abcdefgh"):rep(8) .. "\255" .. ("abcdefgh"):rep(2),
    kosme = "\206\186\225\189\185\207\131\206\188\206\181",
}
for k, s in pairs(utf8s) do write("utf8_scan", k, s) end
-- key_slot: Redis Cluster keys, with every shape of hash tag keyHashSlot
-- tells apart (first "{" to the first "}" after it, empty, unclosed)
local keys = {
    check = "123456789", session = "sess:" .. SID, tagged = "{user1000}.following",
    empty_tag = "foo{}{bar}", nested = "{{a}}", two_tags = "a{b}{c}", unclosed = "foo{bar",
    close_first = "}a{b}", only_open = "{", only_close = "}", empty_braces = "{}",
    binary_tag = "x{\0\255}y", empty = "",
}
for k, s in pairs(keys) do write("key_slot", k, s) end
print("seed corpora written under fuzz/corpus/")
