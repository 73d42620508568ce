#!/usr/bin/env bash
# Whole-process benchmarks of the PostgreSQL backend beside the file
# backend's, in ONE hyperfine run (paired, side by side, RUNS each), then
# the reaction times of both backends:
#
#   empty        `bench-empty`, an empty binary
#   floor        `bench-pg-floor`: a bare connection plus `SELECT 1`,
#                through the backend's own connection path (the issue's floor)
#   floor-schema `bench-pg-floor schema`: the same, reading the schema's
#                version instead (the first table every command touches)
#   file-noop    a tracked registered no-op on the file backend
#   pg-noop      the same no-op on PostgreSQL          (<= floor + 1.5 ms)
#   file-status  `offline status` on the file backend
#   pg-status    `offline status` on PostgreSQL        (<= floor + 1.0 ms)
#   reaction     a task's end (clean, SIGKILL) and a cancel -> the waiter,
#                each backend                          (<= 100 ms)
#
# The server: $MANAGE_DATABASE_URL, or a throwaway cluster started for the
# run (scripts/pg-cluster, stopped on the way out). Prints one table of
# medians at the end. Knobs: RUNS (200), WARMUP (20), REACTION_RUNS (20; 0
# skips it), OLD (a directory holding another build's `bench-manage`: its
# no-op and status on PostgreSQL join the same run, as old-pg-noop and
# old-pg-status, for a before/after), BIN (a directory of binaries built
# already: no build), POOLER=session (PgBouncer in session mode in front
# of the same server, password-authenticated as the server is: its floor,
# no-op and status join the same run as pooled-floor, pooled-noop and
# pooled-status; needs Debian's pgbouncer). Needs hyperfine and python3.
set -euo pipefail

RUNS=${RUNS:-200}
WARMUP=${WARMUP:-20}
REACTION_RUNS=${REACTION_RUNS:-20}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    cargo build --release -p bench-cli
    bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
hyperfine=$(command -v hyperfine) || { echo "needs hyperfine" >&2; exit 1; }

work=$(mktemp -d)
pg_dir=
pooler_pid=
cleanup() {
    if [ -n "$pooler_pid" ]; then kill "$pooler_pid" 2>/dev/null || true; fi
    if [ -n "$pg_dir" ]; then "$root/scripts/pg-cluster" stop "$pg_dir" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
if [ -z "${MANAGE_DATABASE_URL:-}" ]; then
    pg_dir=$(mktemp -d)
    MANAGE_DATABASE_URL=$("$root/scripts/pg-cluster" start "$pg_dir")
fi
url=$MANAGE_DATABASE_URL
unset MANAGE_DATABASE_URL MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK
cd "$work"
mkdir file pg
# Each site's manage.toml, named on the command line; the floor finds the
# PostgreSQL one in its working directory, where hyperfine runs.
: > file/manage.toml
printf 'backend = "postgres"\ndatabase_url = "%s"\nsite = "bench-%s"\n' "$url" "$$" > pg/manage.toml
cd pg
file=("$bin/bench-manage" --config "$work/file/manage.toml" --state-dir "$work/file/state")
pg=("$bin/bench-manage" --config "$work/pg/manage.toml")
old=()
if [ -n "${OLD:-}" ]; then
    o=("$OLD/bench-manage" --config "$work/pg/manage.toml")
    old=(-n old-pg-noop "${o[*]} noop" -n old-pg-status "${o[*]} offline status")
fi
# Schema made once, before any run is timed.
"${pg[@]}" offline status >/dev/null

pooled=()
if [ -n "${POOLER:-}" ]; then
    [ "$POOLER" = session ] || { echo "POOLER=session is the one pool mode this backend works with" >&2; exit 2; }
    pgbouncer=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [ -x "$pgbouncer" ] || { echo "POOLER needs pgbouncer (Debian's pgbouncer package)" >&2; exit 1; }
    mkdir -p "$work/pooler"
    # Run as postgres when root: it must reach its files in here.
    chmod 711 "$work"
    chmod 777 "$work/pooler"
    # The server's host, port, user and password, from the URL; the pooler
    # asks its clients for the same password (SCRAM), as the server does.
    read -r host port user password db < <(python3 - "$url" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(p.hostname, p.port or 5432, u.unquote(p.username or "manage"),
      u.unquote(p.password or ""), (p.path.lstrip("/") or "postgres"))
PY
)
    pooler_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # The role's SCRAM verifier, as a production pooler's auth_query reads
    # it, so the pooler checks a client's proof without running the 4,096
    # rounds itself (with the password in plain text it would, each login);
    # the plain password when psql cannot read it.
    secret=$(psql "$url" -Atc "SELECT rolpassword FROM pg_authid WHERE rolname = current_user" 2>/dev/null || true)
    case $secret in SCRAM-SHA-256*) ;; *) secret=$password ;; esac
    printf '"%s" "%s"\n' "$user" "$secret" > "$work/pooler/users.txt"
    cat > "$work/pooler/pgbouncer.ini" <<INI
[databases]
$db = host=$host port=$port dbname=$db user=$user password=$password
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pooler_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $work/pooler/users.txt
pool_mode = session
ignore_startup_parameters = options
max_client_conn = 100
default_pool_size = 20
logfile = $work/pooler/pgbouncer.log
INI
    chmod 644 "$work/pooler/"*
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$pgbouncer" "$work/pooler/pgbouncer.ini" >/dev/null 2>&1 &
    else
        "$pgbouncer" "$work/pooler/pgbouncer.ini" >/dev/null 2>&1 &
    fi
    pooler_pid=$!
    for _ in $(seq 200); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $pooler_port), 1)" 2>/dev/null && break
        sleep 0.05
    done
    mkdir -p "$work/pooled"
    pooled_url="postgres://$user:$password@127.0.0.1:$pooler_port/$db?sslmode=disable"
    printf 'backend = "postgres"\ndatabase_url = "%s"\nsite = "bench-%s"\n' "$pooled_url" "$$" > "$work/pooled/manage.toml"
    p=("$bin/bench-manage" --config "$work/pooled/manage.toml")
    "${p[@]}" offline status >/dev/null
    pooled=(-n pooled-floor "$bin/bench-pg-floor --config $work/pooled/manage.toml"
        -n pooled-noop "${p[*]} noop" -n pooled-status "${p[*]} offline status")
fi

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$hyperfine" -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/pg.json" \
    -n empty "$bin/bench-empty" \
    -n floor "$bin/bench-pg-floor" \
    -n floor-schema "$bin/bench-pg-floor schema" \
    -n file-noop "${file[*]} noop" \
    -n pg-noop "${pg[*]} noop" \
    -n file-status "${file[*]} offline status" \
    -n pg-status "${pg[*]} offline status" \
    "${old[@]}" "${pooled[@]}"

reaction_file= reaction_pg=
if [ "$REACTION_RUNS" -gt 0 ]; then
    echo; echo "== reaction"
    reaction_file=$("$bin/reaction" "$REACTION_RUNS" | grep '^reaction file')
    reaction_pg=$(MANAGE_DATABASE_URL=$url "$bin/reaction" "$REACTION_RUNS" | grep '^reaction postgres')
    printf '%s\n%s\n' "$reaction_file" "$reaction_pg"
fi

python3 - "$work/pg.json" <<'EOF'
import json, statistics, sys
runs = {r["command"]: r["times"] for r in json.load(open(sys.argv[1]))["results"]}
med = {k: statistics.median(v) * 1000 for k, v in runs.items()}
floor = med["floor"]
print()
print(f"| figure | median ms | vs | target |")
print(f"|---|---|---|---|")
print(f"| empty binary | {med['empty']:.2f} | | |")
print(f"| PostgreSQL floor: connect + SELECT 1 | {floor:.2f} | {floor / med['empty']:.2f}x empty | |")
print(f"| connect + the schema's version | {med['floor-schema']:.2f} | floor +{med['floor-schema'] - floor:.2f} ms | |")
print(f"| tracked no-op, file | {med['file-noop']:.2f} | {med['file-noop'] / med['empty']:.2f}x empty | |")
d = med['pg-noop'] - floor
print(f"| tracked no-op, PostgreSQL | {med['pg-noop']:.2f} | floor +{d:.2f} ms | <= +1.5 ms {'PASS' if d <= 1.5 else 'MISS'} |")
print(f"| offline status, file | {med['file-status']:.2f} | {med['file-status'] / med['empty']:.2f}x empty | |")
d = med['pg-status'] - floor
print(f"| offline status, PostgreSQL | {med['pg-status']:.2f} | floor +{d:.2f} ms | <= +1.0 ms {'PASS' if d <= 1.0 else 'MISS'} |")
for k, what in (("old-pg-noop", "tracked no-op"), ("old-pg-status", "offline status")):
    if k in med:
        print(f"| {what}, PostgreSQL, OLD build | {med[k]:.2f} | floor +{med[k] - floor:.2f} ms | |")
if "pooled-floor" in med:
    pf = med["pooled-floor"]
    print(f"| through PgBouncer (session mode): connect + SELECT 1 | {pf:.2f} | floor {pf - floor:+.2f} ms | |")
    for k, what, t in (("pooled-noop", "tracked no-op", 1.5), ("pooled-status", "offline status", 1.0)):
        d = med[k] - floor
        print(f"| {what}, through PgBouncer | {med[k]:.2f} | floor {d:+.2f} ms (pooled floor {med[k] - pf:+.2f}) | <= +{t} ms {'PASS' if d <= t else 'MISS'} |")
EOF
