#!/usr/bin/env bash
# Data-plane benchmark: a fresh PostgreSQL database seeded through the project's
# services (v1 active, v2 in canary at 10%), gunicorn as production runs it, and
# wrk against /healthz (the baseline), resolve and execute. See docs/performance.md.
#
# Needs: PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth), Redis at
# 127.0.0.1:6379, wrk, and the project's venv (.venv). Everything is configurable
# through the BENCH_* variables below. Exits non-zero on any non-2xx response or
# socket error.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.venv/bin/python"
GUNICORN="$ROOT/.venv/bin/gunicorn"

DB_NAME="${BENCH_DB_NAME:-canary_bench}"
REDIS_DB="${BENCH_REDIS_DB:-14}"
DURATION="${BENCH_DURATION:-15}"             # seconds per measured wrk run
CONNECTIONS="${BENCH_CONNECTIONS:-32 64}"
THREADS=2
CORES="$(nproc)"
WORKERS="${BENCH_WORKERS:-$((2 * CORES))}"
WORKER_CLASS="${BENCH_WORKER_CLASS:-sync}"
GUNICORN_ARGS="${BENCH_GUNICORN_ARGS:-}"     # extra gunicorn options, e.g. "--threads 4 --keep-alive 5"
NEW_IDS="${BENCH_NEW_IDS:-1000000}"         # distinct user ids of the "new users" runs
WARM_IDS="${BENCH_WARM_IDS:-10000}"          # pre-assigned user ids of the "sticky" runs (0: skip)
PROFILE="${BENCH_PROFILE:-0}"                # 1: py-spy one worker during two extra execute runs
KEEP="${BENCH_KEEP:-0}"                      # 1: keep the database and Redis db after the run
OUT="${BENCH_OUT:-}"                         # a folder to keep wrk outputs, table and profile in
QUIET="${BENCH_WAIT_QUIET:-}"                # e.g. 0.3: on a shared machine, wait before each
QUIET_MAX="${BENCH_WAIT_QUIET_MAX:-600}"     #   measured run until the rest of the machine uses
                                             #   under 0.3 cores (for at most 600 s)

PSQL=(psql -h 127.0.0.1 -p 5432 -U postgres -v ON_ERROR_STOP=1 -q)
REDIS=(redis-cli -h 127.0.0.1 -p 6379 -n "$REDIS_DB")

for tool in psql redis-cli wrk curl; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 2; }
done
[ -x "$PY" ] && [ -x "$GUNICORN" ] || { echo "run.sh: no venv with gunicorn at $ROOT/.venv (make venv)" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/canary-bench.XXXXXX")"
GUNICORN_PID=""
HELPER_PIDS=()   # running cpu.py samplers and py-spy, stopped on exit
untrack() {      # forget a helper once it has been waited for (its pid may be reused)
    local keep=() pid
    for pid in "${HELPER_PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
    HELPER_PIDS=("${keep[@]}")
}

stop_gunicorn() {
    if [ -n "$GUNICORN_PID" ] && kill -0 "$GUNICORN_PID" 2>/dev/null; then
        kill -TERM "$GUNICORN_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$GUNICORN_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$GUNICORN_PID" 2>/dev/null || true
        wait "$GUNICORN_PID" 2>/dev/null || true
    fi
    GUNICORN_PID=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${HELPER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    stop_gunicorn
    if [ -n "$OUT" ]; then
        mkdir -p "$OUT" && cp -r "$WORK"/. "$OUT"/ && echo "outputs kept in $OUT"
    elif [ "$status" -ne 0 ] && [ -f "$WORK/gunicorn.log" ]; then
        echo "--- last lines of the gunicorn log ---" >&2
        tail -n 30 "$WORK/gunicorn.log" >&2
    fi
    if [ "$KEEP" != 1 ]; then
        "${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)" >/dev/null 2>&1 || true
        "${REDIS[@]}" flushdb >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "run.sh: FAILED: $*" >&2; exit 1; }

# --- 1. a fresh database, Redis db and schema --------------------------------
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB_NAME}"
export REDIS_URL="redis://127.0.0.1:6379/${REDIS_DB}"
export DEBUG=0
export SECRET_KEY="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export ALLOWED_HOSTS=127.0.0.1
export DJANGO_SETTINGS_MODULE=canary.settings
# As docs/metrics.md asks of production under gunicorn: one scrape sums every worker.
export PROMETHEUS_MULTIPROC_DIR="$WORK/prometheus"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
cd "$ROOT"

echo "== machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), ${CORES} cores;" \
     "ram: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo);" \
     "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "python: $("$PY" -V 2>&1 | cut -d' ' -f2); postgresql: $("${PSQL[@]}" -Atc 'show server_version' | cut -d' ' -f1);" \
     "redis: $(redis-cli -h 127.0.0.1 -p 6379 info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r');" \
     "wrk: $(wrk -v 2>&1 | head -n1 | awk '{print $2}')"
echo "code: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')" \
     "$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)')"

echo "== database ${DB_NAME}, redis db ${REDIS_DB}"
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)"
"${PSQL[@]}" -c "CREATE DATABASE ${DB_NAME}"
"${REDIS[@]}" flushdb >/dev/null
"$PY" manage.py migrate --noinput >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log"; fail "migrate"; }

# --- 2. seed through the project's own code ----------------------------------
echo "== seed"
TOKEN="$("$PY" manage.py canary_user bench --role approver | tail -n 1)"
[ -n "$TOKEN" ] || fail "no token from canary_user"
"$PY" "$HERE/seed.py" --actor bench --prewarm "$WARM_IDS" --prefix w >"$WORK/seed.env" \
    || fail "seed"
RULESET_ID="$(awk -F= '$1 == "RULESET_ID" {print $2}' "$WORK/seed.env")"
V2_DEPLOYMENT_ID="$(awk -F= '$1 == "V2_DEPLOYMENT_ID" {print $2}' "$WORK/seed.env")"
WARM_V2_SHARE="$(awk -F= '$1 == "WARM_V2_SHARE" {print $2}' "$WORK/seed.env")"
echo "rule set ${RULESET_ID}: v1 active, v2 (deployment ${V2_DEPLOYMENT_ID}) in canary at 10%;" \
     "${WARM_IDS} warm user ids pre-assigned${WARM_V2_SHARE:+ (v2 share ${WARM_V2_SHARE})}"

sql() { "${PSQL[@]}" -d "$DB_NAME" -Atc "$1"; }
assignments() { sql "select count(*) from assignments_assignment where deployment_id = '${V2_DEPLOYMENT_ID}'"; }
logs() { sql "select count(*) from monitoring_executionlog"; }

# --- queries and round-trips per request (in-process, before any load) -------
echo "== cost of one request (in-process; sql = Django queries, pg/redis = round-trips)"
"$PY" "$HERE/roundtrips.py" --ruleset "$RULESET_ID" --token "$TOKEN" --repeat 200 \
    | tee "$WORK/roundtrips.txt" || fail "roundtrips.py"
echo "== the pieces of the hot path (in-process, best of 3 rounds)"
"$PY" "$HERE/components.py" --ruleset "$RULESET_ID" --token "$TOKEN" \
    | tee "$WORK/components.txt" || fail "components.py"

# --- 3. gunicorn as production runs it -----------------------------------------
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:${PORT}"
echo "== gunicorn: ${WORKERS} ${WORKER_CLASS} workers ${GUNICORN_ARGS:+($GUNICORN_ARGS) }on ${BASE}"
"$GUNICORN" canary.wsgi:application --chdir "$ROOT" --bind "127.0.0.1:${PORT}" \
    --workers "$WORKERS" --worker-class "$WORKER_CLASS" $GUNICORN_ARGS \
    --error-logfile "$WORK/gunicorn.log" &
GUNICORN_PID=$!
for _ in $(seq 1 100); do
    kill -0 "$GUNICORN_PID" 2>/dev/null || fail "gunicorn exited during start-up"
    [ "$(pgrep -c -P "$GUNICORN_PID" || true)" -ge "$WORKERS" ] \
        && curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "$BASE/healthz" >/dev/null || fail "/healthz does not answer"

# --- 4. wrk ---------------------------------------------------------------------
export BENCH_DIR="$HERE" RULESET_ID TOKEN
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# Cores busy over the next 3 s, whole machine (/proc/stat: all but idle and iowait).
machine_busy() {
    local a b
    a="$(head -n1 /proc/stat)"; sleep 3; b="$(head -n1 /proc/stat)"
    awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); busy = 0
        for (i = 2; i <= 9; i++) if (i != 5 && i != 6) busy += y[i] - x[i]
        printf "%.2f", busy / hz / 3 }'
}

wait_quiet() {
    [ -n "$QUIET" ] || return 0
    local waited=0 busy
    while :; do
        busy="$(machine_busy)"
        awk -v b="$busy" -v q="$QUIET" 'BEGIN { exit !(b < q) }' && return 0
        waited=$((waited + 3))
        if [ "$waited" -ge "$QUIET_MAX" ]; then
            echo "  (the machine is still busy, ${busy} cores; measuring anyway)"
            return 0
        fi
    done
}

# run_wrk LABEL IDS SCRIPT PATH CONNECTIONS SECONDS [record]
run_wrk() {
    local label=$1 ids=$2 script=$3 path=$4 conns=$5 seconds=$6 record=${7:-}
    local name out before_a before_l wrk_cpu
    name="$(echo "${label}-${ids}-c${conns}" | tr ' /' '__')"
    out="$WORK/wrk-${name}.txt"
    case "$ids" in
        new)  export ID_PREFIX=u ID_SPACE="$NEW_IDS" ;;
        warm) export ID_PREFIX=w ID_SPACE="$WARM_IDS" ;;
        *)    export ID_PREFIX=u ID_SPACE=1 ;;
    esac
    [ -n "$record" ] && wait_quiet
    before_a="$(assignments)"; before_l="$(logs)"
    "$PY" "$HERE/cpu.py" "$GUNICORN_PID" "$DB_NAME" "$((seconds + 5))" >"$out.cpu" &
    local cpu_pid=$!
    HELPER_PIDS+=("$cpu_pid")
    local TIMEFORMAT='%U %S'
    { time wrk -t "$THREADS" -c "$conns" -d "${seconds}s" --timeout 10s --latency \
        -s "$HERE/$script" "${BASE}${path}" >"$out" 2>&1; } 2>"$out.time" \
        || { cat "$out"; fail "wrk ${name}"; }
    kill -TERM "$cpu_pid" 2>/dev/null || true
    wait "$cpu_pid" || true
    untrack "$cpu_pid"
    wrk_cpu="$(awk '{printf "%.2f", $1 + $2}' "$out.time")"
    local line
    line="$(grep '^BENCH ' "$out")" || { cat "$out"; fail "no BENCH line from wrk ${name}"; }
    kv() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
    local requests rps p50 p99 non2xx errors
    requests="$(kv requests)"; rps="$(kv rps)"; p50="$(kv p50_ms)"; p99="$(kv p99_ms)"
    non2xx="$(kv non2xx)"
    errors=$(( $(kv connect_errors) + $(kv read_errors) + $(kv write_errors) + $(kv timeouts) ))
    local new_rows=$(( $(assignments) - before_a )) new_logs=$(( $(logs) - before_l ))
    local cpu
    # Cores busy during the run: gunicorn/postgres/redis/wrk/everything else on the machine.
    cpu="$(awk -v w="$wrk_cpu" -v s="$(kv seconds)" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); c[kv[1]] = kv[2] }
        w = w / s; o = c["machine"] - c["gunicorn"] - c["postgres"] - c["redis"] - w;
        if (o < 0) o = 0;
        printf "%.2f/%.2f/%.2f/%.2f/%.2f", c["gunicorn"], c["postgres"], c["redis"], w, o }' "$out.cpu")"
    if [ -n "$record" ]; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$ids" "$conns" \
            "$requests" "$rps" "$p50" "$p99" "$non2xx" "$errors" "$new_rows" "$new_logs" "$cpu" \
            >>"$RESULTS"
        printf '  %-8s %-5s c=%-3s %9s req/s  p50 %8s ms  p99 %8s ms  non-2xx %s  errors %s\n' \
            "$label" "$ids" "$conns" "$rps" "$p50" "$p99" "$non2xx" "$errors"
    fi
    if [ "$non2xx" != 0 ] || [ "$errors" != 0 ]; then
        cat "$out"
        fail "${name}: ${non2xx} non-2xx responses and ${errors} socket errors"
    fi
}

echo "== warm-up (3 s each, not measured): every worker connects and compiles the rules"
run_wrk healthz - healthz.lua /healthz 8 3
for script in resolve execute; do
    if [ "$WARM_IDS" -gt 0 ]; then
        run_wrk "$script" warm "$script.lua" / 8 3
    else
        run_wrk "$script" new "$script.lua" / 8 3
    fi
done

echo "== measured: ${DURATION} s per run, ${THREADS} wrk threads"
for conns in $CONNECTIONS; do
    run_wrk healthz - healthz.lua /healthz "$conns" "$DURATION" record
done
for script in resolve execute; do
    for conns in $CONNECTIONS; do
        run_wrk "$script" new "$script.lua" / "$conns" "$DURATION" record
    done
done
if [ "$WARM_IDS" -gt 0 ]; then
    for script in resolve execute; do
        for conns in $CONNECTIONS; do
            run_wrk "$script" warm "$script.lua" / "$conns" "$DURATION" record
        done
    done
fi

if [ "$PROFILE" = 1 ]; then
    PYSPY="$ROOT/.venv/bin/py-spy"
    [ -x "$PYSPY" ] || fail "BENCH_PROFILE=1 needs py-spy in the venv (.venv/bin/pip install py-spy)"
    WORKER_PID="$(pgrep -P "$GUNICORN_PID" | head -n1)"
    for ids in warm new; do
        [ "$ids" = warm ] && [ "$WARM_IDS" -eq 0 ] && continue
        echo "== profile: py-spy on worker ${WORKER_PID} during execute (${ids} ids, c=64)"
        wait_quiet
        # Sample from 1 s after wrk starts to 1 s before it ends: load only.
        (
            sleep 1
            exec "$PYSPY" record --pid "$WORKER_PID" --idle --rate 250 --format raw \
                --duration "$((DURATION > 3 ? DURATION - 2 : 1))" \
                --output "$WORK/profile-execute-${ids}.txt" >"$WORK/py-spy-${ids}.log" 2>&1
        ) &
        SPY_PID=$!
        HELPER_PIDS+=("$SPY_PID")
        run_wrk execute "$ids" execute.lua / 64 "$DURATION"
        wait "$SPY_PID" || { untrack "$SPY_PID"; cat "$WORK/py-spy-${ids}.log"; fail "py-spy"; }
        untrack "$SPY_PID"
        "$PY" "$HERE/profile_summary.py" "$WORK/profile-execute-${ids}.txt" \
            | tee "$WORK/profile-execute-${ids}-summary.txt"
    done
fi

# --- 5. the table ---------------------------------------------------------------------
echo
echo "== results (${DURATION} s per run; vs healthz = req/s over /healthz's at the same connections)"
echo "   first-time: new sticky assignments (DB rows) / requests the server handled (wrk's count"
echo "     plus the ~1 request per connection still in flight when wrk stops)"
echo "   app / pg CPU ms/req: CPU time of the gunicorn workers / of PostgreSQL per request"
echo "   other cores: CPU busy outside gunicorn, PostgreSQL, Redis and wrk (other users of the machine)"
awk -F'\t' '
    $1 == "healthz" { base[$3] = $5 }
    { rows[NR] = $0 }
    END {
        printf "| %-8s | %-9s | %5s | %8s | %8s | %8s | %7s | %10s | %10s | %14s | %13s | %11s |\n",
            "endpoint", "user ids", "conns", "req/s", "p50 ms", "p99 ms", "non-2xx",
            "vs healthz", "first-time", "app CPU ms/req", "pg CPU ms/req", "other cores"
        print "|----------|-----------|------:|---------:|---------:|---------:|--------:|-----------:|-----------:|---------------:|--------------:|------------:|"
        for (i = 1; i <= NR; i++) {
            split(rows[i], f, "\t")
            split(f[12], cpu, "/")
            ids = (f[2] == "new") ? "1M random" : (f[2] == "warm") ? "warm set" : "-"
            ratio = (base[f[3]] > 0) ? sprintf("%.2f", f[5] / base[f[3]]) : "-"
            first = (f[1] == "healthz") ? "-" : sprintf("%.1f%%", 100 * f[10] / (f[4] + f[3]))
            printf "| %-8s | %-9s | %5s | %8.1f | %8.2f | %8.2f | %7d | %10s | %10s | %14.2f | %13.2f | %11.2f |\n",
                f[1], ids, f[3], f[5], f[6], f[7], f[8], ratio, first,
                1000 * cpu[1] / f[5], 1000 * cpu[2] / f[5], cpu[5]
        }
    }' "$RESULTS" | tee "$WORK/table.md"
echo
awk -F'\t' '$1 == "execute" { printf "execute %s c=%s: %d requests, %d execution-log rows written\n", $2, $3, $4, $11 }' "$RESULTS"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
