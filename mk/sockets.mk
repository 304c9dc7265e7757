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
# Other knobs (environment or make variables): ROUNDS (7), TUNE=0 (nginx's
# default buffers instead of the recommended directives), NO_EMIT=1,
# POLL_N, POLL_IDLE, POLL_DICT (the poll stack's passport_eio size, 10m).
# See bench/sockets/run.lua.
.PHONY: bench-sockets

bench: bench-sockets

bench-sockets: all $(LOADGEN)
	N=$(or $(N),10000) ROUNDS=$(or $(ROUNDS),7) LOADGEN=$(abspath $(LOADGEN)) \
		$(LUAJIT) bench/sockets/run.lua
