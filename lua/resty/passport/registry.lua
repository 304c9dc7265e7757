-- This worker's sockets, whatever their protocol: a dense list for
-- filters, and indexes by user key and by session id so that sockets_of()
-- and logout reach their sockets without a scan.  Plain data: a socket is
-- any table with user, _key (key_of its passport.user) and _sid; the
-- registry writes only socket._slot (and _key, _sid in update()).
--
-- A user key is the serialized passport.user with its type, so that the
-- user 1 and the user "1" stay apart as they do in passport: "n1", "s1".
-- For a table user, the value under user_key (default "id") stands for it.
--
-- Rooms (Socket.IO's): a socket's namespace (socket.nsp; "/" when it has
-- none, as a plain WebSocket) and a room name.  Every socket is in
-- "user:<its user>" and "session:<its session id>" without an entry of
-- its own: those two are answered from the user and session indexes.
-- Other rooms are joined: socket.rooms (a set, made on the first join)
-- and an index by namespace and name.
local metrics = require "resty.passport.metrics"

local error = error
local format = string.format
local match = string.match
local tonumber = tonumber
local getmetatable = getmetatable
local next = next
local sub = string.sub
local setmetatable = setmetatable
local type = type

local _M = { _VERSION = "0.1.0" }

local list = {}       -- i -> socket (dense; socket._slot = i)
local count = 0
local by_user = {}    -- key -> { [socket] = true }
local by_sid = {}     -- session id -> { [socket] = true }
local by_room = {}    -- namespace .. "\0" .. room -> { [socket] = true }
local by_id = {}      -- socket.id -> socket (socket.io's room of one socket)

local user_key = "id"

-- passport_sockets by the socket's wire name.
local K_SOCKETS = {
    websocket = metrics.key("passport_sockets", { protocol = "websocket" }),
    ["engine.io"] = metrics.key("passport_sockets", { protocol = "engineio" }),
    ["socket.io"] = metrics.key("passport_sockets", { protocol = "socketio" }),
}
local enabled = metrics.enabled

-- registry.configure{ user_key = "id" }: which field stands for a table
-- passport.user (passport.init_worker's option).
function _M.configure(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'configure' (table expected, got " .. type(opts) .. ")", 2)
    end
    if opts.user_key ~= nil then
        if type(opts.user_key) ~= "string" then
            error("bad option 'user_key' to 'configure' (string expected, got "
                  .. type(opts.user_key) .. ")", 2)
        end
        user_key = opts.user_key
    end
end

-- The key of a passport.user value, or nil when it has none.
local function key_of(v)
    local t = type(v)
    if t == "table" then
        v = v[user_key]
        t = type(v)
    end
    if t == "string" then
        return "s" .. v
    elseif t == "number" then
        -- %.17g round-trips every double, so equal numbers give equal keys
        if v == v then return format("n%.17g", v) end
    elseif t == "boolean" then
        return v and "btrue" or "bfalse"
    end
    return nil
end
_M.key_of = key_of

-- An index entry is the socket itself while a key has one socket (the
-- common case: it saves a table per socket), a set once it has more.
local SET = {}

local function index_add(index, k, socket)
    local v = index[k]
    if v == nil then
        index[k] = socket
    elseif getmetatable(v) == SET then
        v[socket] = true
    elseif v ~= socket then
        index[k] = setmetatable({ [v] = true, [socket] = true }, SET)
    end
end

local function index_del(index, k, socket)
    local v = index[k]
    if v == socket then
        index[k] = nil
    elseif v ~= nil and getmetatable(v) == SET then
        v[socket] = nil
        local one = next(v)
        if one ~= nil and next(v, one) == nil then index[k] = one end
    end
end

-- What a socket admitted with data (authorize's) is indexed under: the
-- user key and session id, only when data.user.logged_in vouches for
-- them.  A socket a permissive fail let in anonymously (deserialize_user
-- refused the user, a session without a login) is reached by neither:
-- emit{user}, sockets_of and logout are about a login it does not have.
function _M.index_of(data)
    local user = data.user
    if type(user) ~= "table" or user.logged_in ~= true then
        return nil, nil
    end
    return key_of(data.serialized_user), data.session_id
end

-- A socket's namespace: a plain WebSocket is in "/".
local function nsp_of(socket)
    return socket.nsp or "/"
end

local function room_key(socket, room)
    return nsp_of(socket) .. "\0" .. room
end

function _M.add(socket)
    if socket._slot then return end
    count = count + 1
    list[count] = socket
    socket._slot = count
    if enabled() then
        local wire = socket.wire
        local k = wire and K_SOCKETS[wire.name]
        if k then
            metrics.add(k, 1)
            socket._gauge = k -- removal takes back exactly what was added
        end
    end
    local id = socket.id
    if id then by_id[id] = socket end
    if socket._key then index_add(by_user, socket._key, socket) end
    if socket._sid then index_add(by_sid, socket._sid, socket) end
    local rooms = socket.rooms
    if rooms then
        for room in next, rooms do index_add(by_room, room_key(socket, room), socket) end
    end
end

function _M.remove(socket)
    local i = socket._slot
    if not i then return end
    local rooms = socket.rooms
    if rooms then
        for room in next, rooms do index_del(by_room, room_key(socket, room), socket) end
    end
    local last = list[count]
    list[i] = last
    last._slot = i
    list[count] = nil
    count = count - 1
    socket._slot = nil
    local k = socket._gauge
    if k then
        socket._gauge = nil
        metrics.add(k, -1)
    end
    local id = socket.id
    if id and by_id[id] == socket then by_id[id] = nil end
    if socket._key then index_del(by_user, socket._key, socket) end
    if socket._sid then index_del(by_sid, socket._sid, socket) end
end

-- Moves a socket to other index entries (its policy, run again, admitted
-- it as another user, or as nobody).  A socket not registered (closing)
-- only has its fields set.
function _M.update(socket, key, sid)
    local registered = socket._slot ~= nil
    if socket._key ~= key then
        if registered and socket._key then index_del(by_user, socket._key, socket) end
        socket._key = key
        if registered and key then index_add(by_user, key, socket) end
    end
    if socket._sid ~= sid then
        if registered and socket._sid then index_del(by_sid, socket._sid, socket) end
        socket._sid = sid
        if registered and sid then index_add(by_sid, sid, socket) end
    end
end

---------------------------------------------------------------------------
-- Rooms.

-- The room of a user: "user:" and its key's value ("user:42" for 42 and
-- for "42" alike, as a room name is a string).
local USER_ROOM, SESSION_ROOM = "user:", "session:"

function _M.join(socket, room)
    if type(room) ~= "string" then
        error("bad argument #1 to 'join' (string expected, got " .. type(room) .. ")", 3)
    end
    local rooms = socket.rooms
    if not rooms then
        rooms = {}
        socket.rooms = rooms
    elseif rooms[room] then
        return
    end
    rooms[room] = true
    if socket._slot then index_add(by_room, room_key(socket, room), socket) end
end

function _M.leave(socket, room)
    local rooms = socket.rooms
    if not rooms or not rooms[room] then return end
    rooms[room] = nil
    if socket._slot then index_del(by_room, room_key(socket, room), socket) end
end

local function in_nsp(s, nsp)
    return nsp_of(s) == nsp
end

-- Appends the sockets of index entry v that are in namespace nsp.
local function add_entry(out, n, v, nsp)
    if v == nil then return n end
    if getmetatable(v) ~= SET then
        if in_nsp(v, nsp) then
            n = n + 1
            out[n] = v
        end
        return n
    end
    for s in next, v do
        if in_nsp(s, nsp) then
            n = n + 1
            out[n] = s
        end
    end
    return n
end

-- The sockets of namespace nsp in room, on this worker: "user:<key>" and
-- "session:<id>" are every socket's, a socket's id is its own room.
function _M.of_room(nsp, room)
    local out, n = {}, 0
    local user = match(room, "^user:(.*)$")
    if user then
        -- the user keys whose room this is: the string, and the number
        -- that prints as it
        n = add_entry(out, n, by_user["s" .. user], nsp)
        local num = tonumber(user)
        if num and format("%.17g", num) == user then
            n = add_entry(out, n, by_user["n" .. user], nsp)
        end
        if user == "true" or user == "false" then
            add_entry(out, n, by_user["b" .. user], nsp)
        end
        return out
    end
    local sid = match(room, "^session:(.*)$")
    if sid then
        add_entry(out, 0, by_sid[sid], nsp)
        return out
    end
    n = add_entry(out, 0, by_room[nsp .. "\0" .. room], nsp)
    -- a socket is in the room of its own id, as in socket.io
    local one = by_id[room]
    if one and n == 0 and in_nsp(one, nsp) then out[1] = one end
    return out
end

-- A socket's rooms: its user's and its session's, then the joined ones.
function _M.rooms_of(socket)
    local out, n = {}, 0
    if socket._key then
        n = n + 1
        out[n] = USER_ROOM .. sub(socket._key, 2)
    end
    if socket._sid then
        n = n + 1
        out[n] = SESSION_ROOM .. socket._sid
    end
    local rooms = socket.rooms
    if rooms then
        for room in next, rooms do
            n = n + 1
            out[n] = room
        end
    end
    return out
end

function _M.count()
    return count
end

local function entry_to_array(v)
    if v == nil then return {} end
    if getmetatable(v) ~= SET then return { v } end
    local out, n = {}, 0
    for s in next, v do
        n = n + 1
        out[n] = s
    end
    return out
end

-- passport.socketio's filterSocketsByUser: fn(user, socket) for every
-- socket on this worker (of namespace nsp only, when given); the sockets
-- it returns true for.
function _M.filter(fn, nsp)
    if type(fn) ~= "function" then
        error("bad argument #1 to 'filter_sockets_by_user' (function expected, got "
              .. type(fn) .. ")", 3)
    end
    local out, n = {}, 0
    -- a copy of the bounds: fn may close sockets (and so reorder the list)
    local snapshot = count
    local copy = {}
    for i = 1, snapshot do copy[i] = list[i] end
    for i = 1, snapshot do
        local s = copy[i]
        if (not nsp or in_nsp(s, nsp)) and fn(s.user, s) then
            n = n + 1
            out[n] = s
        end
    end
    return out
end

-- The sockets of a passport.user value (or its key) on this worker.
function _M.of_user(user)
    local k = key_of(user)
    if k == nil then
        error("bad argument #1 to 'sockets_of' (a passport.user value expected: "
              .. "string, number, boolean, or a table with '" .. user_key
              .. "')", 3)
    end
    return entry_to_array(by_user[k])
end

-- The sockets of a user key (of namespace nsp only, when given).
function _M.of_key(k, nsp)
    if nsp then
        local out = {}
        add_entry(out, 0, by_user[k], nsp)
        return out
    end
    return entry_to_array(by_user[k])
end

function _M.of_sid(sid)
    return entry_to_array(by_sid[sid])
end

-- The session ids with sockets here, for periodic revalidation.
function _M.sids()
    local out, n = {}, 0
    for sid in next, by_sid do
        n = n + 1
        out[n] = sid
    end
    return out
end

function _M.all()
    local out = {}
    for i = 1, count do out[i] = list[i] end
    return out
end

return _M
