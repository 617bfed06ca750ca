#!/usr/bin/env bash
# Metrics, comparison, health, shadow and readiness for one canary with millions of
# execution logs, on PostgreSQL, against the same endpoints on a 10,000-log canary
# (the baseline) in the same database.
# Usage: bench/metrics/run.sh [TOTAL ...]   (default 10000000 50000000)
# Each TOTAL grows the big canary to that many rows, rolls up and measures.
set -euo pipefail
cd "$(dirname "$0")/../.."
DB="${BENCH_DB:-canary_bench_metrics}"
PYTHON="${PYTHON:-.venv/bin/python}"
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE ${DB}"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/9}"
export DJANGO_SETTINGS_MODULE=canary.settings SECRET_KEY=bench-only-secret-key-0123456789-0123456789-0123 DEBUG=0
export LOG_LEVEL=WARNING CANARY_API_RATE= ALLOWED_HOSTS=testserver PYTHONPATH=.
"$PYTHON" manage.py migrate -v0
seeded=0
for total in "${@:-10000000 50000000}"; do
  for target in $total; do
    "$PYTHON" bench/metrics/measure.py seed $((target - seeded))
    seeded=$target
    "$PYTHON" bench/metrics/measure.py rollup
    "$PYTHON" bench/metrics/measure.py measure
  done
done
