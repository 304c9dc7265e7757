# mk/authorize.mk: the guard-mode benchmark (auth:check per second, policy
# in Lua against the same checks in Node).
.PHONY: bench-authorize

bench: bench-authorize

bench-authorize: all
	luajit bench/authorize_bench.lua $(BENCH_SECONDS)
