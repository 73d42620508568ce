#!/usr/bin/env bash
# Whole-process benchmarks of manage: builds bench-cli in the release
# profile, then
#   1. `reaction`: last task's end (dropped / SIGKILLed) and another
#      process's deactivate → the waiter's return (target ≤ 100 ms);
#   2. hyperfine, each comparison in one run, side by side (targets in
#      brackets):
#      a. `bench-manage noop` vs `bench-empty`              (≤ 1.25×)
#      b. `bench-manage --help` vs `bench-empty`            (≤ 2×)
#      c. peak RSS of `bench-manage noop` (/usr/bin/time -v) (≤ 4 MiB)
#      d. `bench-manage-fat noop` vs `bench-manage noop`    (within 10%)
#      e. `bench-manage nop` (external `manage-nop`) vs the script itself
#                                                           (≤ +1.5 ms)
#   3. `bench-manage offline status`, empty state and with 100 live tasks +
#      10,000 live sessions, vs `bench-empty`;
#   4. diagnostics: start-up costs one at a time (`bench-probe`), and
#      `--help` with only the benchmark's own directory on PATH;
# and prints a summary: wall-clock medians and their ratios (the targets),
# and the mean CPU time (user + system) of each command, which a busy
# machine disturbs less. Knobs (environment): RUNS (200), WARMUP (20),
# REACTION_RUNS (40), RSS_RUNS (20), SESSIONS (10000), TASKS (100),
# BENCH_TMP (where the state directories go: ${TMPDIR:-/tmp}; try /dev/shm
# to take the disk's file system out of the figures).
# Needs hyperfine, python3 and GNU time (/usr/bin/time).
set -euo pipefail

RUNS=${RUNS:-200}
WARMUP=${WARMUP:-20}
REACTION_RUNS=${REACTION_RUNS:-40}
RSS_RUNS=${RSS_RUNS:-20}
SESSIONS=${SESSIONS:-10000}
TASKS=${TASKS:-100}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -p bench-cli --features extra-commands
bin=${CARGO_TARGET_DIR:-$root/target}/release
for b in bench-empty bench-manage bench-manage-fat bench-state reaction; do
    [ -x "$bin/$b" ] || { echo "missing $bin/$b" >&2; exit 1; }
done

work=$(mktemp -d -p "${BENCH_TMP:-${TMPDIR:-/tmp}}")
holder=
cleanup() {
    if [ -n "$holder" ]; then kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# No manage.toml above the working directory, no state from the
# environment: every run uses the --state-dir it is given.
cd "$work"
unset MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK
mkdir path
printf '#!/bin/sh\nexit 0\n' > path/manage-nop
chmod +x path/manage-nop
export PATH="$work/path:$PATH"

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); temp dirs on $(df --output=fstype,source "$work" | tail -1)"

hyperfine=$(command -v hyperfine)
hf() { # hf NAME [hyperfine args…]: one comparison, exported to NAME.json
    local name=$1; shift
    echo; echo "== $name"
    "$hyperfine" -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/$name.json" "$@"
}

echo; echo "== reaction"
"$bin/reaction" "$REACTION_RUNS" | tee "$work/reaction.txt"

hf a_noop_vs_empty \
    -n empty "$bin/bench-empty" \
    -n noop "$bin/bench-manage --state-dir $work/state-a noop"
hf b_help_vs_empty \
    -n empty "$bin/bench-empty" \
    -n help "$bin/bench-manage --help"
hf d_fat_vs_noop \
    -n noop "$bin/bench-manage --state-dir $work/state-d noop" \
    -n fat-noop "$bin/bench-manage-fat --state-dir $work/state-d noop"
hf e_external_vs_script \
    -n script "$work/path/manage-nop" \
    -n external "$bin/bench-manage --state-dir $work/state-e nop"

echo; echo "== c peak RSS, $RSS_RUNS runs each"
rss() { # rss NAME CMD…: peak RSS in KiB of each run, one a line
    local name=$1; shift
    for _ in $(seq "$RSS_RUNS"); do
        /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'
    done > "$work/rss_$name.txt"
    echo "$name: $(sort -n "$work/rss_$name.txt" | tr '\n' ' ')KiB"
}
rss empty "$bin/bench-empty"
rss noop "$bin/bench-manage" --state-dir "$work/state-c" noop
rss help "$bin/bench-manage" --help
rss status "$bin/bench-manage" --state-dir "$work/state-c" offline status

echo; echo "== offline status: preparing $TASKS live tasks + $SESSIONS sessions"
"$bin/bench-state" sessions "$work/state-loaded" "$SESSIONS"
"$bin/bench-state" hold "$work/state-loaded" "$TASKS" "$work/ready" &
holder=$!
for _ in $(seq 300); do [ -e "$work/ready" ] && break; sleep 0.1; done
[ -e "$work/ready" ] || { echo "the task holder never got ready" >&2; exit 1; }
"$bin/bench-manage" --state-dir "$work/state-loaded" offline status
hf status \
    -n empty "$bin/bench-empty" \
    -n status-empty "$bin/bench-manage --state-dir $work/state-empty offline status" \
    -n status-loaded "$bin/bench-manage --state-dir $work/state-loaded offline status"
kill "$holder"; wait "$holder" 2>/dev/null || true; holder=

echo; echo "== diagnostics"
hf breakdown \
    -n empty "$bin/bench-empty" \
    -n linked "$bin/bench-probe" \
    -n +thread "$bin/bench-probe thread" \
    -n +user "$bin/bench-probe user" \
    -n +config "$bin/bench-probe config" \
    -n +open "$bin/bench-probe open $work/state-a" \
    -n version "$bin/bench-manage --version" \
    -n noop "$bin/bench-manage --state-dir $work/state-a noop"
# Only the benchmark's own directory on PATH: what reading PATH costs.
PATH="$work/path" hf help_short_path \
    -n empty "$bin/bench-empty" \
    -n help "$bin/bench-manage --help"

echo; echo "== summary"
python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]

def med(name):
    d = json.load(open(f"{work}/{name}.json"))
    return {r["command"]: r["median"] * 1000 for r in d["results"]}

def cpu(name):
    d = json.load(open(f"{work}/{name}.json"))
    return {r["command"]: (r["user"] + r["system"]) * 1000 for r in d["results"]}

def verdict(ok):
    return "PASS" if ok else "FAIL"

rows = []
m = med("a_noop_vs_empty")
r = m["noop"] / m["empty"]
rows.append(("a  noop vs empty", f"{m['noop']:.2f} / {m['empty']:.2f} ms", f"{r:.2f}x", "<= 1.25x", verdict(r <= 1.25)))
m = med("b_help_vs_empty")
r = m["help"] / m["empty"]
rows.append(("b  --help vs empty", f"{m['help']:.2f} / {m['empty']:.2f} ms", f"{r:.2f}x", "<= 2x", verdict(r <= 2)))
rss = {}
for k in ("empty", "noop", "help", "status"):
    v = [int(x) for x in open(f"{work}/rss_{k}.txt").read().split()]
    rss[k] = (statistics.median(v), max(v))
mib = rss["noop"][1] / 1024
rows.append(("c  peak RSS noop", f"median {rss['noop'][0]:.0f} KiB, max {rss['noop'][1]} KiB", f"{mib:.2f} MiB", "<= 4 MiB", verdict(mib <= 4)))
m = med("d_fat_vs_noop")
r = m["fat-noop"] / m["noop"]
rows.append(("d  fat noop vs noop", f"{m['fat-noop']:.2f} / {m['noop']:.2f} ms", f"{(r - 1) * 100:+.1f}%", "within 10%", verdict(abs(r - 1) <= 0.10)))
m = med("e_external_vs_script")
d = m["external"] - m["script"]
rows.append(("e  external nop vs script", f"{m['external']:.2f} / {m['script']:.2f} ms", f"{d:+.2f} ms", "<= +1.5 ms", verdict(d <= 1.5)))
m = med("status")
for k in ("status-empty", "status-loaded"):
    rows.append((f"11 {k} vs empty", f"{m[k]:.2f} / {m['empty']:.2f} ms", f"{m[k] / m['empty']:.2f}x", "(figures only)", ""))
for line in open(f"{work}/reaction.txt"):
    if line.startswith("reaction ") and "median" in line:
        parts = line.split()
        median = float(parts[parts.index("median") + 1])
        rows.append((f"9  reaction {parts[1]}", " ".join(parts[2:]), f"{median:.2f} ms", "<= 100 ms", verdict(median <= 100)))
for k, (md, mx) in rss.items():
    rows.append((f"   RSS {k}", f"median {md:.0f} KiB, max {mx} KiB", "", "", ""))
w = [max(len(r[i]) for r in rows) for i in range(5)]
for r in rows:
    print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())

print()
print("mean CPU time (user + system) and wall-clock median of each command:")
for name in ("a_noop_vs_empty", "b_help_vs_empty", "d_fat_vs_noop", "e_external_vs_script",
             "status", "breakdown", "help_short_path"):
    m, c = med(name), cpu(name)
    base = next(iter(c))
    print(f"  {name}:")
    for k in c:
        print(f"    {k:14} cpu {c[k]:6.3f} ms ({c[k] / c[base]:.2f}x {base})  wall median {m[k]:6.3f} ms ({m[k] / m[base]:.2f}x)")
PY
