#!/usr/bin/env bash
# Serves the API and admin, a Celery worker and Celery beat together; Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p var/celery-broker

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

$BIN/celery -A canary worker --loglevel=INFO --concurrency=2 &
pids+=($!)
$BIN/celery -A canary beat --loglevel=INFO --pidfile= &
pids+=($!)
$BIN/python manage.py runserver "${CANARY_BIND:-127.0.0.1:8000}" &
pids+=($!)

echo "Canary: http://${CANARY_BIND:-127.0.0.1:8000}/admin/ (demo / demo-password), API at /api/v1/, docs at /api/docs/, front-end demo at /demo/"
wait -n
