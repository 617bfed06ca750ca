#!/usr/bin/env bash
# Metrics, comparison and health for one deployment with 10 million execution logs,
# on PostgreSQL, against the same endpoints on a 10,000-log deployment (the baseline).
# Usage: bench/metrics/run.sh [ROWS]   (default 10000000)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS="${1:-10000000}"
DB="${BENCH_DB:-canary_bench_metrics}"
PYTHON="${PYTHON:-.venv/bin/python}"
psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS ${DB} WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE ${DB}"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/${DB}"
export REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/9}"
export DJANGO_SETTINGS_MODULE=canary.settings SECRET_KEY=bench-only-secret-key-0123456789-0123456789-0123 DEBUG=0
export LOG_LEVEL=WARNING CANARY_API_RATE= ALLOWED_HOSTS=testserver
"$PYTHON" manage.py migrate -v0
PYTHONPATH=. "$PYTHON" bench/metrics/measure.py "$ROWS"
