-- The per-worker socket registry and the RESP parser: plain Lua, no nginx
-- needed.
local registry = require "resty.passport.registry"

local function sock(user, sid, serialized)
    return { user = user, _key = registry.key_of(serialized), _sid = sid }
end

describe("registry", function()
    it("keys users by type and value, tables by user_key", function()
        assert.equal("n1", registry.key_of(1))
        assert.equal("s1", registry.key_of("1"))
        assert.equal("n0", registry.key_of(0))
        assert.equal("btrue", registry.key_of(true))
        -- %.17g: large integers stay exact, fractions round-trip
        assert.equal("n9007199254740992", registry.key_of(2 ^ 53))
        assert.equal("n1.5", registry.key_of(1.5))
        assert.equal("s42", registry.key_of({ id = "42", name = "x" }))
        assert.is_nil(registry.key_of({ name = "no id" }))
        assert.is_nil(registry.key_of(0 / 0))
        assert.is_nil(registry.key_of(nil))
    end)

    it("indexes by user and session, and forgets on remove", function()
        local a1 = sock({ role = "admin" }, "s1", 1)
        local a2 = sock({ role = "admin" }, "s2", 1)
        local b = sock({ role = "user" }, "s3", "1")
        for _, s in ipairs { a1, a2, b } do registry.add(s) end
        registry.add(a1) -- twice is once
        assert.equal(3, registry.count())
        assert.equal(2, #registry.of_user(1))
        assert.equal(1, #registry.of_user("1"))
        assert.equal(1, #registry.of_sid("s2"))
        local admins = registry.filter(function(u) return u.role == "admin" end)
        assert.equal(2, #admins)
        registry.remove(a1)
        registry.remove(a1)
        assert.equal(2, registry.count())
        assert.same({ a2 }, registry.of_user(1))
        assert.same({}, registry.of_sid("s1"))
        registry.remove(a2)
        registry.remove(b)
        assert.equal(0, registry.count())
        assert.same({}, registry.sids())
    end)

    it("lets a filter close sockets while it runs", function()
        local all = {}
        for i = 1, 10 do
            all[i] = sock({ n = i }, "x" .. i, i)
            registry.add(all[i])
        end
        local seen = registry.filter(function(u)
            registry.remove(all[u.n]) -- reorders the dense list
            return u.n % 2 == 0
        end)
        assert.equal(5, #seen)
        assert.equal(0, registry.count())
    end)

    it("keys table users by the configured user_key", function()
        registry.configure { user_key = "uid" }
        assert.equal("n7", registry.key_of({ uid = 7, id = 1 }))
        assert.has_error(function() registry.of_user({ id = 1 }) end, "bad argument #1 to 'sockets_of' "
            .. "(a passport.user value expected: string, number, boolean, or a table with 'uid')")
        registry.configure {} -- nothing given: unchanged
        assert.equal("n7", registry.key_of({ uid = 7 }))
        registry.configure { user_key = "id" }
        assert.equal("s42", registry.key_of({ id = "42" }))
    end)

    it("indexes only what data.user.logged_in vouches for", function()
        local data = { user = { id = 1, logged_in = true }, serialized_user = 1, session_id = "s1" }
        assert.same({ "n1", "s1" }, { registry.index_of(data) })
        -- a permissive fail let it in anonymously: the refused user and the
        -- session's id are not its to be reached by
        local anon = { user = { logged_in = false }, serialized_user = 13, session_id = "s13" }
        assert.same({}, { registry.index_of(anon) })
        assert.same({}, { registry.index_of({ user = { id = 13 }, serialized_user = 13 }) })
        assert.same({}, { registry.index_of({}) })
    end)

    it("moves a socket to other index entries, or to none", function()
        local s = sock({ id = 1 }, "s1", 1)
        local other = sock({ id = 1 }, "s2", 1)
        registry.add(s)
        registry.add(other)
        registry.update(s, "n2", "s1")
        assert.same({ other }, registry.of_user(1))
        assert.same({ s }, registry.of_user(2))
        assert.same({ s }, registry.of_sid("s1"))
        registry.update(s, nil, nil) -- admitted again, anonymously
        assert.same({}, registry.of_user(2))
        assert.same({}, registry.of_sid("s1"))
        assert.same({ other }, registry.of_user(1))
        assert.equal(2, registry.count()) -- still listed (filters see it)
        registry.remove(s)
        registry.update(s, "n3", "s3") -- not registered: fields only
        assert.same({}, registry.of_user(3))
        assert.equal("n3", s._key)
        registry.remove(other)
        assert.same({}, registry.sids())
    end)

    it("misuse raises", function()
        assert.has_error(function() registry.filter("x") end)
        assert.has_error(function() registry.of_user({}) end)
        assert.has_error(function() registry.configure("id") end)
        assert.has_error(function() registry.configure { user_key = 1 } end)
    end)

    describe("rooms", function()
        local function sio(nsp, serialized, sid)
            local s = sock({}, sid, serialized)
            s.nsp = nsp
            return s
        end

        local function ids(list)
            local out = {}
            for i, s in ipairs(list) do out[i] = s end
            table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
            return out
        end

        it("answers user: and session: rooms from the indexes, per namespace", function()
            local n42 = sio("/", 42, "sa")        -- the number 42
            local s42 = sio("/", "42", "sb")      -- the string "42": the same room name
            local admin = sio("/admin", 42, "sa") -- the same user in another namespace
            local plain = sock({}, "sc", 7)       -- a plain WebSocket: namespace "/"
            for _, s in ipairs { n42, s42, admin, plain } do registry.add(s) end
            assert.same(ids { n42, s42 }, ids(registry.of_room("/", "user:42")))
            assert.same({ admin }, registry.of_room("/admin", "user:42"))
            assert.same({ plain }, registry.of_room("/", "user:7"))
            assert.same({ n42 }, registry.of_room("/", "session:sa"))
            assert.same({}, registry.of_room("/", "user:43"))
            assert.same({}, registry.of_room("/", "user:042")) -- not how 42 prints
            assert.same({ "user:42", "session:sa" }, registry.rooms_of(n42))
            for _, s in ipairs { n42, s42, admin, plain } do registry.remove(s) end
            assert.same({}, registry.of_room("/", "user:42"))
        end)

        it("joins and leaves named rooms, and forgets them on remove", function()
            local a, b = sio("/", 1, "s1"), sio("/", 2, "s2")
            local c = sio("/chat", 3, "s3")
            for _, s in ipairs { a, b, c } do registry.add(s) end
            registry.join(a, "lobby")
            registry.join(a, "lobby") -- twice is once
            registry.join(b, "lobby")
            registry.join(c, "lobby") -- another namespace's lobby
            assert.same(ids { a, b }, ids(registry.of_room("/", "lobby")))
            assert.same({ c }, registry.of_room("/chat", "lobby"))
            registry.leave(b, "lobby")
            registry.leave(b, "never joined")
            assert.same({ a }, registry.of_room("/", "lobby"))
            registry.remove(a)
            assert.same({}, registry.of_room("/", "lobby"))
            -- a socket joined before it is registered is indexed when added
            local d = sio("/", 4, "s4")
            registry.join(d, "early")
            assert.same({}, registry.of_room("/", "early"))
            registry.add(d)
            assert.same({ d }, registry.of_room("/", "early"))
            assert.has_error(function() registry.join(d, 5) end)
            for _, s in ipairs { b, c, d } do registry.remove(s) end
            assert.equal(0, registry.count())
        end)
    end)
end)
