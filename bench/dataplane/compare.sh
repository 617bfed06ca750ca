#!/usr/bin/env bash
# Canary's data plane against the peer (Unleash 8.2's /api/frontend), in one run.
#
# 1. Canary the production way (scripts/serve.sh: granian, WEB_WORKERS workers) on
#    a fresh PostgreSQL database and Redis db, seeded through the project's own
#    services: a rule set of ten CEL rules, v1 active, v2 in canary at 10%.
# 2. wrk (THREADS threads, CONNS connections, DURATION s, a million user ids) on
#    resolve and on execute (a canary execute that writes its execution log).
#    Canary is stopped, then
# 3. the peer with ../shared/peers/unleash/run_peer.sh, same wrk settings, the
#    same question (which version does this user get: a 10% rollout with
#    userId stickiness).
# 4. Prints both and the ratios (Canary req/s over the peer's; p99s side by side).
#
# Knobs: SERVER=gunicorn (3 sync workers instead of granian) PROFILE=1 (py-spy on one worker during the measured runs) DURATION=15 CONNS=32 THREADS=2 WEB_WORKERS=<cpus> WEB_THREADS=2 NEW_IDS=1000000
#        BENCH_DB_NAME=canary_compare BENCH_REDIS_DB=14 SKIP_PEER=1 OUT=dir SETTLE=10
#        SHADOW_PERCENTAGE=0 (the canary's shadow_percentage; default 100: paired evaluation on)
#        CAPTURE_ROUNDS=2 (rounds of execute with capture off and at 1% after the canary is
#        rolled back; 0 skips them)
#        (seconds between the two turns, once Canary's database is dropped)
# Exits non-zero on any non-2xx answer or socket error from Canary.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEER="${PEER_SCRIPT:-$ROOT/../shared/peers/unleash/run_peer.sh}"
PY="$ROOT/.venv/bin/python"
DURATION="${DURATION:-15}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-2}"
NEW_IDS="${NEW_IDS:-1000000}"
DB_NAME="${BENCH_DB_NAME:-canary_compare}"
REDIS_DB="${BENCH_REDIS_DB:-14}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/canary-compare.XXXXXX")}"
mkdir -p "$OUT"

for tool in psql redis-cli wrk curl; do
    command -v "$tool" >/dev/null || { echo "compare.sh: $tool is not installed" >&2; exit 2; }
done
[ -x "$PY" ] || { echo "compare.sh: no venv at $ROOT/.venv (make venv)" >&2; exit 2; }

PSQL=(psql -h 127.0.0.1 -p 5432 -U postgres -v ON_ERROR_STOP=1 -q)
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    local status=$?
    stop_server
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -n "$REDIS_DB" flushdb >/dev/null 2>&1 || true
    echo "outputs in $OUT"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//');" \
     "load $(cut -d' ' -f1-3 /proc/loadavg); code $(git -C "$ROOT" rev-parse --short HEAD)" \
     "$(git -C "$ROOT" status --porcelain | grep -q . && echo '(uncommitted changes)')"

# --- 1. Canary ---------------------------------------------------------------------
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB_NAME}"
export REDIS_URL="redis://127.0.0.1:6379/${REDIS_DB}"
export DEBUG=0 ALLOWED_HOSTS=127.0.0.1 LOG_LEVEL=WARNING
export SECRET_KEY="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export DJANGO_SETTINGS_MODULE=canary.settings_production SECURE_SSL_REDIRECT=false
# One client token sends everything: the per-client limit must not be what is measured.
export CANARY_DATAPLANE_RATE="${CANARY_DATAPLANE_RATE:-100000000/minute}"
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)" -c "CREATE DATABASE ${DB_NAME}"
redis-cli -n "$REDIS_DB" flushdb >/dev/null
cd "$ROOT"
"$PY" manage.py migrate --noinput >"$OUT/migrate.log" 2>&1 || { cat "$OUT/migrate.log"; exit 1; }
TOKEN="$("$PY" manage.py canary_user bench --role approver | tail -n 1)"
"$PY" "$HERE/seed.py" --actor bench --prewarm 0 --prefix w >"$OUT/seed.env"
RULESET_ID="$(awk -F= '$1 == "RULESET_ID" {print $2}' "$OUT/seed.env")"
V2_DEPLOYMENT_ID="$(awk -F= '$1 == "V2_DEPLOYMENT_ID" {print $2}' "$OUT/seed.env")"

echo "== in-process CPU per request (no server, no load generator)"
"$PY" "$HERE/inprocess.py" --ruleset "$RULESET_ID" --token "$TOKEN" --requests "${INPROCESS_REQUESTS:-3000}" \
    | tee "$OUT/inprocess.txt" | sed 's/^/  /'

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:${PORT}"
export PROMETHEUS_MULTIPROC_DIR="$OUT/prometheus"
if [ "${SERVER:-granian}" = gunicorn ]; then
    # The other production server the project supports: gunicorn's sync workers.
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    "$ROOT/.venv/bin/gunicorn" canary.wsgi:application --bind "127.0.0.1:${PORT}" \
        --workers "${WEB_WORKERS:-3}" >"$OUT/server.log" 2>&1 &
else
    CANARY_BIND="127.0.0.1:${PORT}" CANARY_SERVE_MIGRATE=0 "$ROOT/scripts/serve.sh" \
        >"$OUT/server.log" 2>&1 &
fi
SERVER_PID=$!
for _ in $(seq 1 150); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$BASE/healthz" >/dev/null || { cat "$OUT/server.log"; exit 1; }
echo "== canary: ${SERVER:-granian} ${WEB_WORKERS:-$(nproc)} workers x ${WEB_THREADS:-2} threads on $BASE; rule set $RULESET_ID, v2 at 10%"

export BENCH_DIR="$HERE" RULESET_ID TOKEN ID_PREFIX=u ID_SPACE="$NEW_IDS"
declare -A RPS P99
EXECUTED=0  # executes wrk saw answered (warm-up included)
canary_wrk() {  # name script seconds [record]
    local out="$OUT/wrk-$1-$3s.txt" line spy=""
    if [ -n "${4:-}" ] && [ "${PROFILE:-0}" = 1 ]; then
        # py-spy (not a project dependency: .venv/bin/pip install py-spy) on one worker.
        "$ROOT/.venv/bin/py-spy" record --pid "$(pgrep -P "$SERVER_PID" | head -n1)" \
            --rate 200 --format raw --duration "$(( $3 - 2 ))" --output "$OUT/profile-$1.txt" \
            >"$OUT/py-spy-$1.log" 2>&1 &
        spy=$!
    fi
    local cpu_pid=""
    if [ -n "${4:-}" ]; then
        "$PY" "$HERE/cpu.py" "$SERVER_PID" "$DB_NAME" "$(( $3 + 5 ))" >"$out.cpu" &
        cpu_pid=$!
    fi
    wrk -t "$THREADS" -c "$CONNS" -d "${3}s" --timeout 10s --latency -s "$HERE/$2" "$BASE/" >"$out" 2>&1
    [ -z "$cpu_pid" ] || { kill -TERM "$cpu_pid" 2>/dev/null; wait "$cpu_pid" || true; }
    [ -z "$spy" ] || wait "$spy" || true
    line="$(grep '^BENCH ' "$out")" || { cat "$out"; exit 1; }
    kv() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
    local bad=$(( $(kv non2xx) + $(kv connect_errors) + $(kv read_errors) + $(kv write_errors) + $(kv timeouts) ))
    [ "$bad" -eq 0 ] || { cat "$out"; echo "compare.sh: $1: $bad failed requests" >&2; exit 1; }
    [ "$1" != execute ] || EXECUTED=$(( EXECUTED + $(kv requests) ))
    if [ -n "${4:-}" ]; then
        RPS[$1]="$(kv rps)"; P99[$1]="$(kv p99_ms)"
        echo "  canary $1 c=$CONNS t=$THREADS ${3}s: rps=$(kv rps) p50_ms=$(kv p50_ms) p99_ms=$(kv p99_ms) requests=$(kv requests) cores: $(cat "$out.cpu")"
    fi
}
canary_wrk resolve resolve.lua 3      # warm-up: every worker connects and compiles
canary_wrk execute execute.lua 3
canary_wrk resolve resolve.lua "$DURATION" record
canary_wrk execute execute.lua "$DURATION" record

# --- 1b. capture on and off (SPEC 10.2): executes served by the active version, no canary ---
# The canary is rolled back, then capture_percentage alternates 0 and 1 (CAPTURE_ROUNDS
# rounds each, DURATION s each, interleaved so the machine's drift hits both alike).
if [ "${CAPTURE_ROUNDS:-2}" -gt 0 ]; then
    curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"reason": "bench: measure capture without a canary"}' \
        "$BASE/api/v1/deployments/$V2_DEPLOYMENT_ID/rollback"
    set_capture() {
        "$PY" -c "import django; django.setup(); from deployments import services; \
services.ruleset_update(ruleset_id='$RULESET_ID', capture_percentage=$1, actor='bench')"
        sleep 1
    }
    declare -A CAPTURE_SUM=([0]=0 [1]=0)
    for round in $(seq 1 "${CAPTURE_ROUNDS:-2}"); do
        for pct in 0 1; do
            set_capture "$pct"
            canary_wrk capturewarm execute.lua 3  # warm-up at the new setting
            canary_wrk "capture$pct" execute.lua "$DURATION" record
            # CPU per request, which the machine's other load hardly moves (wall time does).
            "$PY" "$HERE/inprocess.py" --ruleset "$RULESET_ID" --token "$TOKEN" --verbs execute \
                --requests "${INPROCESS_REQUESTS:-3000}" | grep '^execute' | sed "s/^/  capture $pct%: in process, /"
            CAPTURE_SUM[$pct]="$(awk -v a="${CAPTURE_SUM[$pct]}" -v b="${RPS[capture$pct]}" 'BEGIN { print a + b }')"
        done
    done
    captured="$("${PSQL[@]}" -d "$DB_NAME" -Atc "select count(*) from monitoring_capturedinput")"
    awk -v off="${CAPTURE_SUM[0]}" -v on="${CAPTURE_SUM[1]}" -v r="${CAPTURE_ROUNDS:-2}" -v n="$captured" \
        'BEGIN { printf "  capture: execute without a canary, %d rounds: %.0f req/s off, %.0f req/s at 1%% (%.1f%% cost); %d inputs captured (drained so far)\n", r, off / r, on / r, (1 - on / off) * 100, n }'
    set_capture 0
fi
logs_before_drain="$("${PSQL[@]}" -d "$DB_NAME" -Atc "select count(*) from monitoring_executionlog")"
stop_server
# Whatever the web workers had not drained yet is written now (drain_now), then counted.
"$PY" -c "import django; django.setup(); from assignments.buffer import drain_now; drain_now()"
logs="$("${PSQL[@]}" -d "$DB_NAME" -Atc "select count(*) from monitoring_executionlog where deployment_id = '$V2_DEPLOYMENT_ID' and user_id like 'u%'")"
assigned="$("${PSQL[@]}" -d "$DB_NAME" -Atc "select count(*) from assignments_assignment where deployment_id = '$V2_DEPLOYMENT_ID'")"
echo "  execution-log rows of wrk's executes: $logs for $EXECUTED answered ($logs_before_drain rows in all" \
     "were drained when the server stopped); assignments: $assigned"
# Every answered execute is logged; a request cut off when wrk stopped may be logged
# without wrk counting its answer (at most one per connection and run).
if [ "$logs" -lt "$EXECUTED" ] || [ "$logs" -gt $(( EXECUTED + 2 * CONNS )) ]; then
    echo "compare.sh: $EXECUTED answered executes but $logs log rows" >&2
    exit 1
fi
# Nothing of Canary's may run during the peer's turn (autovacuum of these tables).
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)" >/dev/null
redis-cli -n "$REDIS_DB" flushdb >/dev/null
sleep "${SETTLE:-10}"

# --- 2. the peer -------------------------------------------------------------------------
if [ "${SKIP_PEER:-0}" = 1 ]; then
    echo "== peer skipped (SKIP_PEER=1)"
    exit 0
fi
echo "== peer: Unleash 8.2 /api/frontend ($PEER)"
DURATION="$DURATION" CONNS="$CONNS" THREADS="$THREADS" bash "$PEER" >"$OUT/peer.log" 2>&1 \
    || { tail -n 30 "$OUT/peer.log"; exit 1; }
peer_line="$(grep "frontend c=$CONNS " "$OUT/peer.log" | tail -n 1)"
[ -n "$peer_line" ] || { tail -n 30 "$OUT/peer.log"; echo "compare.sh: no peer result" >&2; exit 1; }
peer() { echo "$peer_line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
PEER_RPS="$(peer rps)"; PEER_P99="$(peer p99_ms)"
echo "  peer frontend c=$CONNS t=$THREADS ${DURATION}s: rps=$PEER_RPS p50_ms=$(peer p50_ms) p99_ms=$PEER_P99 ($(peer unleash_cpu) cpu)"

# --- 3. ratios -----------------------------------------------------------------------------
echo
echo "| endpoint | canary req/s | peer req/s | ratio | canary p99 ms | peer p99 ms |"
echo "|---|---:|---:|---:|---:|---:|"
for name in resolve execute; do
    awk -v n="$name" -v c="${RPS[$name]}" -v p="$PEER_RPS" -v cp="${P99[$name]}" -v pp="$PEER_P99" \
        'BEGIN { printf "| %s | %.0f | %.0f | %.2fx | %.1f | %.1f |\n", n, c, p, c / p, cp, pp }'
done
