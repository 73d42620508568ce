#!/usr/bin/env bash
# Side-by-side benchmarks (issue "Prove it"): manage beside Django with
# django-maintenance-mode, beside the floor, and as its state grows, on
# both backends. Prints ONE markdown table (each figure beside its target)
# and writes it, with the machine and the date, to bench/RESULTS.md, and the
# growth plot to bench/growth.png.
#
#   django   whole process (hyperfine medians, GNU time peak RSS):
#            `offline status` / `on --force` / `off` / `--help` vs
#            `manage.py maintenance_mode …` / `help`, ≥ 150× faster;
#            requests/s (wrk, alternated rounds): mysite with and without
#            MaintenanceLayer, Django under gunicorn with and without
#            MaintenanceModeMiddleware, ONLINE and OFFLINE (≥ 0.98 of bare)
#   floor    bench-empty, /bin/true, `flock -n FILE true` next to --help,
#            `offline status`, a tracked registered and external no-op
#            (the speed issue's targets), and PostgreSQL's connection floor
#            next to its no-op and status (floor + 1.5 ms / + 1.0 ms)
#   growth   `offline status` and `offline on --force` at 10 … 100,000
#            live sessions and 1 … 1,000 live tasks, file and PostgreSQL
#
# Django comes from PyPI (bench/requirements.txt, pinned) into a throw-away
# virtualenv in a temporary directory, with a project made there by
# `django-admin startproject` (SQLite, the package's default file backend,
# its state file in the project). PostgreSQL: $MANAGE_DATABASE_URL (its
# max_connections must exceed the most tasks + 50), or a throwaway cluster
# (scripts/pg-cluster) started with max_connections = PG_MAX_CONNECTIONS.
#
# Knobs (environment): RUNS (200: manage's hyperfine runs), DJANGO_RUNS
# (20), DJANGO_WARMUP (3), REF_RUNS (5: the bare `maintenance_mode`),
# RSS_RUNS (20: manage's), WARMUP (10), ROUNDS (5 wrk rounds a mode), SECS
# (3 s a wrk run), CONNECTIONS (16), SERVER_CPU (0), CLIENT_CPU (1), CPU
# (pin the whole-process runs to that CPU), GROWTH_RUNS (10), SESSIONS ("10
# 1000 10000 100000"), TASKS ("1 100 1000"), PG_MAX_CONNECTIONS (1200),
# PARTS ("django floor growth"), OUT (bench/: where RESULTS.md and
# growth.png go), BIN (a directory of built binaries: no cargo build),
# BENCH_TMP (where the temporary directory goes).
# Needs hyperfine, wrk, curl, taskset, GNU time (/usr/bin/time), python3
# with venv and network access to PyPI, and for PostgreSQL Debian's
# postgresql binaries. Takes about 14 minutes with the defaults on 2 busy
# cores (less on a quiet machine), plus the build.
set -euo pipefail

RUNS=${RUNS:-200}
DJANGO_RUNS=${DJANGO_RUNS:-20}
REF_RUNS=${REF_RUNS:-5}
RSS_RUNS=${RSS_RUNS:-20}
WARMUP=${WARMUP:-10}
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-3}
CONNECTIONS=${CONNECTIONS:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
GROWTH_RUNS=${GROWTH_RUNS:-10}
SESSIONS=${SESSIONS:-10 1000 10000 100000}
TASKS=${TASKS:-1 100 1000}
PG_MAX_CONNECTIONS=${PG_MAX_CONNECTIONS:-1200}
PARTS=${PARTS:-django floor growth}
DEBIAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
OUT=${OUT:-$here}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
say() { echo "== [$SECONDS s] $*" >&2; }

for tool in hyperfine wrk curl taskset python3; do
    command -v "$tool" >/dev/null || { echo "compare.sh: needs $tool on PATH" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "compare.sh: needs GNU time (/usr/bin/time)" >&2; exit 2; }
hyperfine=$(command -v hyperfine)
wrk=$(command -v wrk)
python=$(command -v python3)

if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    (cd "$root" && cargo build -q --release -p bench-cli -p mysite --features bench-cli/extra-commands)
    bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
for b in bench-empty bench-manage bench-path-list bench-state bench-pg-floor mysite; do
    [ -x "$bin/$b" ] || { echo "compare.sh: missing $bin/$b" >&2; exit 1; }
done

work=$(mktemp -d -p "${BENCH_TMP:-${TMPDIR:-/tmp}}" bench-compare.XXXXXX)
res=$work/results
mkdir -p "$res"
pids=()
pg_dir=
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$pg_dir" ]; then "$root/scripts/pg-cluster" stop "$pg_dir" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

pin=()
if [ -n "${CPU:-}" ]; then pin=(taskset -c "$CPU"); fi
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc=$(nproc)"
    echo "cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kernel=$(uname -r)"
    echo "fs=$(df --output=fstype "$work" | tail -1 | tr -d ' ')"
    echo "settings=RUNS=$RUNS DJANGO_RUNS=$DJANGO_RUNS RSS_RUNS=$RSS_RUNS ROUNDS=$ROUNDS SECS=$SECS CONNECTIONS=$CONNECTIONS GROWTH_RUNS=$GROWTH_RUNS"
} >"$res/machine.txt"
say "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); work in $work"

# The virtualenv, before PATH is narrowed: Django, the package, gunicorn,
# matplotlib (the table and the plot are drawn with its python).
say "virtualenv from PyPI (bench/requirements.txt)"
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --no-compile -r "$here/requirements.txt"
vpy=$work/venv/bin/python
"$vpy" -c 'import django, maintenance_mode, gunicorn, matplotlib; print("django=" + django.get_version())' >>"$res/machine.txt"
"$work/venv/bin/pip" freeze | sed 's/^/pip:/' >>"$res/machine.txt"

# Every run from here sees the bench's own directory, then a Debian
# server's default PATH (what --help reads); no manage.toml above the
# working directory and no state from the environment.
unset MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK
mkdir "$work/path"
printf '#!/bin/sh\nexit 0\n' >"$work/path/manage-nop"
chmod +x "$work/path/manage-nop"
pg_url=${MANAGE_DATABASE_URL:-}
unset MANAGE_DATABASE_URL
export PATH="$work/path:$DEBIAN_PATH"
cd "$work"
m=("$bin/bench-manage")

hf() { # hf NAME RUNS [hyperfine args…]: one hyperfine run, exported to NAME.json
    local name=$1 runs=$2
    shift 2
    say "$name"
    "${pin[@]}" "$hyperfine" -N --style basic --warmup "$WARMUP" --runs "$runs" \
        --export-json "$res/$name.json" "$@" >&2
}
rss() { # rss NAME CMD…: peak RSS in KiB of RSS_RUNS runs, one a line
    local name=$1
    shift
    for _ in $(seq "$RSS_RUNS"); do
        /usr/bin/time -f '%M' -o "$work/rss.one" "$@" >/dev/null 2>&1 || true
        cat "$work/rss.one"
    done >"$res/rss_$name.txt"
}

# ---------------------------------------------------------------- django
if part django; then
    say "Django project (django-admin startproject, SQLite, migrate)"
    dj=$work/django
    mkdir "$dj"
    (cd "$dj" && "$work/venv/bin/django-admin" startproject djsite .)
    cat "$here/django_settings.py" >>"$dj/djsite/settings.py"
    cp "$here/django_views.py" "$dj/djsite/bench_views.py"
    printf '\nfrom .bench_views import urls as _bench_urls\n\nurlpatterns += _bench_urls\n' >>"$dj/djsite/urls.py"
    (cd "$dj" && "$vpy" manage.py migrate -v 0)
    djm=("$vpy" "$dj/manage.py")
    (cd "$dj" && "${djm[@]}" maintenance_mode off)
    ms=$work/state-cli

    # Whole process. The package has no status verb: `maintenance_mode off`
    # on an OFF site reads the state and, at -v 3, says "already off"; the
    # bare `maintenance_mode` (argparse's usage error, exit 2, after Django
    # has set up) is timed beside it. on/off: each run starts from the other
    # mode (--prepare, not timed: manage's own command, or the package's
    # state file written directly); manage's writes are durable (fsync).
    # Django's peak RSS comes from the timed runs themselves (GNU time
    # wraps each, ~1 ms beside Django's hundreds); manage's from runs of
    # its own, where GNU time would double the wall time.
    djwarm=${DJANGO_WARMUP:-3}
    djrss() { # djrss NAME: GNU time around a Django run, its RSS appended to rss_NAME.all
        echo "/usr/bin/time -f %M -a -o $res/rss_$1.all"
    }
    djstate=$dj/maintenance_mode_state.txt
    cd "$dj"
    hf cli-status-manage "$RUNS" -n manage "${m[*]} --state-dir $ms offline status"
    WARMUP=$djwarm hf cli-status-django "$DJANGO_RUNS" \
        -n django "$(djrss django-status) ${djm[*]} maintenance_mode off -v 3"
    WARMUP=1 hf cli-status-django-bare "$REF_RUNS" -i -n django-bare "${djm[*]} maintenance_mode"
    # `on --force` waits the settle time (twice refresh_interval, 0.5 s by
    # default) before it returns, so that every web layer turns users away
    # by then; the package's middleware reads its file on every request
    # and has no such wait. Timed both ways: the default, and a site whose
    # layers refresh every millisecond (the write, and a 2 ms wait).
    WARMUP=2 hf cli-on-manage "$DJANGO_RUNS" --prepare "${m[*]} --state-dir $ms offline off" \
        -n manage "${m[*]} --state-dir $ms offline on --force"
    fast=("$bin/bench-manage" --config "$work/fast.toml")
    printf 'state_dir = "%s"\nrefresh_interval = "1ms"\n' "$work/state-fast" >"$work/fast.toml"
    hf cli-on-manage-fast "$RUNS" --prepare "${fast[*]} offline off" \
        -n manage "${fast[*]} offline on --force"
    hf cli-off-manage "$RUNS" --prepare "${m[*]} --state-dir $ms offline on --force" \
        -n manage "${m[*]} --state-dir $ms offline off"
    WARMUP=$djwarm hf cli-on-django "$DJANGO_RUNS" --prepare "sh -c 'printf 0 >$djstate'" \
        -n django "$(djrss django-on) ${djm[*]} maintenance_mode on"
    WARMUP=$djwarm hf cli-off-django "$DJANGO_RUNS" --prepare "sh -c 'printf 1 >$djstate'" \
        -n django "$(djrss django-off) ${djm[*]} maintenance_mode off"
    "${m[@]}" --state-dir "$ms" offline off >/dev/null
    "${djm[@]}" maintenance_mode off
    hf cli-help-manage "$RUNS" -n manage "${m[*]} --help"
    WARMUP=$djwarm hf cli-help-django "$DJANGO_RUNS" -n django "$(djrss django-help) ${djm[*]} help"
    for k in status on off help; do # the timed runs, not the warm-up
        tail -n "$DJANGO_RUNS" "$res/rss_django-$k.all" >"$res/rss_django-$k.txt"
    done
    say "peak RSS of manage, $RSS_RUNS runs each"
    rss manage-status "${m[@]}" --state-dir "$ms" offline status
    rss manage-help "${m[@]}" --help
    for _ in $(seq "$RSS_RUNS"); do # on then off, so that each run writes
        /usr/bin/time -f '%M' -a -o "$res/rss_manage-on.txt" "${m[@]}" --state-dir "$ms" offline on --force >/dev/null 2>&1
        /usr/bin/time -f '%M' -a -o "$res/rss_manage-off.txt" "${m[@]}" --state-dir "$ms" offline off >/dev/null 2>&1
    done
    cd "$work"

    # Requests per second. Servers on SERVER_CPU, wrk on CLIENT_CPU;
    # gunicorn: one sync worker (-w 1 -k sync), no access log, the
    # project's WSGI app; mysite: its runserver, one worker thread.
    say "requests/s: $ROUNDS rounds of $SECS s a mode, servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU, $CONNECTIONS connections"
    web=$work/web
    mkdir "$web"
    printf 'state_dir = "state"\nrefresh_interval = "250ms"\n' >"$web/manage.toml"
    wait_up() { # port log: until GET /healthz-ish answers
        local tries=0
        until curl -s -o /dev/null "http://127.0.0.1:$1/"; do
            tries=$((tries + 1))
            if [ "$tries" -gt 600 ]; then
                echo "compare.sh: the server on port $1 did not start:" >&2
                cat "$2" >&2
                exit 1
            fi
            sleep 0.05
        done
    }
    serve_mysite() { # port, flags…
        local port=$1
        shift
        (cd "$web" && exec taskset -c "$SERVER_CPU" "$bin/mysite" runserver --addr "127.0.0.1:$port" "$@") \
            >"$work/server-$port.log" 2>&1 &
        pids+=("$!")
        wait_up "$port" "$work/server-$port.log"
    }
    serve_django() { # port, BENCH_MIDDLEWARE
        local port=$1
        (cd "$dj" && BENCH_MIDDLEWARE=$2 exec taskset -c "$SERVER_CPU" "$work/venv/bin/gunicorn" \
            -w 1 -k sync --bind "127.0.0.1:$port" --log-level warning djsite.wsgi:application) \
            >"$work/server-$port.log" 2>&1 &
        pids+=("$!")
        wait_up "$port" "$work/server-$port.log"
    }
    serve_mysite 18201
    serve_mysite 18202 --without-maintenance
    serve_django 18203 1
    serve_django 18204 0
    servers=(mysite-layer:18201 mysite-bare:18202 django-mw:18203 django-bare:18204)
    rate() { # port: requests/s and non-2xx count, wrk pinned to the client core
        taskset -c "$CLIENT_CPU" "$wrk" -t1 -c"$CONNECTIONS" -d"${SECS}s" "http://127.0.0.1:$1/" |
            awk '/Requests\/sec/ {r = $2} /Non-2xx/ {n = $5} END {printf "%s %s\n", r, n + 0}'
    }
    for s in "${servers[@]}"; do rate "${s#*:}" >/dev/null; done # warm
    rounds() { # mode: ROUNDS rounds, the order reversed every other round
        local mode=$1 r order s out
        for r in $(seq "$ROUNDS"); do
            if [ $((r % 2)) -eq 1 ]; then order=("${servers[@]}"); else
                order=()
                for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[i]}"); done
            fi
            for s in "${order[@]}"; do
                out=$(rate "${s#*:}")
                echo "$mode ${s%%:*} $r $out" >>"$res/wrk.txt"
                say "  $mode round $r ${s%%:*}: $out"
            done
        done
    }
    rounds ONLINE
    (cd "$web" && "$bin/mysite" offline on --force >/dev/null)
    (cd "$dj" && "${djm[@]}" maintenance_mode on)
    code() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/"; }
    # The layer's snapshot shows OFFLINE within one refresh interval; the
    # package reads its file on every request.
    until [ "$(code 18201)" = 303 ]; do sleep 0.05; done
    until [ "$(code 18203)" = 503 ]; do sleep 0.05; done
    rounds OFFLINE
    (cd "$web" && "$bin/mysite" offline off >/dev/null)
    (cd "$dj" && "${djm[@]}" maintenance_mode off)
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
fi

# ---------------------------------------------------- PostgreSQL server
if part floor || part growth; then
    most=0
    for t in $TASKS; do [ "$t" -gt "$most" ] && most=$t; done
    if [ -z "$pg_url" ]; then
        say "PostgreSQL: a throwaway cluster, max_connections = $PG_MAX_CONNECTIONS"
        pg_dir=$(mktemp -d -p "${BENCH_TMP:-${TMPDIR:-/tmp}}" bench-pg.XXXXXX)
        pg_url=$(PG_MAX_CONNECTIONS=$PG_MAX_CONNECTIONS "$root/scripts/pg-cluster" start "$pg_dir")
        echo "pg=throwaway cluster (scripts/pg-cluster), max_connections raised to $PG_MAX_CONNECTIONS for the run" >>"$res/machine.txt"
    else
        echo "pg=\$MANAGE_DATABASE_URL" >>"$res/machine.txt"
    fi
    pgsite() { # dir name: a manage.toml on PostgreSQL, site NAME
        mkdir -p "$1"
        printf 'backend = "postgres"\ndatabase_url = "%s"\nsite = "%s"\n' "$pg_url" "$2" >"$1/manage.toml"
    }
    pgsite "$work/pg" "bench-floor-$$"
    maxc=$(/usr/lib/postgresql/15/bin/psql "$pg_url" -Atc 'SHOW max_connections' 2>/dev/null || echo "unknown")
    echo "pg_max_connections=$maxc" >>"$res/machine.txt"
    if [ "$maxc" != unknown ] && [ "$maxc" -le $((most + 50)) ]; then
        echo "compare.sh: the server's max_connections ($maxc) is too few for $most live tasks" >&2
        exit 2
    fi
fi

# ----------------------------------------------------------------- floor
if part floor; then
    fs=$work/state-floor
    : >"$work/flockfile"
    "${m[@]}" --state-dir "$fs" offline status >/dev/null
    hf floor "$RUNS" \
        -n empty "$bin/bench-empty" \
        -n true /bin/true \
        -n flock "flock -n $work/flockfile true" \
        -n path-list "$bin/bench-path-list" \
        -n script "$work/path/manage-nop" \
        -n help "${m[*]} --help" \
        -n status "${m[*]} --state-dir $fs offline status" \
        -n noop "${m[*]} --state-dir $fs noop" \
        -n external "${m[*]} --state-dir $fs nop"
    pm=("$bin/bench-manage" --config "$work/pg/manage.toml")
    (cd "$work/pg" && "${pm[@]}" offline status >/dev/null) # the schema, made once
    (cd "$work/pg" && hf floor-pg "$RUNS" \
        -n floor "$bin/bench-pg-floor" \
        -n pg-noop "${pm[*]} noop" \
        -n pg-status "${pm[*]} offline status")
fi

# ---------------------------------------------------------------- growth
if part growth; then
    holder=
    stop_holder() {
        if [ -n "$holder" ]; then kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true; fi
        holder=
    }
    point() { # backend kind n: lay out the state, time status and on --force
        local backend=$1 kind=$2 n=$3 target name
        local args=()
        name=$backend-$kind-$n
        # Layers that refresh every millisecond: `on --force`'s settle
        # time (twice that) would hide the work under the default's 0.5 s.
        if [ "$backend" = file ]; then
            mkdir -p "$work/g/$name"
            printf 'state_dir = "%s"\n' "$work/g/$name/state" >"$work/g/$name/manage.toml"
        else
            pgsite "$work/g/$name" "bench-$name-$$"
        fi
        printf 'refresh_interval = "1ms"\n' >>"$work/g/$name/manage.toml"
        target=$work/g/$name/manage.toml
        args=(--config "$target")
        say "growth: $backend, $n live $kind"
        if [ "$kind" = sessions ]; then
            "$bin/bench-state" sessions "$target" "$n"
        else
            rm -f "$work/ready"
            "$bin/bench-state" hold "$target" "$n" "$work/ready" &
            holder=$!
            pids+=("$holder")
            for _ in $(seq 1200); do
                [ -e "$work/ready" ] && break
                kill -0 "$holder" 2>/dev/null || { echo "compare.sh: the task holder failed" >&2; exit 1; }
                sleep 0.1
            done
            [ -e "$work/ready" ] || { echo "compare.sh: the task holder never got ready" >&2; exit 1; }
        fi
        "${m[@]}" "${args[@]}" offline status >"$res/growth-$name.status.txt"
        WARMUP=2 hf "growth-$name" "$GROWTH_RUNS" \
            -n status "${m[*]} ${args[*]} offline status" \
            --prepare "${m[*]} ${args[*]} offline off" \
            -n on "${m[*]} ${args[*]} offline on --force"
        "${m[@]}" "${args[@]}" offline off >/dev/null
        stop_holder
        echo "$backend $kind $n $res/growth-$name.json" >>"$res/growth.txt"
    }
    for backend in file postgres; do
        for n in $SESSIONS; do point "$backend" sessions "$n"; done
        for n in $TASKS; do point "$backend" tasks "$n"; done
    done
fi

say "table"
mkdir -p "$OUT"
"$vpy" "$here/table.py" "$res" "$OUT"
