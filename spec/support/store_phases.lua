-- The store read in every nginx phase, for the store specs (direct and
-- multiplexed): a location per phase that can reach Redis (rewrite, access,
-- a timer) and per phase that cannot (header_filter, log; init and
-- init_worker report through INIT_RESULT and the "results" dict).  The
-- http{} part must define STORES.a and lua_shared_dict results.
return [[
        location = /rewrite {
            rewrite_by_lua_block {
                local v, err = STORES.a:get("abc")
                ngx.ctx.r = v or err
            }
            content_by_lua_block { ngx.print("rewrite:", ngx.ctx.r) }
        }
        location = /access {
            access_by_lua_block {
                local v, err = STORES.a:get("abc")
                ngx.ctx.r = v or err
            }
            content_by_lua_block { ngx.print("access:", ngx.ctx.r) }
        }
        location = /timer {
            content_by_lua_block {
                local results = ngx.shared.results
                results:delete("timer")
                ngx.timer.at(0, function()
                    local v, err = STORES.a:get("abc")
                    results:set("timer", v or err)
                end)
                for _ = 1, 100 do
                    local r = results:get("timer")
                    if r then return ngx.print("timer:", r) end
                    ngx.sleep(0.01)
                end
                ngx.print("timer: no result")
            }
        }
        location = /init {
            content_by_lua_block {
                ngx.say("init:", INIT_RESULT)
                ngx.say("init_worker:", ngx.shared.results:get("init_worker"))
            }
        }
        location = /header_filter {
            content_by_lua_block { ngx.say("body") }
            header_filter_by_lua_block {
                local v, err = STORES.a:get("abc")
                ngx.header["X-Result"] = tostring(v) .. "|" .. tostring(err)
            }
        }
        location = /log {
            content_by_lua_block { ngx.say("logged") }
            log_by_lua_block {
                local v, err = STORES.a:get("abc")
                ngx.shared.results:set("log", tostring(v) .. "|" .. tostring(err))
            }
        }
        location = /logresult {
            content_by_lua_block { ngx.say(ngx.shared.results:get("log")) }
        }
]]
