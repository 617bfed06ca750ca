#!/usr/bin/env bash
# OFREP against resolve in one run, on the production server (scripts/serve.sh: granian).
#
# 1. A fresh PostgreSQL database and Redis db, seeded by seed.py (a rule set of ten CEL
#    rules, v1 active, v2 in canary at 10%); the flag key is the rule set's name.
# 2. WARM user ids answered by the bulk endpoint twice each (their decisions stored),
#    their ETags kept in etags.txt.
# 3. wrk, ROUNDS times in turn: resolve and OFREP's single-flag evaluation on random
#    ids out of NEW_IDS (the same question), then resolve and the bulk endpoint's 304
#    (If-None-Match: the ETag) on the WARM ids (what a polling web provider sends).
# 4. Prints req/s and p99 per round and the ratios of the rounds' means. Before the
#    server starts, ofrep_inprocess.py gives the same four as CPU per request in-process
#    (far steadier than req/s on a shared machine).
#
# Knobs: DURATION=10 CONNS=32 THREADS=2 WEB_WORKERS=3 NEW_IDS=1000000 WARM=1000 ROUNDS=2
#        BENCH_DB_NAME=canary_ofrep BENCH_REDIS_DB=14 OUT=dir
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="$ROOT/.venv/bin/python"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-32}"
THREADS="${THREADS:-2}"
NEW_IDS="${NEW_IDS:-1000000}"
WARM="${WARM:-1000}"
ROUNDS="${ROUNDS:-2}"
DB_NAME="${BENCH_DB_NAME:-canary_ofrep}"
REDIS_DB="${BENCH_REDIS_DB:-14}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/canary-ofrep.XXXXXX")}"
mkdir -p "$OUT"

for tool in psql redis-cli wrk curl; do
    command -v "$tool" >/dev/null || { echo "ofrep.sh: $tool is not installed" >&2; exit 2; }
done
PSQL=(psql -h 127.0.0.1 -p 5432 -U postgres -v ON_ERROR_STOP=1 -q)
SERVER_PID=""
cleanup() {
    local status=$?
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -n "$REDIS_DB" flushdb >/dev/null 2>&1 || true
    echo "outputs in $OUT"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg);" \
     "code $(git -C "$ROOT" rev-parse --short HEAD)"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB_NAME}"
export REDIS_URL="redis://127.0.0.1:6379/${REDIS_DB}"
export DEBUG=0 ALLOWED_HOSTS=127.0.0.1 LOG_LEVEL=WARNING
export SECRET_KEY="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export DJANGO_SETTINGS_MODULE=canary.settings_production SECURE_SSL_REDIRECT=false
export CANARY_DATAPLANE_RATE="${CANARY_DATAPLANE_RATE:-100000000/minute}"
"${PSQL[@]}" -c "DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)" -c "CREATE DATABASE ${DB_NAME}"
redis-cli -n "$REDIS_DB" flushdb >/dev/null
cd "$ROOT"
"$PY" manage.py migrate --noinput >"$OUT/migrate.log" 2>&1 || { cat "$OUT/migrate.log"; exit 1; }
TOKEN="$("$PY" manage.py canary_user bench --role approver | tail -n 1)"
"$PY" "$HERE/seed.py" --actor bench --prewarm 0 --prefix w >"$OUT/seed.env"
RULESET_ID="$(awk -F= '$1 == "RULESET_ID" {print $2}' "$OUT/seed.env")"
FLAG=bench-checkout

echo "== in-process CPU per request (no server, no load generator)"
"$PY" "$HERE/ofrep_inprocess.py" --ruleset "$RULESET_ID" --flag "$FLAG" --token "$TOKEN" \
    --requests "${INPROCESS_REQUESTS:-3000}" | tee "$OUT/inprocess.txt" | sed 's/^/  /'

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:${PORT}"
export PROMETHEUS_MULTIPROC_DIR="$OUT/prometheus"
CANARY_BIND="127.0.0.1:${PORT}" CANARY_SERVE_MIGRATE=0 "$ROOT/scripts/serve.sh" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 150); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$BASE/healthz" >/dev/null || { cat "$OUT/server.log"; exit 1; }
echo "== granian ${WEB_WORKERS:-3} workers on $BASE; flag $FLAG ($RULESET_ID), v2 at 10%"

# The warm contexts' ETags: the second answer's (the first stores the decision).
"$PY" - "$BASE" "$TOKEN" "$WARM" >"$OUT/etags.txt" <<'PYEOF'
import sys

import requests

base, token, warm = sys.argv[1], sys.argv[2], int(sys.argv[3])
session = requests.Session()
session.headers["Authorization"] = f"Bearer {token}"
for n in range(1, warm + 1):
    body = {"context": {"targetingKey": f"e{n}"}}
    for _ in range(2):
        answer = session.post(f"{base}/ofrep/v1/evaluate/flags", json=body, timeout=10)
        answer.raise_for_status()
    assert session.post(f"{base}/ofrep/v1/evaluate/flags", json=body, timeout=10,
                        headers={"If-None-Match": answer.headers["ETag"]}).status_code == 304
    print(f"e{n} {answer.headers['ETag']}")
PYEOF

export BENCH_DIR="$HERE" RULESET_ID TOKEN FLAG ID_PREFIX=u ID_SPACE="$NEW_IDS" ETAGS="$OUT/etags.txt"
declare -A SUM
run_wrk() {  # name script seconds [record]
    local out="$OUT/wrk-$1-$3s-${4:-warmup}.txt" line
    wrk -t "$THREADS" -c "$CONNS" -d "${3}s" --timeout 10s --latency -s "$HERE/$2" "$BASE/" >"$out" 2>&1
    line="$(grep '^BENCH ' "$out")" || { cat "$out"; exit 1; }
    kv() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
    local bad=$(( $(kv non2xx) + $(kv connect_errors) + $(kv read_errors) + $(kv write_errors) + $(kv timeouts) ))
    [ "$bad" -eq 0 ] || { cat "$out"; echo "ofrep.sh: $1: $bad failed requests" >&2; exit 1; }
    if [ -n "${4:-}" ]; then
        SUM[$1]="$(awk -v a="${SUM[$1]:-0}" -v b="$(kv rps)" 'BEGIN { print a + b }')"
        echo "  round $4 $1 c=$CONNS t=$THREADS ${3}s: rps=$(kv rps) p50_ms=$(kv p50_ms) p99_ms=$(kv p99_ms)"
    fi
}
for pair in "resolve resolve.lua" "ofrep ofrep.lua" "resolve_warm resolve_warm.lua" "bulk304 ofrep_bulk304.lua"; do
    set -- $pair
    run_wrk "$1" "$2" 3
done
for round in $(seq 1 "$ROUNDS"); do
    run_wrk resolve resolve.lua "$DURATION" "$round"
    run_wrk ofrep ofrep.lua "$DURATION" "$round"
    run_wrk resolve_warm resolve_warm.lua "$DURATION" "$round"
    run_wrk bulk304 ofrep_bulk304.lua "$DURATION" "$round"
done
mean() { awk -v s="${SUM[$1]}" -v n="$ROUNDS" 'BEGIN { printf "%.0f", s / n }'; }
echo
echo "| measured | req/s (mean of $ROUNDS) | against | req/s | ratio |"
echo "|---|---:|---|---:|---:|"
awk -v a="$(mean ofrep)" -v b="$(mean resolve)" \
    'BEGIN { printf "| OFREP single flag, new ids | %d | resolve, new ids | %d | %.2fx |\n", a, b, a / b }'
awk -v a="$(mean bulk304)" -v b="$(mean resolve_warm)" \
    'BEGIN { printf "| OFREP bulk 304, warm ids | %d | resolve, warm ids | %d | %.2fx |\n", a, b, a / b }'
awk -v a="$(mean bulk304)" -v b="$(mean resolve)" \
    'BEGIN { printf "| OFREP bulk 304, warm ids | %d | resolve, new ids | %d | %.2fx |\n", a, b, a / b }'
