#!/usr/bin/env bash
# Prints the median (and its 95% confidence interval) of every criterion
# benchmark whose id matches the filter (a grep -E pattern; default: the
# benchmarks of maintenance-core/benches/sessions.rs), from the last run's
# target/criterion/*/new/estimates.json. Usage:
#   cargo bench -p maintenance-core --bench sessions
#   benches-cli/criterion-medians.sh ['session|status']
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${CARGO_TARGET_DIR:-$root/target}/criterion
filter=${1:-'session|status'}
find "$dir" -path '*/new/estimates.json' | sort | while read -r f; do
    id=${f#"$dir"/}
    id=${id%/new/estimates.json}
    grep -qE "$filter" <<<"$id" || continue
    python3 - "$f" "$id" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))["median"]
def f(x):
    return f"{x / 1e3:.2f} µs" if x < 1e6 else f"{x / 1e6:.2f} ms"
ci = e["confidence_interval"]
print(f"{sys.argv[2]:45} median {f(e['point_estimate']):>10}  [{f(ci['lower_bound'])}, {f(ci['upper_bound'])}]")
PY
done
