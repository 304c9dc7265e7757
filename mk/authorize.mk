# mk/authorize.mk: the guard-mode benchmark (issue 4).
.PHONY: bench-authorize

bench: bench-authorize

bench-authorize: all
	luajit bench/authorize_bench.lua $(BENCH_SECONDS)
