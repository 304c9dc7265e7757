#!/bin/sh
# Session gets/s through the Redis store inside nginx (1 worker, wrk)
# against redis-benchmark -t get (1 connection, no pipelining), as a ratio.
# Usage: bench/store_bench.sh   (or `make bench-store`; needs `make` first)
# Environment: BENCH_SECONDS (per wrk run, default 3), BENCH_CONNECTIONS
# (default 50), BENCH_ROUNDS (default 3; medians are printed).
# Needs: luajit, nginx + libnginx-mod-http-lua, redis-server,
# redis-benchmark, wrk (Debian/Ubuntu: apt-get install -y wrk).
set -eu
cd "$(dirname "$0")/.."
for tool in luajit nginx redis-server redis-benchmark wrk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "store_bench: $tool not found (wrk: apt-get install -y wrk)" >&2
        exit 1
    fi
done
if [ ! -f build/librestypassport.so ]; then
    echo "store_bench: run make first" >&2
    exit 1
fi
LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;bench/?.lua;;" \
LUA_CPATH="build/?.so;;" \
    exec luajit bench/store_bench.lua
