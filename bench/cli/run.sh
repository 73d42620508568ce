#!/usr/bin/env bash
# Whole-process benchmarks of manage. Builds bench-cli in the release
# profile, then measures, each comparison in ONE hyperfine run (paired,
# side by side, RUNS each):
#
#   status  `offline status`, empty state, vs `bench-empty`    (<= 1.25x)
#   noop    a tracked registered no-op vs `bench-empty`        (<= 1.25x)
#   help    `--help` vs `bench-path-list`, which only lists the
#           manage-* names in the PATH directories              (<= 1.3x)
#   ext     an external no-op (`manage-nop`) vs the script     (<= +1.2 ms)
#   fat     `noop` with 50 extra registered commands vs without (within 5%)
#   rss     peak RSS of a tracked no-op (GNU time, RSS_RUNS)    (<= 4 MiB)
#   loaded  `offline status` with TASKS live tasks + SESSIONS sessions
#           (figures only: the criterion benches hold its targets)
#   reaction  last task's end / a deactivate -> the waiter     (<= 100 ms)
#
# Every run has PATH = the bench's own directory, then the default PATH of
# a Debian server (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:
# /bin), which is what --help reads; no manage.toml above the working
# directory and no state from the environment.
#
# Whole-process times on a shared machine swing by tens of percent between
# runs: with valgrind installed the summary also gives each command's
# instruction count (callgrind, user space), which repeats run to run, and
# its ratio — decide with those, sanity-check with the times. The summary
# also gives each command's page faults (perf stat, mean of 20), which
# repeat too and are most of what start-up costs beyond instructions.
# The binaries are built with manage/startup.ld's layout, as every release
# build is (bench/cli/startup-layout.sh regenerates it).
#
# Prints ONE summary table at the end: each figure, its target, PASS/MISS.
# Knobs (environment): RUNS (300), WARMUP (30), RSS_RUNS (20), SESSIONS
# (10000), TASKS (100), REACTION_RUNS (40; 0 skips it), INSTR (1; 0 skips
# the instruction counts), CPU (a CPU number: pin hyperfine and what it
# runs to it with taskset), BENCH_TMP (where the state directories go:
# ${TMPDIR:-/tmp}). Needs hyperfine, python3 and GNU time (/usr/bin/time).
set -euo pipefail

RUNS=${RUNS:-300}
WARMUP=${WARMUP:-30}
RSS_RUNS=${RSS_RUNS:-20}
SESSIONS=${SESSIONS:-10000}
TASKS=${TASKS:-100}
REACTION_RUNS=${REACTION_RUNS:-40}
INSTR=${INSTR:-1}
DEBIAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release -p bench-cli --features extra-commands
bin=${CARGO_TARGET_DIR:-$root/target}/release
for b in bench-empty bench-manage bench-manage-fat bench-path-list bench-probe bench-state reaction; do
    [ -x "$bin/$b" ] || { echo "missing $bin/$b" >&2; exit 1; }
done
hyperfine=$(command -v hyperfine) || { echo "needs hyperfine" >&2; exit 1; }
# Release builds lay out start-up code first (manage/startup.ld), the empty
# baseline too; say so when a build went without (MANAGE_STARTUP_LAYOUT=off).
for b in bench-manage bench-empty; do
    if ! readelf -S -W "$bin/$b" 2>/dev/null | grep -q '\.text\.startup_order'; then
        echo "note: $b is linked without the start-up layout (manage/startup.ld)" >&2
    fi
done
pin=()
if [ -n "${CPU:-}" ]; then pin=(taskset -c "$CPU"); fi

work=$(mktemp -d -p "${BENCH_TMP:-${TMPDIR:-/tmp}}")
holder=
cleanup() {
    if [ -n "$holder" ]; then kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
unset MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK
mkdir path
printf '#!/bin/sh\nexit 0\n' > path/manage-nop
chmod +x path/manage-nop
export PATH="$work/path:$DEBIAN_PATH"
names=0
for d in ${DEBIAN_PATH//:/ }; do
    n=$( (ls -1A "$d" 2>/dev/null || true) | wc -l)
    names=$((names + n))
done

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); temp dirs on $(df --output=fstype,source "$work" | tail -1)"
echo "== PATH: $PATH ($names names in the Debian directories, as listed; a directory met twice is read once)"

hf() { # hf NAME [hyperfine args…]: one comparison, exported to NAME.json
    local name=$1; shift
    echo; echo "== $name"
    "${pin[@]}" "$hyperfine" -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$work/$name.json" "$@"
}

instr() { # instr NAME CMD…: user-space instructions of one run, into instr.txt
    local name=$1 out="$work/cg.out" n
    shift
    # In a subshell, so a crash of valgrind itself is not reported here.
    (valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$work/cg.err") \
        2>/dev/null || true
    n=$(awk '/^(summary|totals):/ {print $2; exit}' "$out" 2>/dev/null || true)
    # A run valgrind cannot finish (it stopped at rustix's own vDSO lookup
    # before the boot clock went through glibc): the count covers only what
    # came before.
    if grep -q "Process terminating" "$work/cg.err"; then n="$n*"; fi
    if [ -n "$n" ]; then echo "$name $n" >> "$work/instr.txt"; fi
    rm -f "$out" "$work/cg.err"
}

faults() { # faults NAME CMD…: page faults of a run (perf stat, mean of 20), into faults.txt
    local name=$1 n
    shift
    n=$(perf stat -x, -r 20 -e page-faults "$@" 2>&1 >/dev/null | awk -F, '/page-faults/ {print $1; exit}')
    if [ -n "$n" ]; then echo "$name $n" >> "$work/faults.txt"; fi
}

# Each state directory is made by the first run of the comparison's
# warm-up, so the measured runs all see an existing, empty one.
hf status \
    -n empty "$bin/bench-empty" \
    -n status "$bin/bench-manage --state-dir $work/state-s offline status"
hf noop \
    -n empty "$bin/bench-empty" \
    -n noop "$bin/bench-manage --state-dir $work/state-n noop"
hf help \
    -n path-list "$bin/bench-path-list" \
    -n help "$bin/bench-manage --help"
hf ext \
    -n script "$work/path/manage-nop" \
    -n external "$bin/bench-manage --state-dir $work/state-e nop"
# Each its own state directory: neither runs against what the other's
# runs left in the file system.
hf fat \
    -n noop "$bin/bench-manage --state-dir $work/state-f noop" \
    -n fat-noop "$bin/bench-manage-fat --state-dir $work/state-g noop"

echo; echo "== rss: peak RSS, $RSS_RUNS runs each"
rss() { # rss NAME CMD…: peak RSS in KiB of each run, one a line
    local name=$1; shift
    for _ in $(seq "$RSS_RUNS"); do
        /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'
    done > "$work/rss_$name.txt"
    echo "$name: $(sort -n "$work/rss_$name.txt" | tr '\n' ' ')KiB"
}
rss empty "$bin/bench-empty"
rss noop "$bin/bench-manage" --state-dir "$work/state-n" noop
rss status "$bin/bench-manage" --state-dir "$work/state-s" offline status
rss help "$bin/bench-manage" --help

if [ "$INSTR" = 1 ] && command -v valgrind >/dev/null; then
    echo; echo "== instructions (callgrind, user space, one run each)"
    instr empty "$bin/bench-empty"
    instr status "$bin/bench-manage" --state-dir "$work/state-s" offline status
    instr noop "$bin/bench-manage" --state-dir "$work/state-n" noop
    instr path-list "$bin/bench-path-list"
    instr help "$bin/bench-manage" --help
    instr fat-noop "$bin/bench-manage-fat" --state-dir "$work/state-g" noop
    cat "$work/instr.txt" 2>/dev/null || true
fi
if command -v perf >/dev/null; then
    echo; echo "== page faults (perf stat, mean of 20 runs each)"
    faults empty "$bin/bench-empty"
    faults status "$bin/bench-manage" --state-dir "$work/state-s" offline status
    faults noop "$bin/bench-manage" --state-dir "$work/state-n" noop
    faults script "$work/path/manage-nop"
    faults external "$bin/bench-manage" --state-dir "$work/state-e" nop
    faults path-list "$bin/bench-path-list"
    faults help "$bin/bench-manage" --help
    faults fat-noop "$bin/bench-manage-fat" --state-dir "$work/state-g" noop
    cat "$work/faults.txt" 2>/dev/null || true
fi

echo; echo "== loaded: preparing $TASKS live tasks + $SESSIONS sessions"
"$bin/bench-state" sessions "$work/state-loaded" "$SESSIONS"
"$bin/bench-state" hold "$work/state-loaded" "$TASKS" "$work/ready" &
holder=$!
for _ in $(seq 300); do [ -e "$work/ready" ] && break; sleep 0.1; done
[ -e "$work/ready" ] || { echo "the task holder never got ready" >&2; exit 1; }
"$bin/bench-manage" --state-dir "$work/state-loaded" offline status
hf loaded \
    -n empty "$bin/bench-empty" \
    -n status-loaded "$bin/bench-manage --state-dir $work/state-loaded offline status"
kill "$holder"; wait "$holder" 2>/dev/null || true; holder=

echo; echo "== diagnostics: start-up costs one at a time (bench-probe)"
hf breakdown \
    -n empty "$bin/bench-empty" \
    -n linked "$bin/bench-probe" \
    -n +thread "$bin/bench-probe thread" \
    -n +user "$bin/bench-probe user" \
    -n +config "$bin/bench-probe config" \
    -n +open "$bin/bench-probe open $work/state-n" \
    -n version "$bin/bench-manage --version" \
    -n noop "$bin/bench-manage --state-dir $work/state-n noop"

if [ "$REACTION_RUNS" -gt 0 ]; then
    echo; echo "== reaction"
    "$bin/reaction" "$REACTION_RUNS" | tee "$work/reaction.txt"
fi

echo; echo "== summary (medians of $RUNS paired runs; load now $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$work" <<'PY'
import json, os, statistics, sys
work = sys.argv[1]

def med(name):
    d = json.load(open(f"{work}/{name}.json"))
    return {r["command"]: r["median"] * 1000 for r in d["results"]}

def cpu(name):
    d = json.load(open(f"{work}/{name}.json"))
    return {r["command"]: (r["user"] + r["system"]) * 1000 for r in d["results"]}

instr = {}
partial = set()
if os.path.exists(f"{work}/instr.txt"):
    for line in open(f"{work}/instr.txt"):
        k, v = line.split()
        if v.endswith("*"):
            partial.add(k)
        instr[k] = int(v.rstrip("*"))

faults = {}
if os.path.exists(f"{work}/faults.txt"):
    for line in open(f"{work}/faults.txt"):
        k, v = line.split()
        faults[k] = float(v)

def pf(a, b):
    if a in faults and b in faults:
        return f"{faults[a]:.0f} / {faults[b]:.0f}"
    return ""

def ir(a, b):
    if a in instr and b in instr:
        mark = lambda k: "*" if k in partial else ""
        return (f"{instr[a] / 1e3:.0f}k{mark(a)} / {instr[b] / 1e3:.0f}k{mark(b)} = "
                f"{instr[a] / instr[b]:.2f}x")
    return ""

def verdict(ok):
    return "PASS" if ok else "MISS"

rows = [("figure", "measured (ms)", "result", "target", "", "instructions", "page faults")]
def ratio(label, name, a, b, limit):
    m = med(name)
    r = m[a] / m[b]
    rows.append((label, f"{m[a]:.3f} / {m[b]:.3f}", f"{r:.2f}x", f"<= {limit}x",
                 verdict(r <= limit), ir(a, b), pf(a, b)))

ratio("offline status, empty state, vs empty binary", "status", "status", "empty", 1.25)
ratio("tracked registered no-op vs empty binary", "noop", "noop", "empty", 1.25)
ratio("--help vs listing manage-* on PATH", "help", "help", "path-list", 1.3)
m = med("ext")
d = m["external"] - m["script"]
rows.append(("tracked external no-op vs the script", f"{m['external']:.3f} / {m['script']:.3f}",
             f"{d:+.2f} ms", "<= +1.2 ms", verdict(d <= 1.2), "", pf("external", "script")))
m = med("fat")
r = m["fat-noop"] / m["noop"] - 1
rows.append(("no-op with 50 extra commands vs without", f"{m['fat-noop']:.3f} / {m['noop']:.3f}",
             f"{r * 100:+.1f}%", "within 5%", verdict(abs(r) <= 0.05), ir("fat-noop", "noop"),
             pf("fat-noop", "noop")))
rss = {}
for k in ("empty", "noop", "status", "help"):
    v = [int(x) for x in open(f"{work}/rss_{k}.txt").read().split()]
    rss[k] = (statistics.median(v), max(v))
mib = rss["noop"][1] / 1024
rows.append(("peak RSS of a tracked no-op (max of runs)", f"median {rss['noop'][0]:.0f} KiB",
             f"{mib:.2f} MiB", "<= 4 MiB", verdict(mib <= 4), ""))
m = med("loaded")
rows.append(("offline status, tasks + sessions, vs empty", f"{m['status-loaded']:.3f} / {m['empty']:.3f}",
             f"{m['status-loaded'] / m['empty']:.2f}x", "(figure only)", "", ""))
if os.path.exists(f"{work}/reaction.txt"):
    for line in open(f"{work}/reaction.txt"):
        if line.startswith("reaction ") and "median" in line:
            parts = line.split()
            median = float(parts[parts.index("median") + 1])
            rows.append((f"reaction: {parts[1]}", " ".join(parts[2:6]), f"{median:.2f} ms",
                         "<= 100 ms", verdict(median <= 100), ""))
rows = [tuple(r) + ("",) * (len(rows[0]) - len(r)) for r in rows]
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for i, r in enumerate(rows):
    print("  ".join(c.ljust(w[j]) for j, c in enumerate(r)).rstrip())
    if i == 0:
        print("  ".join("-" * w[j] for j in range(len(w))))

if partial:
    print("* valgrind stopped that run early: the count is a floor")
print()
print("peak RSS, median / max of runs: " +
      ", ".join(f"{k} {md:.0f}/{mx} KiB" for k, (md, mx) in rss.items()))
print()
print("mean CPU time (user + system) and wall-clock median of each command:")
for name in ("status", "noop", "help", "ext", "fat", "loaded", "breakdown"):
    m, c = med(name), cpu(name)
    base = next(iter(c))
    print(f"  {name}:")
    for k in c:
        print(f"    {k:14} cpu {c[k]:6.3f} ms ({c[k] / c[base]:.2f}x {base})  "
              f"wall median {m[k]:6.3f} ms ({m[k] / m[base]:.2f}x)")
PY
