#!/usr/bin/env bash
# A soak: examples/mysite under wrk for SECS seconds while one loop toggles
# the site between ONLINE, OFFLINE and READONLY (forced, drained, timed
# out and then forced) and another starts tracked commands that come and
# go (workers, reports, backups; some long enough to hold `offline on`
# off), on the file backend, on PostgreSQL, or on both at once. Then it
# checks, from what it recorded (bench/soak_report.py):
#
# - every answer is one the docs promise for that request in some mode
#   (no 500, no 404, no socket error on wrk's side), and right after each
#   toggle, a probe of every request kind gets exactly its mode's answer;
# - every toggle and every command exited with a code it may have;
# - the server's file descriptors and RSS, and the state (files and bytes
#   in the state directory; rows and dead rows of the backend's tables on
#   PostgreSQL) stayed flat: the last third of the samples against the
#   first, within the bounds the report prints; the history grew by
#   exactly the entries the toggles made, and nothing was left live.
#
# It prints a table of counts (requests by kind and answer, toggles by
# kind and exit code, commands started, ended and refused, samples) per
# backend and exits 1 when a check failed, naming it.
#
# Usage: bench/soak.sh                      # both backends at once, 300 s
#        SECS=60 BACKEND=file bench/soak.sh
# Knobs (environment):
#   SECS         how long wrk runs on each backend (300)
#   BACKEND      file, postgres or both (both: run side by side)
#   SAMPLE       seconds between samples (2)
#   CONNECTIONS  wrk connections per request kind (2)
#   PORT         the first backend's port (18301; the second takes PORT+1)
#   AWAY         how the layer turns visitors away: redirect (a 303 to the
#                maintenance page, mysite's default) or unavailable (a 503
#                page: `runserver --unavailable`)
#   BIN          a directory holding a built mysite (default: build it,
#                release profile)
#   SOAK_OUT     keep the run's records in this directory (default: a
#                temporary one, removed)
#   RESULTS      the file whose "## Soak" section the tables replace
#                (bench/RESULTS.md; `-`: none)
#   MANAGE_DATABASE_URL  a PostgreSQL server to use (site soak-PID, schema
#                manage); without it a throwaway cluster is started
#                (scripts/pg-cluster) and stopped
#
# Needs wrk, curl, python3; on PostgreSQL psql and, without
# MANAGE_DATABASE_URL, Debian's PostgreSQL 15 binaries (apt-get install
# wrk curl python3 postgresql). Every request goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
secs=${SECS:-300}
backend=${BACKEND:-both}
sample=${SAMPLE:-2}
connections=${CONNECTIONS:-2}
port=${PORT:-18301}
away=${AWAY:-redirect}

say() { echo "soak: $*" >&2; }
case $backend in
    file | postgres | both) ;;
    *) say "BACKEND is file, postgres or both (got $backend)"; exit 2 ;;
esac
server_args=()
case $away in
    redirect) ;;
    unavailable) server_args=(--unavailable) ;;
    *) say "AWAY is redirect or unavailable (got $away)"; exit 2 ;;
esac
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 30 ]; then
    say "SECS is a whole number of seconds, at least 30 (got $secs)"
    exit 2
fi
for tool in wrk curl python3; do
    command -v "$tool" > /dev/null || { say "needs $tool on PATH"; exit 2; }
done
if [ "$backend" != file ]; then
    command -v psql > /dev/null || { say "needs psql on PATH (apt-get install postgresql-client)"; exit 2; }
fi

if [ -n "${BIN:-}" ]; then
    bin=$BIN/mysite
else
    cargo build -q --release -p mysite
    bin=${CARGO_TARGET_DIR:-$repo/target}/release/mysite
fi
[ -x "$bin" ] || { say "no mysite at $bin"; exit 2; }

if [ -n "${SOAK_OUT:-}" ]; then
    work=$SOAK_OUT
    rm -rf "$work"
    mkdir -p "$work"
    keep=true
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
    keep=false
fi
chmod 755 "$work"
pg_dir=""
# The servers, wrk runs and loops this run started (each backend lists
# its own in DIR/pids), the cluster, and the records unless kept.
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local f pid
    for f in "$work"/*/pids; do
        [ -f "$f" ] || continue
        while read -r pid; do kill "$pid" 2> /dev/null || true; done < "$f"
    done
    if [ -n "$pg_dir" ]; then "$repo/scripts/pg-cluster" stop "$pg_dir" > /dev/null 2>&1 || true; fi
    $keep || rm -rf "$work"
}
trap cleanup EXIT
unset MANAGE_STATE_DIR MANAGE_CONFIG MANAGE_TASK

db_url=${MANAGE_DATABASE_URL:-}
if [ "$backend" != file ] && [ -z "$db_url" ]; then
    pg_dir=$work/pg
    db_url=$("$repo/scripts/pg-cluster" start "$pg_dir" 2> /dev/null)
fi
unset MANAGE_DATABASE_URL

now_ms() { date +%s%3N; }

# One HTTP request: prints `STATUS LOCATION` (LOCATION `-` when none);
# with a fourth argument, then how long the answer took in ms.
probe_one() { # url method cookie [timed]
    local url=$1 method=$2 cookie=$3 timed=${4:-}
    local args=(-s -o /dev/null --max-time 30 -w '%{http_code} %{redirect_url}')
    local t0
    t0=$(now_ms)
    [ "$cookie" != - ] && args+=(-H "Cookie: sessionid=$cookie")
    [ "$method" = POST ] && args+=(-X POST -d text=probe)
    local out
    out=$(curl "${args[@]}" "$url" || true)
    out=${out% }
    [[ $out == *" "* ]] || out="$out -"
    # The redirect's path only.
    local status=${out%% *} loc=${out#* }
    loc=${loc#http://127.0.0.1:*/}
    [ "$loc" = - ] || loc=/$loc
    if [ -n "$timed" ]; then echo "$status $loc $(($(now_ms) - t0))"; else echo "$status $loc"; fi
}

# Every request kind once; writes `probe MODE KIND GOT` lines.
probe_all() { # out base mode cookie
    local out=$1 base=$2 mode=$3 cookie=$4
    {
        echo "probe $mode anon-get $(probe_one "$base/" GET -)"
        echo "probe $mode session-get $(probe_one "$base/" GET "$cookie")"
        echo "probe $mode anon-post $(probe_one "$base/notes" POST - timed)"
        echo "probe $mode session-post $(probe_one "$base/notes" POST "$cookie" timed)"
        echo "probe $mode api $(probe_one "$base/api/status" GET -)"
        echo "probe $mode healthz $(probe_one "$base/healthz" GET -)"
    } >> "$out/probes"
}

# The mode as `offline status --exit-code` says it.
mode_now() {
    local code=0
    "$bin" offline status --exit-code > /dev/null 2>&1 || code=$?
    case $code in
        0) echo ONLINE ;; 3) echo PENDING ;; 4) echo OFFLINE ;;
        5) echo READONLY_PENDING ;; 6) echo READONLY ;; *) echo "ERROR($code)" ;;
    esac
}

history_len() {
    "$bin" offline history --json -n 1000000 2> /dev/null | grep -c . || true
}

# The toggle loop, until the deadline: from ONLINE a forced or drained
# `on`, or a forced or drained `on --read-only`; from READONLY `off`, or
# on to OFFLINE; from OFFLINE `off`. A drain that times out (held by a
# long report) is followed by a forced `on`. After each, the probes.
toggler() { # out base cookie deadline_s
    local out=$1 base=$2 cookie=$3 deadline=$4
    local mode=ONLINE kind code r args
    while [ "$(date +%s)" -lt "$deadline" ]; do
        r=$((RANDOM % 4))
        case $mode in
            ONLINE)
                case $r in
                    0) kind=force ;; 1) kind=drain ;; 2) kind=ro-force ;; *) kind=ro-drain ;;
                esac ;;
            READONLY)
                case $r in 0) kind=drain ;; 1) kind=force ;; *) kind=off ;; esac ;;
            *) kind=off ;;
        esac
        while :; do
            case $kind in
                force) args=(offline on --force) ;;
                drain) args=(offline on --grace 1 --timeout 2) ;;
                ro-force) args=(offline on --read-only --force) ;;
                ro-drain) args=(offline on --read-only --timeout 2) ;;
                off) args=(offline off) ;;
            esac
            local before after
            before=$(history_len)
            code=0
            "$bin" "${args[@]}" >> "$out/toggle.log" 2>&1 || code=$?
            after=$(mode_now)
            echo "toggle $kind $mode $code $after $(($(history_len) - before))" >> "$out/toggles"
            # What `on` promises once it returned 0: every layer answers
            # by the new mode. `off` and the ways back promise it within
            # a refresh interval: the probe waits for the page to pass.
            if [ "$code" = 0 ] && [ "$kind" != off ]; then
                probe_all "$out" "$base" "$after" "$cookie"
            elif [ "$after" = ONLINE ] || [ "$after" = READONLY ]; then
                local tries=0
                until [ "$(probe_one "$base/" GET -)" = "200 -" ] || [ $tries -gt 200 ]; do
                    tries=$((tries + 1))
                    sleep 0.05
                done
                # A write waits for a snapshot of the new mode.
                sleep 0.6
                probe_all "$out" "$base" "$after" "$cookie"
            fi
            mode=$after
            # Held off (timed out, or refused by a backup): forced.
            if [ "$code" != 0 ] && [ "$kind" = drain ]; then kind=force; continue; fi
            if [ "$code" != 0 ] && [ "$kind" = ro-drain ]; then kind=ro-force; continue; fi
            break
        done
        sleep "$(awk -v r=$RANDOM 'BEGIN {printf "%.2f", 0.5 + r % 300 / 100}')"
    done
    if [ "$mode" != ONLINE ]; then
        local before
        before=$(history_len)
        code=0
        "$bin" offline off >> "$out/toggle.log" 2>&1 || code=$?
        echo "toggle off $mode $code $(mode_now) $(($(history_len) - before))" >> "$out/toggles"
    fi
    echo "toggler_done 1" >> "$out/start"
}

# The commands that come and go: workers (drain `stop`), reports (read
# only; up to 4 s, so some hold a drain past its timeout) and backups
# (drain `block`: `on` refuses while one runs), at most 3 at once.
tasker() { # out deadline_s
    local out=$1 deadline=$2 r
    while [ "$(date +%s)" -lt "$deadline" ]; do
        while [ "$(jobs -rp | wc -l)" -ge 3 ]; do sleep 0.1; done
        r=$((RANDOM % 10))
        if [ $r -lt 4 ]; then
            set -- worker --jobs $((1 + RANDOM % 4)) --job-ms 200
        elif [ $r -lt 8 ]; then
            set -- report --ms $((200 + RANDOM % 3800))
        else
            set -- backup --ms $((300 + RANDOM % 1200))
        fi
        (
            name=$1
            code=0
            log=$("$bin" "$@" 2>&1) || code=$?
            started=0 ended=0
            [[ $log == *"$name started"* ]] && started=1
            # Its last line: done, or (a worker asked to stop) stopping.
            [[ $log == *"$name done"* || $log == *"worker stopping after"* ]] && ended=1
            printf 'task %s %s %s %s\n' "$name" "$code" "$started" "$ended" >> "$out/tasks"
            [ "$code" = 0 ] || [ "$code" = 75 ] || printf '%s: %s\n' "$*" "$log" >> "$out/task-errors.log"
        ) &
        sleep "$(awk -v r=$RANDOM 'BEGIN {printf "%.2f", 0.2 + r % 80 / 100}')"
    done
    wait
    echo "tasker_done 1" >> "$out/start"
}

# One sample: ms since the start, fds, RSS (KiB), then the state's figures.
sample_state() { # out backend pid t0 url site
    local out=$1 backend=$2 pid=$3 t0=$4 url=$5 site=$6
    local fds rss t
    t=$(($(now_ms) - t0))
    # A file that vanishes while find walks (an fd closed, a session
    # bucket removed) makes find exit 1: that is no failure of the soak.
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2> /dev/null | wc -l || true)
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2> /dev/null || echo 0)
    if [ "$backend" = file ]; then
        # Files and directories, and bytes, apart from the history (which
        # grows by design).
        local files bytes hist
        files=$(find state -mindepth 1 ! -name 'history.jsonl*' 2> /dev/null | wc -l || true)
        bytes=$(find state -mindepth 1 -type f ! -name 'history.jsonl*' -printf '%s\n' 2> /dev/null | awk '{s += $1} END {print s + 0}' || true)
        hist=$(cat state/history.jsonl state/history.jsonl.1 2> /dev/null | grep -c . || true)
        echo "sample $t fds=$fds rss=$rss files=$files bytes=$bytes history=$hist" >> "$out/samples"
    else
        local q row
        q="SELECT 'sessions=' || (SELECT count(*) FROM manage.sessions WHERE site = '$site')
            || ' tasks=' || (SELECT count(*) FROM manage.tasks WHERE site = '$site')
            || ' waiters=' || (SELECT count(*) FROM manage.waiters WHERE site = '$site')
            || ' writes=' || (SELECT count(*) FROM manage.writes WHERE site = '$site')
            || ' instances=' || (SELECT count(*) FROM manage.instances WHERE site = '$site')
            || ' history=' || (SELECT count(*) FROM manage.history WHERE site = '$site')
            || ' ' || coalesce((SELECT string_agg('dead_' || relname || '=' || n_dead_tup, ' ' ORDER BY relname)
                FROM pg_stat_user_tables WHERE schemaname = 'manage'), '')
            || ' bytes=' || (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)
                FROM pg_stat_user_tables WHERE schemaname = 'manage' AND relname <> 'history')"
        row=$(psql "$url" -XAtqc "$q" 2> /dev/null || echo "error=1")
        echo "sample $t fds=$fds rss=$rss $row" >> "$out/samples"
    fi
}

# One backend's soak, its records in DIR.
soak_one() { # backend port dir
    local backend=$1 port=$2 out=$3
    mkdir -p "$out"
    : > "$out/pids"
    : > "$out/probes"
    : > "$out/toggles"
    : > "$out/tasks"
    : > "$out/samples"
    local site="soak-$$"
    cd "$out"
    if [ "$backend" = file ]; then
        printf 'state_dir = "state"\n' > manage.toml
    else
        printf 'backend = "postgres"\ndatabase_url = "%s"\nsite = "%s"\n' "$db_url" "$site" > manage.toml
    fi
    # Sessions count for 30 s after their last touch, not 15 minutes: the
    # sessions the soak's own logins leave behind (buckets on files, rows
    # on PostgreSQL) then reach their steady state within the first third.
    printf 'refresh_interval = "250ms"\nsession_timeout = "30s"\n' >> manage.toml
    local base="http://127.0.0.1:$port"
    "$bin" runserver --addr "127.0.0.1:$port" "${server_args[@]}" > server.log 2>&1 &
    local server=$!
    echo "$server" >> pids
    local tries=0
    until curl -s -o /dev/null "$base/healthz"; do
        tries=$((tries + 1))
        if [ $tries -gt 1200 ] || ! kill -0 "$server" 2> /dev/null; then
            say "$backend: the server did not start:"
            cat server.log >&2
            return 1
        fi
        sleep 0.05
    done
    # Logged-in sessions, made while ONLINE: one for wrk's GETs, one for
    # its POSTs, one for the probes.
    local cookies=()
    for _ in 1 2 3; do
        local c
        c=$(curl -s -i -X POST "$base/login" | awk -F'[=;]' 'tolower($0) ~ /^set-cookie: sessionid=/ {print $2}')
        [ -n "$c" ] || { say "$backend: the login set no session cookie"; return 1; }
        cookies+=("$c")
    done
    local forged
    forged=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "history_start $(history_len)" > start
    local t0 deadline
    t0=$(now_ms)
    deadline=$(($(date +%s) + secs))
    # One wrk per request kind, so each knows what it asked.
    local kinds=("anon-get GET / -" "session-get GET / ${cookies[0]}" "forged-get GET / $forged"
        "anon-post POST /notes -" "session-post POST /notes ${cookies[1]}" "api GET /api/status -")
    local wrks=()
    for k in "${kinds[@]}"; do
        # shellcheck disable=SC2086 # the kind's words
        set -- $k
        SOAK_WRK_OUT=$out/wrk-$1 wrk -t1 -c"$connections" -d"${secs}s" --timeout 30s \
            -s "$repo/bench/web/soak.lua" "$base$3" -- "$2" "$3" "$4" > "wrk-$1.log" 2>&1 &
        wrks+=("$!")
        echo "$!" >> pids
    done
    toggler "$out" "$base" "${cookies[2]}" "$deadline" &
    local tog=$!
    echo "$tog" >> pids
    tasker "$out" "$deadline" &
    local tsk=$!
    echo "$tsk" >> pids
    while [ "$(date +%s)" -lt "$deadline" ]; do
        sample_state "$out" "$backend" "$server" "$t0" "$db_url" "$site"
        sleep "$sample"
    done
    echo "sampler_done 1" >> start
    local failed=0
    for w in "${wrks[@]}"; do wait "$w" || failed=1; done
    wait "$tog" || failed=1
    wait "$tsk" || failed=1
    [ $failed = 0 ] || echo "loop_failed 1" >> start
    # Quiet now: the end state, once nothing runs.
    "$bin" offline off > /dev/null 2>&1 || true
    sleep 1
    sample_state "$out" "$backend" "$server" "$t0" "$db_url" "$site"
    {
        tail -n 1 samples | sed 's/^sample/final/'
        echo "history_end $(history_len)"
        echo "status_end $("$bin" offline status 2>&1 | head -1)"
        # What is live at the end: no task, no writes in flight.
        "$bin" offline status --json 2> /dev/null | python3 -c \
            'import json, sys; s = json.load(sys.stdin); print("live_end", len(s["tasks"]), len(s["writes_in_flight"]))' \
            || echo "live_end unreadable"
        if kill -0 "$server" 2> /dev/null; then echo "server_alive 1"; fi
    } >> start
    kill "$server" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
    python3 "$repo/bench/soak_report.py" "$backend" "$out" "$secs" "$sample" "$away" | tee "$out/report.md"
    return "${PIPESTATUS[0]}"
}

date_line="$(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
status=0
if [ "$backend" = both ]; then
    (soak_one file "$port" "$work/file" > "$work/file.out" 2>&1) &
    a=$!
    (soak_one postgres "$((port + 1))" "$work/postgres" > "$work/postgres.out" 2>&1) &
    b=$!
    wait $a || status=1
    wait $b || status=1
    cat "$work/file.out" "$work/postgres.out"
else
    soak_one "$backend" "$port" "$work/$backend" || status=1
fi
date_line="$date_line; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "$date_line"
if [ $status = 0 ]; then verdict="every check passed"; else verdict="FAILED"; fi
echo "soak: $verdict"
results=${RESULTS:-$repo/bench/RESULTS.md}
if [ "$results" != - ]; then
    # This run's tables replace the file's "## Soak" section (the rest of
    # the file is bench/compare.sh's, which keeps this section).
    {
        # What comes before the section, with one blank line after it.
        if [ -f "$results" ]; then printf '%s\n\n' "$(awk '/^## Soak/ {exit} {print}' "$results")"; fi
        echo "## Soak"
        echo
        echo "Written by \`bench/soak.sh\` (bench/README.md, \"The soak\"): SECS=$secs BACKEND=$backend" \
            "AWAY=$away CONNECTIONS=$connections SAMPLE=$sample. $date_line; $(uname -sr)," \
            "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo). Verdict: $verdict."
        echo
        cat "$work"/*/report.md
    } > "$results.new"
    mv "$results.new" "$results"
    echo "soak: the tables are in $results"
fi
$keep && echo "soak: records kept in $work"
exit $status
