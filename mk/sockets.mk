# mk/sockets.mk: the socket layer's benchmark.
#   make bench-sockets            10,000 held connections: passport.websocket
#                                 (gw ws), passport.socketio (gw sio) and
#                                 socket.io 4 in Node, plus nginx's floor
#   make bench-sockets N=2000     smaller
#   make bench-sockets STACKS=sio,node   some stacks only (floor, ws, sio, poll, node)
#   make bench-sockets STACKS=poll       the gateway holding POLL_N (1,000)
#                                 socket.io clients on long-polling only: its
#                                 CPU while they idle POLL_IDLE (30) s, and an
#                                 emit to all of them
#   The sio and node stacks also take an emit from socket.io's own Redis
#   emitter (issue 16): the gateway with init_worker{ socketio_emitter },
#   socket.io with @socket.io/redis-adapter, both from one
#   @socket.io/redis-emitter publisher (bench/sockets/emitter.js): the row
#   "emitter to 5000 of 10000 by room", publish -> last client, and CPU.
# Other knobs (environment or make variables): ROUNDS (7), TUNE=0 (nginx's
# default buffers instead of the recommended directives), NO_EMIT=1,
# POLL_N, POLL_IDLE, POLL_DICT (the poll stack's passport_eio size, 10m),
# NO_EMITTER=1 (no emitter row, no adapter: the run as before issue 16),
# EMITTER_KEY (the emitter's key prefix, socket.io).
# See bench/sockets/run.lua.
.PHONY: bench-sockets

bench: bench-sockets

bench-sockets: all $(LOADGEN)
	N=$(or $(N),10000) ROUNDS=$(or $(ROUNDS),7) LOADGEN=$(abspath $(LOADGEN)) \
		$(LUAJIT) bench/sockets/run.lua
