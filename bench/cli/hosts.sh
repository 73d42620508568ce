#!/usr/bin/env bash
# The many-hosts benchmarks of docs/scale.md (issue 23): three hosts
# (network namespaces joined by veth pairs, tests/src/hosts.rs) sharing one
# PostgreSQL, with the documented defaults. Measures
#   - `offline on --force` on host A -> each other host's layer answers OFFLINE,
#   - the last task ends on B (exit, SIGKILL) -> A's waiting `offline on` returns,
#   - B's link cut while it runs a task -> the server frees its lock, and B's
#     layer says it cannot read the mode,
#   - the statements per second one web host's layer sends with 1,000 and
#     10,000 users logged in (pg_stat_statements).
# and prints one table. Not in CI; takes about 10 minutes. Needs root,
# iproute2, psql, and Debian's PostgreSQL 15 (pg_stat_statements ships in it).
#
# Starts a throwaway cluster of its own (scripts/pg-cluster) in PG_DIR (a new
# temporary directory by default), with pg_stat_statements loaded.
# Knobs: BENCH_CHANGES (50), BENCH_ENDS (20), BENCH_PARTITIONS (3),
# BENCH_USERS ("1000 10000"), BENCH_EVERY (30 s between one user's requests),
# BENCH_WINDOW (30 s counted), ONLY (a test-name filter, e.g. partition).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
[ "$(id -u)" = 0 ] || { echo "bench/cli/hosts.sh: the hosts are network namespaces: run as root" >&2; exit 1; }

pg_dir=${PG_DIR:-$(mktemp -d)}
log=$(mktemp)
cleanup() {
    "$root/scripts/pg-cluster" stop "$pg_dir" || true
    rm -f "$log"
}
trap cleanup EXIT
url=$("$root/scripts/pg-cluster" start "$pg_dir")
psql -qX "$url" -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" >/dev/null
# pg_ctl restart keeps the options scripts/pg-cluster started it with.
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$pg_dir/data" -w -m fast restart >/dev/null
export MANAGE_TEST_DATABASE_URL=$url MANAGE_TEST_DATABASE_CA=$pg_dir/ca.pem MANAGE_TEST_EXPECT_POSTGRES=1
max_conn=$(psql -qAtX "$url" -c "SHOW max_connections")

cargo test --release -p manage-tests --test scale -- --ignored --nocapture --test-threads=1 \
    ${ONLY:-} 2>&1 | tee "$log" | grep -E '^(ROW|DETAIL|test |thread)' >&2 || true
grep -q '^test result: ok' "$log" || {
    tail -n 60 "$log" >&2
    echo "bench/cli/hosts.sh: a benchmark failed (its log's end above)" >&2
    exit 1
}

echo
echo "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), PostgreSQL $(psql -qAtX "$url" -c 'SHOW server_version'), max_connections $max_conn"
{
    printf 'what\tn\tmedian / figure\tp99 / figure\tnote\n'
    grep -o $'ROW\t.*' "$log" | cut -f2-
} | column -t -s $'\t'
echo
grep -o $'DETAIL\t.*' "$log" | cut -f2- | column -t -s $'\t' || true
