# mk/bench.mk: `make bench` runs every benchmark; this fragment adds the core
# one (the C verifiers and parsers against Node's).  Others hook in with
# `bench: bench-xxx`.
LUAJIT ?= luajit
NODE ?= node
BENCH_FLOOR = $(BUILD)/bench/libfloor.so

.PHONY: bench-core

bench: bench-core

# The C side, loaded by bench/run.lua through FFI.  Linked by -l and rpath
# (the core has no SONAME) so it uses the very library LuaJIT loads.
$(BENCH_FLOOR): bench/floor.c csrc/passport.h $(CORE_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -shared -o $@ bench/floor.c -L$(BUILD) \
		-lrestypassport -Wl,-rpath,$(abspath $(BUILD))

bench-core: $(CORE_LIB) $(BENCH_FLOOR)
	LUA_PATH='lua/?.lua;./?.lua;;' LUA_CPATH='$(BUILD)/?.so;;' \
		$(LUAJIT) bench/run.lua $(abspath $(BENCH_FLOOR)) $(NODE)
