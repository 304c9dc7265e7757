# mk/sockets.mk: the socket layer's benchmark.
#   make bench-sockets            10,000 held connections, gateway vs socket.io
#   make bench-sockets N=2000     smaller
.PHONY: bench-sockets

bench: bench-sockets

bench-sockets: all $(LOADGEN)
	N=$(or $(N),10000) ROUNDS=$(or $(ROUNDS),7) LOADGEN=$(abspath $(LOADGEN)) \
		$(LUAJIT) bench/sockets/run.lua
