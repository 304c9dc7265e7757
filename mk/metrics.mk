# mk/metrics.mk: what counting costs (issue #18): guard-mode handshakes/s
# through nginx instances identical except that one calls
# passport.init_metrics (and a second one without, the control); wrk -c50,
# rounds in rotated order, medians and the round-to-round spread
# (bench/metrics_bench.lua).  Environment:
# BENCH_SECONDS (per wrk run, default 2), BENCH_ROUNDS (default 12).
.PHONY: bench-metrics

bench: bench-metrics

bench-metrics: all
	LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;bench/?.lua;;' \
	LUA_CPATH='$(BUILD)/?.so;;' luajit bench/metrics_bench.lua
