#!/usr/bin/env bash
# The console's execution-log list at 2,000,000 rows (or ROWS), on PostgreSQL.
# Usage: bench/console/run.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/../.."
DB="${BENCH_DB:-canary_bench_console}"
PYTHON="${PYTHON:-.venv/bin/python}"
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE ${DB}"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/9}"
export DJANGO_SETTINGS_MODULE=canary.settings SECRET_KEY=bench-only-secret-key-0123456789-0123456789-0123 DEBUG=0
export LOG_LEVEL=WARNING CANARY_API_RATE= ALLOWED_HOSTS=testserver,localhost PYTHONPATH=.
"$PYTHON" manage.py migrate -v0
"$PYTHON" bench/console/logs.py seed "${1:-2000000}"
# The hourly rollups the monitor keeps: the home block's whole-canary numbers read them.
"$PYTHON" bench/metrics/measure.py rollup
"$PYTHON" bench/console/logs.py measure
