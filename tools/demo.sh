#!/usr/bin/env bash
# The demo behind `make demo` and `make run` (mk/demo.mk installs what is
# missing first: tools/deps.sh, `make`, and `npm ci` in examples/app).
#
#   tools/demo.sh demo   start redis-server, the Express app (examples/app) and
#                        a gateway per mode (examples/guard, examples/terminate,
#                        examples/socketio) on free loopback ports in a temp
#                        dir, run the client (examples/app/demo.js) through
#                        each gateway, print the outcomes and stop everything;
#                        the exit status is 0 only when every outcome was the
#                        expected one
#   tools/demo.sh run    the same servers, left running for a browser until
#                        Ctrl-C (or SIGTERM); prints the URLs
#
# env: MODES ("guard terminate socketio"), SECRET (comma-separated, newest first),
#      PREFIX ("sess:"), KEEP=1 keeps the temp dir (logs, rendered confs).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CMD=${1:-demo}
case "$CMD" in demo|run) ;; *) echo "usage: $0 demo|run" >&2; exit 2 ;; esac

MODES=${MODES:-guard terminate socketio}
# Two secrets show a rotation: the app signs with the first, both verify.
export SECRET=${SECRET:-demo-secret-2,demo-secret-1}
export PREFIX=${PREFIX:-sess:}
NGINX=${NGINX:-nginx}

for f in build/librestypassport.so examples/app/node_modules/.package-lock.json; do
    if [ ! -e "$f" ]; then
        echo "demo: $f is missing: run \`make demo\` (or \`make run\`), which installs and builds first" >&2
        exit 1
    fi
done

RUN_DIR=$(mktemp -d /tmp/passport-demo.XXXXXX)
chmod 755 "$RUN_DIR"
declare -A PIDS=()      # name -> pid, stopped in reverse order by cleanup
ORDER=()

started() { PIDS[$1]=$2; ORDER+=("$1"); }

stop_pid() { # name pid signal
    local name=$1 pid=$2 sig=$3 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    echo "demo: $name (pid $pid) did not stop on SIG$sig: killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i name
    trap - EXIT INT TERM
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do
        name=${ORDER[i]}
        case "$name" in
            nginx-*) stop_pid "$name" "${PIDS[$name]}" QUIT ;;   # graceful: workers too
            *) stop_pid "$name" "${PIDS[$name]}" TERM ;;
        esac
    done
    if [ "${KEEP:-}" = 1 ]; then
        echo "demo: logs and configs kept in $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports: bound to 0 together, read back, released.
read -r -a PORTS <<< "$(node -e '
const net = require("net"); const n = +process.argv[1]; const out = []; const srv = [];
for (let i = 0; i < n; i++) { const s = net.createServer(); srv.push(s);
  s.listen(0, "127.0.0.1", () => { out.push(s.address().port);
    if (out.length === n) { console.log(out.join(" ")); srv.forEach((x) => x.close()); } }); }' 5)"
REDIS_PORT=${PORTS[0]} APP_PORT=${PORTS[1]}
declare -A GATEWAY_PORT=([guard]=${PORTS[2]} [terminate]=${PORTS[3]} [socketio]=${PORTS[4]})
declare -A PAGE=([guard]=/ [terminate]=/terminate.html [socketio]=/socketio.html)
for mode in $MODES; do
    if [ -z "${GATEWAY_PORT[$mode]:-}" ]; then
        echo "demo: unknown mode '$mode' in MODES (guard, terminate, socketio)" >&2
        exit 2
    fi
done
export REDIS_PORT

wait_port() { # port name pid log
    local i
    for i in $(seq 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        if ! kill -0 "$3" 2>/dev/null; then
            echo "demo: $2 exited; its log ($4):" >&2
            tail -n 30 "$4" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "demo: $2 did not listen on port $1; its log ($4):" >&2
    tail -n 30 "$4" >&2 || true
    exit 1
}

# Keyspace events (K, generic g, string $, expired x, evicted e) let the
# terminate-mode gateway see a logout at once.
start_redis() {
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN_DIR" --save '' \
        --appendonly no --daemonize no --logfile "$RUN_DIR/redis.log" \
        --notify-keyspace-events 'Kg$xe' &
    started redis $!
    wait_port "$REDIS_PORT" redis-server $! "$RUN_DIR/redis.log"
}

start_app() {
    PORT=$APP_PORT node examples/app/server.js > "$RUN_DIR/app.log" 2>&1 &
    started app $!
    wait_port "$APP_PORT" "the Express app" $! "$RUN_DIR/app.log"
}

# Fills in the ${UPPER_CASE} names of examples/<mode>/nginx.conf and starts
# nginx in the foreground (daemon off), so its pid is the master's.
start_gateway() { # mode
    local mode=$1 port=${GATEWAY_PORT[$1]} dir=$RUN_DIR/$1 conf
    mkdir -p "$dir/logs" "$dir/temp"
    conf=$dir/nginx.conf
    sed -e "s|\${GATEWAY_PORT}|$port|g" -e "s|\${APP_PORT}|$APP_PORT|g" \
        -e "s|\${REPO}|$REPO|g" -e "s|\${NGINX_USER}|$(id -un) $(id -gn)|g" \
        "examples/$mode/nginx.conf" > "$conf"
    if grep -n '\${[A-Z_]*}' "$conf" >&2; then
        echo "demo: placeholders left in $conf" >&2
        exit 1
    fi
    ORIGINS="http://127.0.0.1:$port,http://localhost:$port" \
        "$NGINX" -p "$dir" -c "$conf" -e "$dir/logs/error.log" -g 'daemon off;' \
        > "$dir/logs/stderr.log" 2>&1 &
    started "nginx-$mode" $!
    wait_port "$port" "nginx ($mode)" $! "$dir/logs/error.log"
}

DESCRIBE_guard="nginx checks each socket.io handshake (auth:access()) and proxies it to the app"
DESCRIBE_terminate="nginx holds the WebSocket itself (passport.websocket) and greets the user"
DESCRIBE_socketio="nginx speaks socket.io itself (passport.socketio): namespaces, events, acks, emit"

echo "== lua-resty-passport demo (temp dir $RUN_DIR)"
start_redis
echo "  redis-server      127.0.0.1:$REDIS_PORT   (pid ${PIDS[redis]})"
start_app
echo "  Express app       127.0.0.1:$APP_PORT   (pid ${PIDS[app]}, examples/app/server.js)"
for mode in $MODES; do
    start_gateway "$mode"
    printf '  gateway %-9s http://127.0.0.1:%s/   (pid %s, examples/%s/nginx.conf)\n' \
        "$mode" "${GATEWAY_PORT[$mode]}" "${PIDS[nginx-$mode]}" "$mode"
done

if [ "$CMD" = run ]; then
    echo
    for mode in $MODES; do
        echo "  $mode mode: open http://127.0.0.1:${GATEWAY_PORT[$mode]}${PAGE[$mode]}"
    done
    echo "  demo users: alice / wonderland (admin), bob / builder, carol / singer"
    echo "  Ctrl-C stops everything."
    # Until a signal, or until one of the servers exits.
    set +e
    wait -n "${PIDS[@]}"
    echo "demo: a server exited; stopping the others" >&2
    exit 1
fi

failed=0
for mode in $MODES; do
    echo
    desc=DESCRIBE_$mode
    echo "-- $mode mode: ${!desc}"
    if ! node examples/app/demo.js "$mode" "http://127.0.0.1:${GATEWAY_PORT[$mode]}"; then
        failed=1
        echo "  (last lines of the $mode gateway's error log:)"
        grep -v ' \[debug\] ' "$RUN_DIR/$mode/logs/error.log" | tail -n 15 | sed 's/^/    /'
    fi
done
for mode in $MODES; do
    if [ "$mode" = socketio ]; then
        echo
        echo "-- what the socketio gateway counted (GET /metrics, a few lines of many):"
        curl -s "http://127.0.0.1:${GATEWAY_PORT[$mode]}/metrics" \
            | grep -E '^passport_(handshakes_total|sockets|emits_published_total|emit_deliveries_total|logout_closes_total|subscriber_up)' \
            | grep -v ' 0$' | sed 's/^/  /'
        echo "-- and its health (GET /status): $(curl -s -o /dev/null -w '%{http_code}' \
            "http://127.0.0.1:${GATEWAY_PORT[$mode]}/status")"
    fi
done
echo
if [ "$failed" = 0 ]; then
    echo "== every outcome as expected"
else
    echo "== some outcome was NOT as expected (KEEP=1 keeps the logs)"
fi
exit "$failed"
