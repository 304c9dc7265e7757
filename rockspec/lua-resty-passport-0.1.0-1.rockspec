package = "lua-resty-passport"
version = "0.1.0-1"
source = {
   url = "https://github.com/lua-resty-passport/lua-resty-passport/archive/v0.1.0.tar.gz",
   dir = "lua-resty-passport-0.1.0",
}
description = {
   summary = "passport.js sessions at the nginx/OpenResty edge: who is this WebSocket?",
   detailed = [[
Verifies express-session (connect.sid) and cookie-session cookies in C,
reads the connect-redis session without blocking the nginx worker, and runs
passport.socketio-style success/fail policies in Lua for WebSocket and
socket.io handshakes.
]],
   homepage = "https://github.com/lua-resty-passport/lua-resty-passport",
   license = "MIT",
}
dependencies = {
   "lua >= 5.1",
}
-- hiredis is optional: the Makefile builds librestypassport_redis.so (the
-- Redis store outside nginx) only where it finds it.
external_dependencies = {
   OPENSSL = { header = "openssl/sha.h" },
}
build = {
   type = "make",
   build_target = "all",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LDFLAGS = "-L$(OPENSSL_LIBDIR)",
   },
   install_target = "install",
   install_variables = {
      LIBDIR = "$(LIBDIR)",
      LUADIR = "$(LUADIR)",
   },
}
