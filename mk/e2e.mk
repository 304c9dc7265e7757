# mk/e2e.mk: the end-to-end WebSocket benchmark (issue 6).
#   make bench-e2e              the full run (~10 min): 5 stacks side by side
#   make bench-e2e QUICK=1      a small run (~2 min)
# Knobs (environment or make variables): E2E_USERS, E2E_SECONDS, E2E_CONC,
# E2E_HOLD, E2E_ROWS (e.g. "guard,floor,psio"), E2E_CORES ("0:1" = servers
# on cpu 0, load generator on cpu 1).  See bench/e2e/run.lua.
LOADGEN = $(BUILD)/bench/loadgen

.PHONY: bench-e2e loadgen

loadgen: $(LOADGEN)

$(LOADGEN): bench/loadgen.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ bench/loadgen.c $(LDFLAGS) -lcrypto

bench-e2e: all $(LOADGEN)
	QUICK=$(QUICK) LOADGEN=$(abspath $(LOADGEN)) $(LUAJIT) bench/e2e/run.lua
