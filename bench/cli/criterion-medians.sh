#!/usr/bin/env bash
# Prints the criterion figures of the performance targets as one table —
# each figure's median beside its target, and whether it meets it — then
# the median (and its 95% confidence interval) of every benchmark whose id
# matches the filter (a grep -E pattern; default: all), from the last run
# of each benchmark (target/criterion/**/new/). Usage:
#   cargo bench -p maintenance-core --bench core -- task/
#   cargo bench -p maintenance-core --bench sessions -- status/
#   cargo bench -p maintenance-core --features tower --bench layer
#   bench/cli/criterion-medians.sh ['filter']
# Benchmarks run with BENCH_CLOCK=cpu (the thread's CPU time, for a busy
# machine) have ids ending in `@cpu`; the table shows those as rows of
# their own. A figure never run shows `not run` and the command that runs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${CARGO_TARGET_DIR:-$root/target}/criterion
filter=${1:-.}
[ -d "$dir" ] || { echo "no criterion results in $dir: run the benches first (see the top of $0)" >&2; exit 1; }
python3 - "$dir" "$filter" <<'PY'
import json, os, re, sys

root, pattern = sys.argv[1], re.compile(sys.argv[2])

# Every benchmark of the last runs: its full id (as the bench names it,
# e.g. `task/start_drop/single`), its median and the median's interval (ns).
results = {}
for base, dirs, files in os.walk(root):
    if os.path.basename(base) != "new" or "estimates.json" not in files:
        continue
    try:
        with open(os.path.join(base, "benchmark.json")) as f:
            full_id = json.load(f)["full_id"]
        with open(os.path.join(base, "estimates.json")) as f:
            m = json.load(f)["median"]
    except (OSError, KeyError, ValueError) as e:
        print(f"skipping {base}: {e}", file=sys.stderr)
        continue
    ci = m["confidence_interval"]
    results[full_id] = (m["point_estimate"], ci["lower_bound"], ci["upper_bound"])

def fmt(ns):
    if abs(ns) < 1e3:
        return f"{ns:.0f} ns"
    if abs(ns) < 1e6:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns / 1e6:.2f} ms"

CORE = "cargo bench -p maintenance-core --bench core -- task/"
SESSIONS = "cargo bench -p maintenance-core --bench sessions -- status/"
LAYER = "cargo bench -p maintenance-core --features tower --bench layer"
# (figure, ids whose median is the figure (a second id is subtracted: an
# added cost), target in ns, how to run it). The ids are those of
# maintenance-core/benches/{core,sessions,layer}.rs.
FIGURES = [
    ("CommandTask start + drop (single)", ["task/start_drop/single"], 40e3, CORE),
    ("CommandTask start + drop (concurrent)", ["task/start_drop/concurrent"], 40e3, CORE),
    ("status, 100 tasks + 100,000 sessions", ["status/100_tasks/100000"], 40e6, SESSIONS),
    ("status, 100 tasks + 10,000 sessions", ["status/100_tasks/10000"], 5e6, SESSIONS),
    ("layer ONLINE, known session: added cost",
     ["layer/online, known session", "layer/empty service alone, request with a cookie"],
     100, LAYER),
]

def cpu_id(i):
    # `group/function` → `group@cpu/function`, as the benches name them.
    group, _, function = i.rpartition("/")
    return f"{group}@cpu/{function}"

rows = []
for label, ids, target, how in FIGURES:
    for clock, wanted in (("wall", ids), ("CPU", [cpu_id(i) for i in ids])):
        got = [results.get(i) for i in wanted]
        if any(g is None for g in got):
            if clock == "wall":
                rows.append((label, clock, "not run", "", f"≤ {fmt(target)}", f"run: {how}"))
            continue
        median = got[0][0] - (got[1][0] if len(got) > 1 else 0)
        if len(got) > 1:
            interval = f"{fmt(got[0][0])} − {fmt(got[1][0])}"
        else:
            interval = f"[{fmt(got[0][1])}, {fmt(got[0][2])}]"
        verdict = "pass" if median <= target else "MISS"
        rows.append((label, clock, fmt(median), interval, f"≤ {fmt(target)}", verdict))

head = ("figure", "clock", "median", "95% CI / parts", "target", "")
widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
print(line(head))
print(line(tuple("-" * w for w in widths)))
for r in rows:
    print(line(r))

print()
print(f"every benchmark matching {pattern.pattern!r}:")
for i in sorted(results):
    if pattern.search(i):
        p, lo, hi = results[i]
        print(f"  {i:60} median {fmt(p):>10}  [{fmt(lo)}, {fmt(hi)}]")
PY
