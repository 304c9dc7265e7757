# mk/e2e.mk: the end-to-end WebSocket benchmark.
#   make bench-e2e              the full run (~12 min): every stack side by side,
#                               10,000 users, 3 rounds, 10,000 held connections
#   make bench-e2e QUICK=1      a small run (~1 min: 2,000 users, 1 round)
#   make bench-e2e QUICK=1 E2E_ROWS=sio,sio-http,terminate,psio
#                               some rows only (keys: guard guard-cache
#                               terminate terminate-cache sio sio-http
#                               sio-cache sio-poll floor ws-floor psio psio-poll
#                               recipe recipe-poll guard-sio)
#   make bench-e2e QUICK=1 E2E_ROWS=sio,sio-poll,psio-poll,recipe-poll
#                               socket.io-client's default connection (polling
#                               handshake, POST 40, GET, WebSocket upgrade) in
#                               the gateway and in both Node stacks
# Knobs (environment): E2E_USERS, E2E_SECONDS, E2E_ROUNDS, E2E_CONC,
# E2E_HOLD, E2E_ROWS, E2E_CORES ("0:1" = servers on cpu 0, load generator
# on cpu 1), E2E_JSON, E2E_NGINX_HTTP; the open loop: E2E_RATE (offered
# handshakes/s, default 1000; 0 = none), E2E_RATE_SECONDS, E2E_RATE_CONC;
# E2E_EIO_DICT (the sio-poll gateway's lua_shared_dict passport_eio, 10m).
# Each may also be given as a make variable (make bench-e2e E2E_RATE=2000).
# See bench/e2e/run.lua.
# The load generator alone: make loadgen; build/bench/loadgen -h.  (LOADGEN
# is set in the Makefile: the fault specs use it too.)

.PHONY: bench-e2e loadgen

bench: bench-e2e

loadgen: $(LOADGEN)

$(LOADGEN): bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ bench/loadgen.c $(LDFLAGS) -lcrypto

bench-e2e: all $(LOADGEN)
	QUICK=$(QUICK) LOADGEN=$(abspath $(LOADGEN)) $(LUAJIT) bench/e2e/run.lua
