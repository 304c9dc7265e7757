# mk/bench.mk: `make bench` runs every benchmark; this fragment adds the core
# one (issue 2).  Others hook in with `bench: bench-xxx`.
LUAJIT ?= luajit
NODE ?= node
BENCH_FLOOR = $(BUILD)/bench/floor

.PHONY: bench-core

bench: bench-core

# Linked by -l and rpath (the library has no SONAME): the floor calls the
# very library LuaJIT loads, from any working directory.
$(BENCH_FLOOR): bench/floor.c csrc/passport.h $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ bench/floor.c -L$(BUILD) -lrestypassport \
		-Wl,-rpath,$(abspath $(BUILD))

bench-core: $(CORE_LIB) $(BENCH_FLOOR)
	LUA_PATH='lua/?.lua;./?.lua;;' LUA_CPATH='$(BUILD)/?.so;;' \
		$(LUAJIT) bench/run.lua $(BENCH_FLOOR) $(NODE)
