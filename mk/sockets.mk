# mk/sockets.mk: the socket layer's benchmark (issue 5).
#   make bench-sockets            10,000 held connections, gateway vs socket.io
#   make bench-sockets N=2000     smaller
.PHONY: bench-sockets

bench: bench-sockets

bench-sockets: all $(BUILD)/bench/loadgen
	N=$(or $(N),10000) ROUNDS=$(or $(ROUNDS),7) LOADGEN=$(abspath $(BUILD)/bench/loadgen) \
		$(LUAJIT) bench/sockets/run.lua
