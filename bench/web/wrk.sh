#!/usr/bin/env bash
# Requests per second of examples/mysite with and without MaintenanceLayer
# (ONLINE, GET /), in alternated rounds — each round runs both, the first
# of the pair alternating, so that a drift of the machine's load falls on
# both — then, with the layer: a logged-in session ONLINE, PENDING (that
# session passes; a newcomer is turned away) and OFFLINE (turned away).
#
# The servers run on one core and wrk on another (taskset), so that the
# client never competes with the server it measures; mysite's runtime
# then has one worker, as the core it may use. Prints each round's ratio
# (with / without), their median beside the target (≥ 0.98), and wrk's
# figures for the other modes. Rounds on a shared machine swing by more
# than the target: read the median of several rounds, and the criterion
# bench (`cargo bench -p maintenance-core --features tower --bench layer`)
# for the layer's own cost.
#
# Needs wrk and taskset (Debian: apt-get install wrk util-linux).
# Usage: bench/web/wrk.sh [ROUNDS (7)] [SECS a run (5)]
# Knobs (environment): SERVER_CPU (0), CLIENT_CPU (1), CONNECTIONS (16).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-7}
secs=${2:-5}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
connections=${CONNECTIONS:-16}
if [ "$rounds" -lt 5 ]; then
    echo "wrk.sh: at least 5 rounds make a median worth reading (got $rounds)" >&2
    exit 2
fi
for tool in wrk taskset curl; do
    command -v "$tool" > /dev/null || { echo "wrk.sh: needs $tool on PATH" >&2; exit 2; }
done
cargo build -q --release -p mysite
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/mysite
work=$(mktemp -d)
servers=()
cleanup() {
    for pid in "${servers[@]}"; do kill "$pid" 2> /dev/null || true; done
    "$bin" offline off --force > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
printf 'state_dir = "state"\nrefresh_interval = "250ms"\n' > manage.toml
unset MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK
start() { # port, flags…: a server pinned to the server core
    local port=$1; shift
    taskset -c "$server_cpu" "$bin" runserver --addr "127.0.0.1:$port" "$@" \
        > "server-$port.log" 2>&1 &
    servers+=("$!")
    local tries=0
    until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 600 ]; then
            echo "wrk.sh: the server on port $port did not start:" >&2
            cat "server-$port.log" >&2
            exit 1
        fi
        sleep 0.05
    done
}
rate() { # url, extra wrk args…: requests per second, from wrk pinned to the client core
    taskset -c "$client_cpu" wrk -t1 -c"$connections" -d"${secs}s" "$@" \
        | awk '/Requests\/sec/ {print $2}'
}
with=18101
without=18102
start "$with"
start "$without" --without-maintenance
# Warm both (connections, caches, the layer's first snapshot).
rate "http://127.0.0.1:$with/" > /dev/null
rate "http://127.0.0.1:$without/" > /dev/null

echo "== ONLINE, GET /: $rounds rounds of $secs s, server on CPU $server_cpu, wrk on CPU $client_cpu, $connections connections"
echo "round  with-layer     without   ratio"
ratios=()
for r in $(seq "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then
        a=$(rate "http://127.0.0.1:$with/")
        b=$(rate "http://127.0.0.1:$without/")
    else
        b=$(rate "http://127.0.0.1:$without/")
        a=$(rate "http://127.0.0.1:$with/")
    fi
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}')
    ratios+=("$ratio")
    printf '%5s  %10s  %10s   %s\n' "$r" "$a" "$b" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
verdict=$(awk -v m="$median" 'BEGIN {print (m >= 0.98) ? "met" : "MISSED"}')
echo "median ratio (with / without): $median   target ≥ 0.98: $verdict (rounds swing more than that: see above)"

cookie=$(curl -s -i -X POST "http://127.0.0.1:$with/login" | awk -F'[=;]' 'tolower($0) ~ /^set-cookie: sessionid=/ {print $2}')
[ -n "$cookie" ] || { echo "wrk.sh: the login set no session cookie" >&2; exit 1; }
echo
echo "== with the layer"
echo "ONLINE, logged-in session: $(rate "http://127.0.0.1:$with/" -H "Cookie: sessionid=$cookie") req/s"
"$bin" offline on --timeout 300 > on.log 2>&1 &
servers+=("$!") # the waiter: ended with the servers
until "$bin" offline status | grep -q PENDING; do sleep 0.05; done
# The layer's snapshot shows PENDING within one refresh interval.
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$with/")" = 303 ]; do sleep 0.05; done
echo "PENDING, logged-in session passes: $(rate "http://127.0.0.1:$with/" -H "Cookie: sessionid=$cookie") req/s"
echo "PENDING, newcomer turned away (303): $(rate "http://127.0.0.1:$with/") req/s"
"$bin" offline on --force > /dev/null
until "$bin" offline status | grep -q OFFLINE; do sleep 0.05; done
until [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: sessionid=$cookie" "http://127.0.0.1:$with/")" = 303 ]; do sleep 0.05; done
echo "OFFLINE, turned away (303): $(rate "http://127.0.0.1:$with/") req/s"
"$bin" offline off > /dev/null
