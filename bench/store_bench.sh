#!/bin/sh
# Session gets/s through the Redis store inside nginx (1 worker, wrk)
# against redis-benchmark -t get (1 connection, no pipelining), as a ratio;
# then the store behind Redis Sentinel and Cluster (bench/store_ha_bench.lua).
# Usage: bench/store_bench.sh   (or `make bench-store`; needs `make` first)
# Environment: BENCH_SECONDS (per wrk run, default 3), BENCH_CONNECTIONS
# (default 50), BENCH_ROUNDS (default 3 here, 5 for the Sentinel/Cluster
# rows; medians are printed), BENCH_FAILOVER_RATE (handshakes/s offered
# during the failover, default 500).
# Needs: luajit, nginx + libnginx-mod-http-lua, redis-server (which runs
# the sentinels too), redis-benchmark, redis-cli, wrk (Debian/Ubuntu:
# apt-get install -y wrk).
set -eu
cd "$(dirname "$0")/.."
for tool in luajit nginx redis-server redis-benchmark redis-cli wrk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "store_bench: $tool not found (wrk: apt-get install -y wrk)" >&2
        exit 1
    fi
done
if [ ! -f build/librestypassport.so ]; then
    echo "store_bench: run make first" >&2
    exit 1
fi
LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;bench/?.lua;;"
LUA_CPATH="build/?.so;;"
export LUA_PATH LUA_CPATH
luajit bench/store_bench.lua
# Then Redis Sentinel and Cluster (issue #17): store:get through discovery
# against the same server addressed directly, and a Sentinel failover under
# guard-mode handshakes.
echo
exec luajit bench/store_ha_bench.lua
