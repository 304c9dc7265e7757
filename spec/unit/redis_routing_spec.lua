-- The pure parts of the Sentinel and Cluster routers: addresses given in
-- the options, and the redirects Redis Cluster answers.  (Their behaviour
-- with real servers: spec/integration/redis_sentinel_spec.lua and
-- redis_cluster_spec.lua.)
local sentinel = require "resty.passport.redis.sentinel"
local cluster = require "resty.passport.redis.cluster"
local nodes = require "resty.passport.redis.nodes"

describe("redis routing", function()
    it("takes addresses as { host, port } or host:port, and refuses anything else", function()
        assert.same({ "10.0.0.1:26379", "h:1" }, sentinel.addresses { { "10.0.0.1", 26379 }, "h:1" })
        assert.same({ "a:2" }, sentinel.addresses { { host = "a", port = 2 } })
        for _, bad in ipairs { {}, "h:1", { "h" }, { { "h", 0 } }, { { "h", 70000 } }, { 5 } } do
            local list, why = sentinel.addresses(bad)
            assert.is_nil(list)
            assert.is_string(why)
        end
        assert.same({ "::1", 6379 }, { nodes.split("::1:6379") })
    end)

    it("reads MOVED and ASK redirects, at the top or first in a pipeline", function()
        assert.same({ "MOVED", 3999, "127.0.0.1:6381" },
                    { cluster.redirect_of { err = "MOVED 3999 127.0.0.1:6381" } })
        assert.same({ "ASK", 12, "10.0.0.2:7000" },
                    { cluster.redirect_of { { err = "ASK 12 10.0.0.2:7000" }, { err = "ASK 12 10.0.0.2:7000" } } })
        assert.is_nil(cluster.redirect_of { err = "MOVEDX 1 h:1" })
        assert.is_nil(cluster.redirect_of { err = "ERR wrong" })
        assert.is_nil(cluster.redirect_of { err = "MOVED x h:1" })
        assert.is_nil(cluster.redirect_of "MOVED 1 h:1") -- a value, not an error
        assert.is_nil(cluster.redirect_of { "MOVED 1 h:1" })
    end)

    it("refuses bad router options with the option's name", function()
        local settings = { connect_timeout = 100, read_timeout = 100 }
        assert.same({ nil, "master_name", "the Sentinel group's name expected" },
                    { sentinel.new({ sentinels = { "h:1" } }, settings, 10) })
        assert.same({ nil, "sentinel_username", "needs a sentinel_password" },
                    { sentinel.new({ sentinels = { "h:1" }, master_name = "m", sentinel_username = "u" },
                                   settings, 10) })
        assert.same({ nil, "db", "Redis Cluster has database 0 only" },
                    { cluster.new({ cluster = { "h:1" } }, { db = 2 }, 10) })
        assert.same({ nil, "discovery_ttl", "positive number expected" },
                    { cluster.new({ cluster = { "h:1" }, discovery_ttl = 0 }, {}, 10) })
    end)
end)
