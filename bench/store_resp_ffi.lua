-- Benchmark-only: the store's GET with hiredis's redisReader (through FFI)
-- as the RESP parser instead of the Lua parser the store reads with
-- (lua/resty/passport/redis/resp.lua, fed by receive("*l") and
-- receive(n + 2)).  bench/store_bench.lua serves both from the same nginx
-- so that the choice in the store is a measured one.
--
-- The redisReply layout below is hiredis 0.14's; it is read here, in a
-- benchmark, and nowhere in the shipped code.
local ffi = require "ffi"

local ffi_string = ffi.string
local tcp = ngx.socket.tcp

ffi.cdef [[
typedef struct redisReader redisReader;
typedef struct rp_bench_reply {
    int type; long long integer; size_t len; char *str;
    size_t elements; void **element;
} rp_bench_reply;
redisReader *redisReaderCreate(void);
void redisReaderFree(redisReader *r);
int redisReaderFeed(redisReader *r, const char *buf, size_t len);
int redisReaderGetReply(redisReader *r, void **reply);
void freeReplyObject(void *reply);
]]

local H = ffi.load("hiredis")
local reply_out = ffi.new("void *[1]")
local REPLY_STRING, REPLY_NIL, REPLY_ERROR = 1, 4, 6

local _M = {}

function _M.get(port, prefix, sid)
    local sock = tcp()
    sock:settimeouts(1000, 1000, 1000)
    local ok, err = sock:connect("127.0.0.1", port,
                                 { pool = "bench-ffi", pool_size = 100 })
    if not ok then
        return nil, err
    end
    local key = prefix .. sid
    ok, err = sock:send { "*2\r\n$3\r\nGET\r\n$", #key, "\r\n", key, "\r\n" }
    if not ok then
        sock:close()
        return nil, err
    end
    local reader = H.redisReaderCreate()
    while true do
        local data
        data, err = sock:receiveany(65536)
        if not data then
            H.redisReaderFree(reader)
            sock:close()
            return nil, err
        end
        H.redisReaderFeed(reader, data, #data)
        if H.redisReaderGetReply(reader, reply_out) ~= 0 then
            H.redisReaderFree(reader)
            sock:close()
            return nil, "protocol error"
        end
        local r = reply_out[0]
        if r ~= nil then
            H.redisReaderFree(reader)
            local reply = ffi.cast("rp_bench_reply *", r)
            local json
            if reply.type == REPLY_STRING then
                json = ffi_string(reply.str, reply.len)
            elseif reply.type == REPLY_ERROR then
                err = ffi_string(reply.str, reply.len)
            elseif reply.type ~= REPLY_NIL then
                err = "unexpected reply"
            end
            H.freeReplyObject(r)
            sock:setkeepalive(60000)
            return json, err
        end
    end
end

return _M
