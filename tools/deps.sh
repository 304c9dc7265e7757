#!/bin/sh
# Installs what a fresh Debian 12 machine lacks for building, testing and
# the demo: Debian packages only (the Node side comes from `npm ci`).
# chromium: the browser suite (spec/browser) drives it with playwright-core.
set -eu
PKGS="make gcc clang libclang-rt-14-dev valgrind pkg-config git
luajit2 libluajit2-5.1-dev luarocks lua-busted lua-check lua-cjson lua-socket lua-messagepack
nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache
redis-server redis-sentinel libhiredis-dev libssl-dev nodejs npm wrk prometheus curl
chromium ${EXTRA_PKGS:-}"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
# node and npm may come from outside Debian's packages: only install them
# when the commands are missing.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    missing=$(echo "$missing" | tr ' ' '\n' | grep -vx -e nodejs -e npm | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
    echo "deps: installing$missing"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    # Keep Debian's nginx and redis services from starting on the default ports.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "deps: everything is installed"
fi
