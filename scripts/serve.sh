#!/usr/bin/env bash
# The production web server alone: granian (WSGI) with keep-alive, several worker
# processes, as compose's `backend` runs it. Settings come from the environment
# (DATABASE_URL, REDIS_URL, SECRET_KEY, ...); binds to ${CANARY_BIND:-127.0.0.1:8000}.
set -euo pipefail
cd "$(dirname "$0")/.."
GRANIAN="${CANARY_GRANIAN:-.venv/bin/granian}"
[ -x "$GRANIAN" ] || GRANIAN="$(command -v granian)"

BIND="${CANARY_BIND:-127.0.0.1:8000}"
HOST="${BIND%:*}"
PORT="${BIND##*:}"
HOST="${HOST#[}"
HOST="${HOST%]}"
# One process per CPU serves requests in parallel; a few threads each cover the waits on
# PostgreSQL and Redis. Measured on 2 cores: docs/performance.md.
WORKERS="${WEB_WORKERS:-$(nproc 2>/dev/null || echo 2)}"
THREADS="${WEB_THREADS:-2}"

if [ -z "${SECRET_KEY:-}" ] && [ "${DEBUG:-0}" != 1 ]; then
    echo "serve: SECRET_KEY is not set; using a random one for this run (sessions end on restart)" >&2
    SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export SECRET_KEY
fi
# Production settings; TLS ends at a proxy, if any, so plain HTTP is the default here.
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-canary.settings_production}"
export SECURE_SSL_REDIRECT="${SECURE_SSL_REDIRECT:-false}"
export SESSION_COOKIE_SECURE="${SESSION_COOKIE_SECURE:-false}"
export CSRF_COOKIE_SECURE="${CSRF_COOKIE_SECURE:-false}"
PYTHON="$(dirname "$GRANIAN")/python"
[ -x "$PYTHON" ] || PYTHON=python
if [ "${CANARY_SERVE_MIGRATE:-1}" = 1 ]; then
    "$PYTHON" manage.py migrate --noinput >/dev/null
    "$PYTHON" manage.py collectstatic --noinput >/dev/null
fi
# One Prometheus scrape sums every worker (docs/metrics.md).
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

exec "$GRANIAN" canary.wsgi:application \
    --interface wsgi \
    --host "$HOST" --port "$PORT" \
    --workers "$WORKERS" --blocking-threads "$THREADS" \
    --backlog 2048 \
    --respawn-failed-workers \
    --workers-kill-timeout 30 \
    --log-level "${WEB_LOG_LEVEL:-warning}" \
    "$@"
