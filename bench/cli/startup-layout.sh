#!/usr/bin/env bash
# Regenerates manage/startup.ld, the linker script that lays out the
# code a runner's start-up runs at the front of .text, in one block, so
# that a start-up maps a few 64 KiB windows of code instead of one for
# every function scattered over the 2.7 MB of .text (each fault ~2 µs).
#
# It traces, with valgrind's callgrind, bench-manage (manage::run() plus
# the tracked no-op) running, in this order of priority:
#
#   offline status      empty state, no manage.toml    (a start-up figure)
#   noop                a tracked registered no-op     (a start-up figure)
#   nop                 an external no-op: runner and keeper
#   --help, --version
#   offline status, noop  again with a manage.toml and a mode record, as
#                        on a real site (after the figures' code)
#
# and writes the functions each ran, those every trace shares first, as
# input-section patterns (`*(.text.<symbol> .text.unlikely.<symbol>)`). A symbol's hash is
# wildcarded when the pattern still names one function, so that the
# script survives what changes the hashes but not the code (a feature or
# a dependency added to the workspace); a generic function whose name
# alone matches several instances keeps its hash. Functions renamed or
# added since the last run are laid out as the linker likes: rerun this
# after changing what start-up runs, and commit manage/startup.ld.
#
# The build scripts of manage, bench-cli and mysite (manage/startup_layout.rs)
# pass the script to the linker (`-T`, `INSERT BEFORE .text`) in release
# builds on Linux. Needs valgrind, python3, nm.
#
#   CARGO_TARGET_DIR=… bench/cli/startup-layout.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
# Linked without the layout: valgrind names no function outside .text (the
# next ordinary build links with the new layout).
MANAGE_STARTUP_LAYOUT=off cargo build --release -p bench-cli
bin=${CARGO_TARGET_DIR:-$root/target}/release/bench-manage

work=$(mktemp -d -p "${TMPDIR:-/tmp}")
# KEEP=1 keeps the traces (and says where) to look at them.
if [ -n "${KEEP:-}" ]; then echo "traces in $work" >&2; else trap 'rm -rf "$work"' EXIT; fi
unset MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK
mkdir "$work/path" "$work/site" "$work/plain"
printf '#!/bin/sh\nexit 0\n' > "$work/path/manage-nop"
chmod +x "$work/path/manage-nop"
export PATH="$work/path:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# trace NAME CMD…: one callgrind profile per process, after a first run
# that creates the state the traced run finds.
trace() {
    local name=$1
    shift
    "$@" >/dev/null 2>&1 || true
    valgrind --tool=callgrind --demangle=no --compress-strings=no \
        --callgrind-out-file="$work/$name.%p.cg" "$@" >/dev/null 2>&1 || true
}
cd "$work/plain"
trace 1-status "$bin" --state-dir "$work/s" offline status
trace 2-noop "$bin" --state-dir "$work/n" noop
trace 3-external "$bin" --state-dir "$work/e" nop
trace 4-help "$bin" --help
trace 5-version "$bin" --version
cd "$work/site"
printf 'state_dir = "state"\nlock_timeout = 30\n\n[commands.nop]\ninstances = "concurrent"\n' > manage.toml
"$bin" offline on --force >/dev/null 2>&1
"$bin" offline off >/dev/null 2>&1
trace 6-status-site "$bin" offline status
trace 7-noop-site "$bin" noop
cd "$root"

python3 - "$bin" "$work" > manage/startup.ld <<'PY'
import collections, glob, os, re, subprocess, sys

binary, work = sys.argv[1], sys.argv[2]
name_of_binary = os.path.basename(binary)

def traced(pattern):
    """The functions of the binary a trace ran, in the order callgrind
    first names them."""
    seen = {}
    for path in sorted(glob.glob(os.path.join(work, pattern))):
        ob = None
        for line in open(path, errors="replace"):
            if line.startswith("ob="):
                ob = line[3:].strip()
            elif line.startswith("fn=") and ob and os.path.basename(ob) == name_of_binary:
                # callgrind marks recursion levels with 'N.
                seen.setdefault(re.sub(r"'\d+$", "", line[3:].strip()), None)
    return list(seen)

names = sorted({os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(work, "*.cg"))})
traces = [(n, traced(n + ".*.cg")) for n in names]
figures = [t for n, t in traces if not n.endswith("-site")]
if len(figures) < 5 or min(len(t) for t in figures) < 50:
    sys.exit("startup-layout: a trace is missing, or names fewer than 50 functions (valgrind "
             "names none outside .text): " + ", ".join(f"{n} {len(t)}" for n, t in traces))

sizes = {}
for line in subprocess.run(["nm", "-S", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    f = line.split()
    if len(f) == 4 and f[2] in "tTwW":
        sizes[f[3]] = int(f[1], 16)

# What runs natively but not under valgrind, which lacks the CPU feature
# it is chosen for: run where its caller runs (mangled name prefixes).
NATIVE_ONLY = [
    # SHA-NI, for the task's join secret.
    ("_ZN4sha26sha2563x8613digest_blocks17h", "_ZN4sha26sha25611compress25617h"),
]
for callee, caller in NATIVE_ONLY:
    extra = [s for s in sizes if s.startswith(callee)]
    for (name, t), seen in zip(traces, [set(t) for _, t in traces]):
        if any(s.startswith(caller) for s in seen):
            t.extend(e for e in extra if e not in seen)

def pattern(symbol):
    """The symbol with its hashes wildcarded (legacy `17h…E`, a v0 crate
    disambiguator, an LLVM clone's `.N`)."""
    p = re.sub(r"17h[0-9a-f]{16}E(\.\d+)?$", "17h*E*", symbol)
    p = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", p)
    return re.sub(r"\.\d+$", "*", p)

by_pattern = collections.Counter(pattern(s) for s in sizes)

# The functions of the first three traces (offline status, the no-op,
# the external no-op) in blocks by which of the three run them, the blocks
# in the order that maps the fewest 64 KiB windows for the three (each
# block's functions in their first trace's order); then the rest, trace
# by trace.
WINDOW = 64 * 1024
sets = [set(t) for _, t in traces]
first = {}
for t in traces:
    for s in t[1]:
        first.setdefault(s, len(first))
known = [s for s in first if s in sizes]
def membership(s):
    return tuple(s in sets[i] for i in range(3))
blocks = collections.defaultdict(list)
rest = []
for s in known:
    m = membership(s)
    (blocks[m] if any(m) else rest).append(s)

def windows(order, start=0):
    """How many windows each of the first three traces touches."""
    touched = [set(), set(), set()]
    at = start
    for s in order:
        size = sizes[s]
        for i in range(3):
            if s in sets[i]:
                touched[i].update(range(at // WINDOW, (at + max(size, 1) - 1) // WINDOW + 1))
        at += size
    return [len(w) for w in touched]

def cost(order):
    # Averaged over where the block may start in its window.
    return sum(sum(windows(order, k * WINDOW // 8)) for k in range(8))

import itertools
keys = sorted(blocks)
best = min(itertools.permutations(keys), key=lambda p: cost([s for k in p for s in blocks[k]]))
order = [s for k in best for s in blocks[k]] + rest
print("startup-layout: windows of 64 KiB for status, no-op, external: "
      f"{windows(order)} (the blocks as callgrind names them: "
      f"{windows(known)})", file=sys.stderr)

lines = []
for s in order:
    if s not in sizes or any(c in s for c in "*?[]"):
        continue
    p = pattern(s)
    lines.append(p if by_pattern[p] == 1 else s)

total = sum(sizes.get(s, 0) for s in order)
print("/* Generated by bench/cli/startup-layout.sh: the code a runner's start-up")
print("   runs, first in .text (see that script). Do not edit; rerun it. */")
print(f"/* {len(lines)} functions, {total // 1024} KiB: " +
      ", ".join(f"{n} {sum(sizes.get(s, 0) for s in t) // 1024} KiB" for n, t in traces) + " */")
print("SECTIONS")
print("{")
print("  .text.startup_order : {")
for p in lines:
    # LLVM puts what it deems cold in .text.unlikely.<symbol>.
    print(f"    *(.text.{p} .text.unlikely.{p})")
print("  }")
print("}")
print("INSERT BEFORE .text;")
PY
sed -n 3p manage/startup.ld
