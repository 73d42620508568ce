#!/usr/bin/env bash
# Requests per second of examples/mysite with and without MaintenanceLayer,
# alternating in one run (this machine is shared and noisy), then PENDING
# (a logged-in user) and OFFLINE (turned away) with the layer.
# Needs wrk (apt-get install wrk). Usage: benches-web/wrk.sh [ROUNDS] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
cargo build -q --release -p mysite
bin=$PWD/target/release/mysite
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
printf 'state_dir = "state"\nrefresh_interval = "250ms"\n' > manage.toml
start() { # port, flags…
    local port=$1; shift
    "$bin" runserver --addr "127.0.0.1:$port" "$@" > "server-$port.log" 2>&1 &
    until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.05; done
}
rate() { # url, extra wrk args…
    wrk -t2 -c16 -d"${secs}s" "$@" | awk '/Requests\/sec/ {print $2}'
}
start 18101
start 18102 --without-maintenance
echo "round  with-layer  without  ratio   (ONLINE, GET /, req/s)"
for r in $(seq "$rounds"); do
    a=$(rate http://127.0.0.1:18101/)
    b=$(rate http://127.0.0.1:18102/)
    printf '%5s  %10s  %7s  %5.3f\n' "$r" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done
cookie=$(curl -s -i -X POST http://127.0.0.1:18101/login | awk -F'[=;]' '/set-cookie/ {print $2}')
a=$(rate http://127.0.0.1:18101/ -H "Cookie: sessionid=$cookie")
echo "ONLINE, logged-in session: $a req/s"
"$bin" offline on --timeout 120 > on.log 2>&1 &
until "$bin" offline status | grep -q PENDING; do sleep 0.05; done
sleep 0.5
a=$(rate http://127.0.0.1:18101/ -H "Cookie: sessionid=$cookie")
b=$(rate http://127.0.0.1:18101/)
echo "PENDING: logged-in session passes: $a req/s; newcomer turned away (303): $b req/s"
"$bin" offline on --force > /dev/null
sleep 0.5
a=$(rate http://127.0.0.1:18101/)
echo "OFFLINE: turned away (303): $a req/s"
"$bin" offline off > /dev/null
