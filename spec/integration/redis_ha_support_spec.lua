-- The Redis high-availability test infrastructure, proved against real
-- servers: spec/support/redis_ha.lua's Sentinel and Cluster topologies, and
-- the Express app (spec/support/app/server.js) writing its sessions through
-- node-redis 5's Sentinel client and node-redis 4's cluster client.
local socket = require "socket"
local redis_ha = require "support.redis_ha"
local node_app = require "support.node_app"

local now = socket.gettime

-- The session id in a connect.sid cookie ("connect.sid=s%3A<sid>.<sig>").
local function sid_of(cookie)
    local value = assert(cookie:match("^connect%.sid=(.+)$"), cookie)
    value = value:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    return assert(value:match("^s:([^.]+)%."), value)
end

-- Logs in, retrying while the app's Redis client finds its way (a failover):
-- the Cookie header value, or an error after timeout seconds.
local function login_within(port, username, password, timeout)
    local deadline = now() + timeout
    local status
    repeat
        local _, headers
        status, _, headers = node_app.request(port, "POST", "/login",
            { body = "username=" .. username .. "&password=" .. password })
        if status == 200 and headers["set-cookie"] then
            return headers["set-cookie"]:match("^([^;]+)")
        end
        socket.sleep(0.1)
    until now() > deadline
    error("no login for " .. username .. " within " .. timeout .. " s (last status "
          .. tostring(status) .. ")")
end

local function whoami(port, cookie)
    local status, body = node_app.request(port, "GET", "/whoami", { headers = { cookie = cookie } })
    assert.equal(200, status)
    return body
end

describe("redis_ha support", function()
    describe("sentinel", function()
        local ha, app

        setup(function()
            ha = redis_ha.sentinel { master_name = "mymaster", down_after = 1000 }
            app = node_app.start_app {
                REDIS_SENTINELS = ha:seed_string(),
                REDIS_MASTER_NAME = "mymaster",
                SECRET = "ha sentinel secret",
            }
        end)

        teardown(function()
            if app then app:stop() end
            if ha then ha:stop() end
        end)

        it("keeps the sessions and the logins through a failover", function()
            local old_port = ha.master.port
            assert.same({ "127.0.0.1", old_port }, { ha:master_addr(1) })
            assert.same({ "127.0.0.1", old_port }, { ha:master_addr(3) })

            local ann = node_app.login(app.port, "ann", "pw1")
            local key = "sess:" .. sid_of(ann)
            assert.equal(1, ha.master:call("EXISTS", key))
            -- A TTL: connect-redis took the node-redis call shapes (the
            -- app's adapter), not the ioredis ones the client would ignore.
            assert.is_true(ha.master:call("TTL", key) > 0)
            -- Replication is asynchronous: a write the replica has not got
            -- yet is lost with the master.  Wait for it before the crash.
            assert.equal(1, ha.master:call("WAIT", 1, 5000))

            local killed = ha:kill_master()
            local new_port = ha:wait_failover(old_port, 30)
            print(("\nsentinel failover: %.2f s from SIGKILL to all 3 sentinels naming %d")
                  :format(now() - killed, new_port))
            assert.not_equal(old_port, new_port)
            assert.equal(new_port, ha.master.port)
            assert.equal(old_port, ha.replica.port)
            assert.equal(1, ha.master:call("EXISTS", key))

            -- The app's Sentinel client moves to the new master by itself.
            local bob = login_within(app.port, "bob", "pw2", 15)
            assert.equal(1, ha.master:call("EXISTS", "sess:" .. sid_of(bob)))
            local me = whoami(app.port, ann)
            assert.is_true(me.logged_in)
            assert.equal("ann", me.user.username)
        end)
    end)

    describe("cluster", function()
        local cl, app

        setup(function()
            cl = redis_ha.cluster { masters = 3 }
            app = node_app.start_app {
                REDIS_CLUSTER = cl:seed_string(),
                USERS_N = "20",
                SECRET = "ha cluster secret",
            }
        end)

        teardown(function()
            if app then app:stop() end
            if cl then cl:stop() end
        end)

        it("puts each session on its slot's master, also after a reshard", function()
            assert.equal(3, #cl.nodes)
            assert.equal(3, #cl:masters())
            local users = {}
            for i = 1, 20 do
                local cookie, body = node_app.login(app.port, "u" .. i, "pw")
                assert.equal(1000 + i, body.user.id)
                local key = "sess:" .. sid_of(cookie)
                local u = { name = "u" .. i, cookie = cookie, key = key, slot = cl:keyslot(key) }
                u.owner = cl:owner(u.slot)
                assert.equal(1, u.owner:call("EXISTS", key))
                assert.is_true(u.owner:call("TTL", key) > 0)
                users[i] = u
            end

            -- redis-cli takes a master's lowest slots first: move as few as
            -- needed to carry one session along (the one nearest to the
            -- start of its master's range).
            local pick, nslots
            for _, m in ipairs(cl:masters()) do
                local start = m.ranges[1][1]
                for _, u in ipairs(users) do
                    if u.owner == m.node and (not nslots or u.slot - start + 1 < nslots) then
                        pick, nslots = u, u.slot - start + 1
                    end
                end
            end
            local from = pick.owner
            local to = cl.nodes[from == cl.nodes[1] and 2 or 1]

            -- In the background, key by key, while the app reads every
            -- session (the client follows -ASK and -MOVED).
            local t0 = now()
            local job = cl:reshard_async(from, to, nslots, { pipeline = 1 })
            local reads = 0
            repeat
                for _, u in ipairs(users) do
                    local me = whoami(app.port, u.cookie)
                    assert.is_true(me.logged_in, u.name)
                    assert.equal(u.name, me.user.username)
                    reads = reads + 1
                end
            until job:done()
            job:wait(60)
            print(("\ncluster reshard: %d slots in %.2f s, %d session reads meanwhile")
                  :format(nslots, now() - t0, reads))

            local moved = 0
            for _, u in ipairs(users) do
                local owner = cl:owner(u.slot)
                if owner ~= u.owner then
                    moved = moved + 1
                    assert.equal(to, owner)
                end
                assert.equal(1, owner:call("EXISTS", u.key), u.key)
                local me = whoami(app.port, u.cookie)
                assert.is_true(me.logged_in, u.name)
            end
            assert.is_true(moved >= 1)
            assert.equal(to, cl:owner(pick.slot))
        end)
    end)
end)
