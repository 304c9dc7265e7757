# mk/relay.mk: what the cross-worker relay costs an upgraded socket.io
# connection, against the direct WebSocket (bench/relay/run.lua).
#   make bench-relay              one nginx with 2 workers; C (100) socket.io
#                                 clients with the client's default transports
#                                 (polling, then the upgrade) and C with
#                                 transports ["websocket"]; echo round trips
#                                 with an ack, closed loop and open loop, per
#                                 class (direct WebSocket / upgraded on the
#                                 session's home worker / upgraded on the
#                                 other worker): RTT p50, p99, max and the
#                                 gateway's CPU per echo
#                                 (~70 s: 3 rounds of every phase)
#   make bench-relay C=20 ECHOES=20 RATE=200 OPEN_SECONDS=2 ROUNDS=1 IDLE=1
#                                 a small run (~10 s)
# Other knobs (environment or make variables): PAR (connections echoing at
# a time in the closed loop, 4), ROUNDS (3), IDLE (s, 5), PAYLOAD (bytes,
# 64), RELAY_DICT (16m), SRV_CPU (0), CLIENT_CPU (1), LOG_LEVEL (warn),
# CPU_SRC=schedstat (ns instead of /proc/<pid>/stat's 10 ms ticks), JSON=1.
.PHONY: bench-relay

bench: bench-relay

bench-relay: all
	C=$(or $(C),100) ECHOES=$(or $(ECHOES),50) RATE=$(or $(RATE),500) \
		OPEN_SECONDS=$(or $(OPEN_SECONDS),5) ROUNDS=$(or $(ROUNDS),3) \
		$(LUAJIT) bench/relay/run.lua
