#!/usr/bin/env bash
# What each message the PostgreSQL backend sends costs the SERVER on a new
# connection — where the no-op's and `offline status`'s time beyond the
# floor goes (README, "PostgreSQL's start-up, in round trips").
#
# Starts a throwaway cluster of its own (scripts/pg-cluster: its log is
# read), runs `bench-pg-floor`, `offline status` and a tracked no-op once
# each with every statement logged, takes the messages they sent from the
# log, and replays each one, as one message, on RUNS new connections
# (pgbench -C) with `log_statement_stats`: the server's CPU time (user +
# system) for that message, per connection — CPU time, not elapsed, so a
# loaded machine's waiting stays out of it. `SELECT 1` is the issue's
# floor statement. Prints one table: min, p10 and median, in µs.
#
# Knobs: RUNS (150), BIN (a directory of binaries built already: no build).
# Needs pgbench and psql (Debian's postgresql-client) and python3.
set -euo pipefail

RUNS=${RUNS:-150}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    cargo build --release -p bench-cli --bin bench-manage --bin bench-pg-floor
    bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
command -v pgbench >/dev/null || { echo "needs pgbench" >&2; exit 1; }

work=$(mktemp -d)
pg_dir=$(mktemp -d)
cleanup() {
    "$root/scripts/pg-cluster" stop "$pg_dir" || true
    rm -rf "$work"
}
trap cleanup EXIT
url=$("$root/scripts/pg-cluster" start "$pg_dir")
log=$pg_dir/server.log
unset MANAGE_DATABASE_URL MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK
cd "$work"
printf 'backend = "postgres"\ndatabase_url = "%s"\nsite = "cost"\n' "$url" > manage.toml
pg=("$bin/bench-manage" --config "$work/manage.toml")
"${pg[@]}" offline status >/dev/null # the schema, made before anything is taken

# One logged run of each, each message's text taken from the log.
take() {
    local name=$1
    shift
    local from
    from=$(wc -l < "$log")
    "$@" >/dev/null
    tail -n +$((from + 1)) "$log" | sed -n 's/.*LOG:  duration: [0-9.]* ms  statement: //p' \
        | awk -v n="$name" -v w="$work" '{ f = sprintf("%s/%s.%d.sql", w, n, NR); print > f; close(f) }'
}
printf 'SELECT 1\n' > select1.1.sql
# The binaries' connections set their own startup options: the logging
# is the cluster's, for the takes only.
conf() { psql -qX "$url" -c "ALTER SYSTEM SET log_min_duration_statement = $1" -c "SELECT pg_reload_conf()" >/dev/null; }
conf 0
take floor "$bin/bench-pg-floor"
take status "${pg[@]}" offline status
take noop "${pg[@]}" noop
conf -1

# Each message replayed as ONE message: the semicolons between its
# statements escaped for pgbench (`\;`), those inside literals kept.
for f in *.sql; do
    python3 - "$f" <<'EOF'
import sys
path = sys.argv[1]
s = open(path).read().strip().rstrip(";")
out, quoted = [], False
for c in s:
    if c == "'":
        quoted = not quoted
    out.append("\\;" if c == ";" and not quoted else c)
open(path, "w").write("".join(out) + "\n")
EOF
done

cost() {
    local from
    from=$(wc -l < "$log")
    PGOPTIONS="-c log_statement_stats=on" pgbench -n -C -t "$RUNS" -f "$1" "$url" >/dev/null 2>&1 \
        || { echo "pgbench failed on $1" >&2; return 1; }
    tail -n +$((from + 1)) "$log" | python3 -c '
import re, statistics, sys
cpu = []
for line in sys.stdin:
    m = re.search(r"!\s+([0-9.]+) s user, ([0-9.]+) s system, [0-9.]+ s elapsed", line)
    if m:
        cpu.append((float(m.group(1)) + float(m.group(2))) * 1e6)
cpu.sort()
print(f"{cpu[0]:.0f} | {cpu[len(cpu) // 10]:.0f} | {statistics.median(cpu):.0f}")
'
}

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $RUNS new connections each"
echo
echo "| message, each replayed as the first on a new connection (the no-op's end comes second in a real run, its table warm) | statements | server CPU µs: min | p10 | median |"
echo "|---|---|---|---|---|"
for f in select1.1.sql floor.*.sql status.*.sql noop.*.sql; do
    what=$(head -c 70 "$f" | tr -d '\n')
    n=$(($(grep -o '\\;' "$f" | wc -l || true) + 1))
    echo "| ${f%.sql}: \`$what…\` | $n | $(cost "$f") |"
done
