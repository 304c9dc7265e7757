-- End to end in a real browser: `tools/demo.sh run` (what `make run` starts:
-- redis-server, the example Express app, the example gateways) and headless
-- Debian Chromium driven by playwright-core (spec/browser/e2e.js).  The page
-- logs in with its form, connects through the gateway and shows the greeting
-- (socket.io mode: two browser contexts, an admin and a user);
-- screenshots go to build/e2e/ (E2E_OUT overrides).
local cjson = require "cjson"
local socket = require "socket"
local proc = require "support.proc"
local nginx_server = require "support.nginx_server"

local ROOT = nginx_server.root
local OUT = os.getenv("E2E_OUT") or (ROOT .. "/build/e2e")

local q = proc.q

local function read(path)
    return proc.read_file(path) or ""
end

local function browse(mode, url)
    local out = proc.sh("cd " .. q(ROOT) .. " && node spec/browser/e2e.js " .. mode .. " "
                        .. q(url) .. " " .. q(OUT))
    local line = out:match("(%b{})%s*$")
    assert(line, "the browser script said: " .. out)
    local r = cjson.decode(line)
    assert(not r.error, r.error)
    return r
end

describe("the example page in headless Chromium", function()
    local pid, log, urls = nil, os.tmpname(), {}

    setup(function()
        -- its own session and process group (setsid), so a teardown that
        -- finds it stuck can still stop all it started
        pid = tonumber((proc.sh("cd " .. q(ROOT) .. " && setsid nohup tools/demo.sh run > " .. q(log)
                                .. " 2>&1 & echo $!")))
        local deadline = socket.gettime() + 30
        while socket.gettime() < deadline do
            local text = read(log)
            if text:find("Ctrl-C stops everything", 1, true) then
                for mode, url in text:gmatch("(%a+) mode: open (http://[%d.:]+)") do
                    urls[mode] = url
                end
                return
            end
            if not proc.alive(pid) then break end
            socket.sleep(0.1)
        end
        error("tools/demo.sh run did not come up:\n" .. read(log))
    end)

    teardown(function()
        if pid and proc.alive(pid) then
            proc.sh("kill -TERM " .. pid)
            local deadline = socket.gettime() + 15
            while proc.alive(pid) and socket.gettime() < deadline do socket.sleep(0.1) end
            if proc.alive(pid) then
                -- setsid made it a process group of its own: everything it started
                proc.sh("kill -KILL -- -" .. pid)
            end
        end
        os.remove(log)
    end)

    it("guard mode: rejected before login; after the login form, socket.io greets the user", function()
        assert.truthy(urls.guard, read(log))
        local r = browse("guard", urls.guard)
        assert.equal("rejected by the gateway: 401 No session found", r.before)
        assert.equal("alice (admin)", r.me)
        assert.equal("accepted by the gateway", r.after, cjson.encode(r))
        assert.matches("^Hello alice %(admin%)", r.greeting)
        assert.matches('x%-passport%-user: {[^\n]*"name":"alice"', r.headers)
        assert.matches("x-passport-logged-in: true", r.headers, 1, true)
        assert.truthy(io.open(OUT .. "/guard.png"), "no screenshot")
    end)

    it("terminate mode: greets by name, relays chat, pushes an admin's announcement, closes on logout", function()
        assert.truthy(urls.terminate, read(log))
        local r = browse("terminate", urls.terminate)
        assert.equal("rejected by the gateway: 401 No session found", r.before)
        assert.equal("alice (admin)", r.me)
        assert.equal("accepted by the gateway", r.after, cjson.encode(r))
        assert.matches("^Hello alice %(admin%): nginx holds this WebSocket", r.greeting)
        assert.matches("^published: %d gateway worker", r.announce_result)
        assert.matches("announcement from alice: to the admins", r.announcement, 1, true)
        assert.matches("alice says: hi from the browser", r.chat, 1, true)
        assert.equal("closed by the gateway: 4401 session ended", r.after_logout)
        assert.truthy(io.open(OUT .. "/terminate.png"), "no screenshot")
    end)

    it("socket.io mode: connect_error before login; greeted from Lua; /admin for admins; "
       .. "emit to a role; io server disconnect on logout", function()
        assert.truthy(urls.socketio, read(log))
        local r = browse("socketio", urls.socketio)
        local all = cjson.encode(r)
        -- no session: socket.io-client's connect_error, passport.socketio's message
        assert.equal('rejected by the gateway: connect_error "No session found"', r.before, all)
        assert.equal('refused: connect_error "No session found"', r.admin_before, all)
        -- alice (admin): greeted by the gateway's Lua, in her user and session rooms
        assert.equal("alice (admin)", r.me)
        assert.equal("accepted by the gateway", r.after, all)
        assert.matches("^Hello alice %(admin%): nginx speaks socket%.io", r.greeting)
        assert.matches("user:1, session:", r.rooms, 1, true)
        assert.equal("joined: the admin policy let you in", r.admin_state, all)
        -- the client's default options: long-polling first, then the upgrade
        assert.matches("connected to / (polling,", r.connected_over, 1, true)
        assert.equal(1, r.upgraded, all)
        -- bob (user): greeted, refused on /admin by the admin policy
        assert.equal("accepted by the gateway", r.bob_after, all)
        assert.matches("^Hello bob %(user%)", r.bob_greeting)
        assert.equal('refused: connect_error "handshake unauthorized"', r.bob_admin_state, all)
        -- passport.emit{ filter = role }: each notice on its role's page only
        assert.matches("^published: %d gateway worker", r.announce_admins)
        assert.matches("^published: %d gateway worker", r.announce_users)
        assert.matches("notice from alice to the admin role: to the admins", r.alice_notice, 1, true)
        assert.matches("notice from alice to the user role: to the users", r.bob_notice, 1, true)
        assert.equal(1, r.alice_notices, all)
        assert.equal(1, r.bob_notices, all)
        -- logout: DISCONNECT on both namespaces, no reconnection; bob unaffected
        assert.equal("disconnected by the gateway: io server disconnect", r.after_logout, all)
        assert.equal("disconnected: io server disconnect", r.admin_after_logout, all)
        assert.equal(0, r.reconnects, all)
        assert.equal("accepted by the gateway", r.bob_after_logout, all)
        assert.truthy(io.open(OUT .. "/socketio.png"), "no screenshot")
    end)
end)
