"""Settings for Canary, driven entirely by environment variables.

Defaults give a zero-dependency development setup (SQLite and a filesystem
Celery broker); setting ``DATABASE_URL`` and ``REDIS_URL`` moves every piece of
shared state to PostgreSQL and Redis.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from canary.redis_sentinel import parse_sentinel_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CANARY_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "django_guid",
    "rest_framework",
    # Kept for its table: API tokens are knox's, stored as hashes (see
    # deployments/migrations/0006_hash_api_tokens.py, which moved the old ones over).
    "rest_framework.authtoken",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "corsheaders",
    "deployments",
    "assignments",
    "monitoring",
]

MIDDLEWARE = [
    "django_guid.middleware.guid_middleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Before CommonMiddleware, as django-cors-headers asks: it answers preflights itself.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "canary.urls"
WSGI_APPLICATION = "canary.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # NOTE: the web server, worker and beat share one SQLite file in development;
    # a busy timeout turns brief write contention into waiting instead of errors.
    # IMMEDIATE transactions take the write lock up front, so two concurrent
    # transitions queue instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
# ``redis+sentinel://host:port[,host:port]/service_name[/db]``: a Sentinel set
# (canary.redis_sentinel); the cache, the data plane's client and Celery follow
# the master it names through a failover.
REDIS_SENTINEL = parse_sentinel_url(REDIS_URL)

if REDIS_URL:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from canary.redis import BreakerConnection, BreakerSentinelConnection

    # NOTE: redis-py retries with backoff by default; a request must not wait
    # on a Redis that is down, it falls back to the database at once.
    REDIS_FAIL_FAST = {"retry": Retry(NoBackoff(), 0)}
    # Redis down means cache misses: routing falls back to the database and
    # rate-limit counters fail open.
    REDIS_CACHE = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 0.5,
            # Through the process's Redis breaker (canary.redis): backs off after a timeout.
            "CONNECTION_POOL_KWARGS": {**REDIS_FAIL_FAST, "connection_class": BreakerConnection},
        },
        "KEY_PREFIX": "canary",
    }
    if REDIS_SENTINEL is not None:
        REDIS_CACHE["LOCATION"] = REDIS_SENTINEL.cache_location()
        REDIS_CACHE["OPTIONS"].update(
            CLIENT_CLASS="django_redis.client.SentinelClient",
            CONNECTION_FACTORY="django_redis.pool.SentinelConnectionFactory",
            SENTINELS=list(REDIS_SENTINEL.sentinels),
            SENTINEL_KWARGS={"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
            CONNECTION_POOL_KWARGS={
                **REDIS_FAIL_FAST,
                "connection_class": BreakerSentinelConnection,
            },
        )
    CACHES = {"default": REDIS_CACHE}
else:
    # NOTE: the data plane's routing state is per process and checks PostgreSQL's
    # routing generation (assignments.routing), so it needs no shared cache.
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Admin console logins go through django-axes first, which refuses a locked-out
# username or address before any password is checked. API tokens never call
# authenticate() and are limited by CANARY_AUTH_FAILURES_PER_MINUTE instead.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# One date-time format with its time zone in every admin page (canary/formats/en).
FORMAT_MODULE_PATH = ["canary.formats"]

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: decides `canary_ct_` tokens (resolve only) and leaves the rest to knox.
        "assignments.api.authentication.ClientTokenAuthentication",
        "canary.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "canary.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "canary.api.exceptions.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only: the API takes no forms (the admin is not DRF).
    "DEFAULT_PARSER_CLASSES": ["canary.api.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_CLASSES": ["canary.api.throttling.ScopedClientThrottle"],
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(
        "rest_framework.renderers.BrowsableAPIRenderer"
    )

SPECTACULAR_SETTINGS = {
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "canary.api.schema.add_error_responses",
    ],
    "TITLE": "Canary API",
    "DESCRIPTION": "Safe releases of business rule sets: canary, measure, promote or roll back.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Served from the installed package: the docs page works with no internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "DeploymentStatusEnum": "deployments.choices.DeploymentStatus",
        "ServedVersionEnum": ["v1", "v2"],
        "EvidenceBasisEnum": ["paired", "unpaired", "none"],
        "OfrepReasonEnum": ["STATIC", "SPLIT", "TARGETING_MATCH", "DEFAULT"],
    },
}

# Celery: Redis when REDIS_URL is set, otherwise kombu's filesystem transport,
# which lets the web server, worker and beat of one machine share a queue.
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
if REDIS_SENTINEL is not None:
    CELERY_BROKER_URL = CELERY_RESULT_BACKEND = REDIS_SENTINEL.celery_url()
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"master_name": REDIS_SENTINEL.service_name}
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"master_name": REDIS_SENTINEL.service_name}
elif REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_RESULT_BACKEND = None
    CELERY_BROKER_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR),
        "data_folder_out": str(CELERY_BROKER_DIR),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 180
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Product settings.
CANARY_SESSION_TTL = env_int("CANARY_SESSION_TTL", 24 * 60 * 60)
CANARY_MONITOR_INTERVAL_SECONDS = env_int("CANARY_MONITOR_INTERVAL_SECONDS", 300)
# Rollout plans' metric checks (SPEC 10.1): the Prometheus queried and how long one query may take.
CANARY_PROMETHEUS_URL = os.environ.get("CANARY_PROMETHEUS_URL", "").rstrip("/")
CANARY_PROMETHEUS_TIMEOUT_SECONDS = float(os.environ.get("CANARY_PROMETHEUS_TIMEOUT_SECONDS", "3"))
# A canary running longer than this many days gets the `stale_canary` health warning
# and a daily notification (the guide's advice: no canary should run over a week).
CANARY_STALE_DAYS = env_int("CANARY_STALE_DAYS", 7)
# Notifications: Slack incoming webhook and e-mail (Django's mail settings).
SLACK_WEBHOOK_URL = os.environ.get("SLACK_WEBHOOK_URL", "")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "canary@localhost")
# E-mail is sent only when a mail server is configured (or this is forced on).
CANARY_NOTIFY_EMAIL = env_bool("CANARY_NOTIFY_EMAIL", bool(EMAIL_HOST))
# Recipients; empty means the active members of the Approver group.
CANARY_NOTIFY_EMAILS = env_list("CANARY_NOTIFY_EMAILS")
# Webhooks, gates and triggers (SPEC 10.4). Receivers on loopback or private
# addresses are refused unless allowed; link-local ones (cloud metadata) always are.
CANARY_WEBHOOK_ALLOW_PRIVATE = env_bool("CANARY_WEBHOOK_ALLOW_PRIVATE", False)
CANARY_WEBHOOK_TIMEOUT_SECONDS = env_int("CANARY_WEBHOOK_TIMEOUT_SECONDS", 5)
CANARY_WEBHOOK_MAX_ATTEMPTS = env_int("CANARY_WEBHOOK_MAX_ATTEMPTS", 8)
# The first retry waits about this long; each next one twice as long (with jitter).
CANARY_WEBHOOK_BACKOFF_SECONDS = float(os.environ.get("CANARY_WEBHOOK_BACKOFF_SECONDS", "10"))
# The most of a receiver's answer that is read (and kept, cut, as the last answer).
CANARY_WEBHOOK_MAX_RESPONSE_BYTES = env_int("CANARY_WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024)
# Signs gate requests (Standard Webhooks, ``whsec_...``); empty: derived from SECRET_KEY.
CANARY_GATE_SECRET = os.environ.get("CANARY_GATE_SECRET", "")
# Calls of one trigger URL allowed per minute; past it, 429.
CANARY_TRIGGER_RATE_PER_MINUTE = env_int("CANARY_TRIGGER_RATE_PER_MINUTE", 10)
# Used to link notifications to the deployment's admin page.
CANARY_BASE_URL = os.environ.get("CANARY_BASE_URL", "http://127.0.0.1:8000")
# Grafana's base URL (e.g. http://127.0.0.1:3000); when set, each deployment page
# links its dashboard (ops/grafana/dashboards/canary.json).
CANARY_GRAFANA_URL = os.environ.get("CANARY_GRAFANA_URL", "").rstrip("/")
# How often a canary's page re-fetches its live block (monitor, numbers, chart).
CANARY_CONSOLE_REFRESH_SECONDS = env_int("CANARY_CONSOLE_REFRESH_SECONDS", 30)

# API tokens (django-rest-knox): only a SHA-512 of each is stored; a token is shown
# once, when issued. New tokens expire after this many days (0: never).
CANARY_TOKEN_TTL_DAYS = env_int("CANARY_TOKEN_TTL_DAYS", 365)
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Bearer",
    "TOKEN_TTL": timedelta(days=CANARY_TOKEN_TTL_DAYS) if CANARY_TOKEN_TTL_DAYS > 0 else None,
    "AUTO_REFRESH": False,
}

# Rate limits per client (user, or address when anonymous); "" turns one off.
CANARY_THROTTLE_RATES = {
    "dataplane": os.environ.get("CANARY_DATAPLANE_RATE", "100000/minute"),
    "api": os.environ.get("CANARY_API_RATE", "1200/minute"),
    # Requests bearing a client token, per client address (the token itself is
    # limited as a client, under "dataplane").
    "client_address": os.environ.get("CANARY_CLIENT_ADDRESS_RATE", "600/minute"),
}

# CORS (django-cors-headers): only `resolve` and OFREP, and only for origins a client
# token lists (assignments.cors decides per request; no origin is allowed here).
CORS_URLS_REGEX = r"^/(api/v1/rulesets/[^/]+/resolve|ofrep/v1/evaluate/flags(/[^/]+)?)/?$"
CORS_ALLOWED_ORIGINS: list[str] = []
CORS_ALLOW_METHODS = ["GET", "POST", "OPTIONS"]
CORS_ALLOW_HEADERS = ["authorization", "content-type", "if-none-match"]
CORS_EXPOSE_HEADERS = ["X-Canary-Version", "X-Request-ID", "ETag"]
CORS_ALLOW_CREDENTIALS = False
CORS_PREFLIGHT_MAX_AGE = env_int("CANARY_CORS_MAX_AGE", 600)

# The demo page at /demo/ (the React package at work); on by default with DEBUG.
CANARY_DEMO = env_bool("CANARY_DEMO", DEBUG)
# Wrong tokens allowed per client address per minute before 429s; 0 turns it off.
CANARY_AUTH_FAILURES_PER_MINUTE = env_int("CANARY_AUTH_FAILURES_PER_MINUTE", 20)

# When set, GET /metrics needs `Authorization: Bearer <this token>` (401 otherwise);
# unset, the endpoint is open and must be reachable only inside the network.
CANARY_METRICS_TOKEN = os.environ.get("CANARY_METRICS_TOKEN", "")

# Admin console login lockout (django-axes, attempts stored in the database so
# every process shares them): CANARY_LOGIN_FAILURE_LIMIT failed logins for one
# username, or from one client address, lock that username or address out for
# CANARY_LOGIN_LOCKOUT_MINUTES (counted from the last failure); 0 turns it off.
CANARY_LOGIN_FAILURE_LIMIT = env_int("CANARY_LOGIN_FAILURE_LIMIT", 10)
CANARY_LOGIN_LOCKOUT_MINUTES = env_int("CANARY_LOGIN_LOCKOUT_MINUTES", 15)
# Proxies in front of the service that append the client to X-Forwarded-For;
# 0 means clients connect directly and REMOTE_ADDR is the client.
CANARY_TRUSTED_PROXY_COUNT = env_int("CANARY_TRUSTED_PROXY_COUNT", 0)
AXES_ENABLED = CANARY_LOGIN_FAILURE_LIMIT > 0
AXES_FAILURE_LIMIT = max(CANARY_LOGIN_FAILURE_LIMIT, 1)
AXES_COOLOFF_TIME = timedelta(minutes=max(CANARY_LOGIN_LOCKOUT_MINUTES, 1))
# Either counter locks: one username from many addresses, or one address trying many usernames.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "canary.login_lockout.client_address"
# NOTE: a success must not wipe an address's failures, or a guesser holding any
# valid login could reset its own counter between guesses.
AXES_RESET_ON_SUCCESS = False
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_HTTP_RESPONSE_CODE = 429

# Largest execute request body; larger ones are refused with a 400 naming `input`.
# It also caps the input's size (values plus characters) wherever rules are evaluated.
CANARY_MAX_INPUT_BYTES = env_int("CANARY_MAX_INPUT_BYTES", 64 * 1024)

# Bounded rule evaluation (docs/rules.md, "Bounded evaluation"): wall-clock budget of one
# evaluation, and the input caps that the static cost check of new versions assumes.
CANARY_EVAL_BUDGET_MS = env_int("CANARY_EVAL_BUDGET_MS", 50)
CANARY_INPUT_MAX_LIST_LENGTH = env_int("CANARY_INPUT_MAX_LIST_LENGTH", 1000)
CANARY_INPUT_MAX_STRING_LENGTH = env_int("CANARY_INPUT_MAX_STRING_LENGTH", 8192)
CANARY_INPUT_MAX_DEPTH = env_int("CANARY_INPUT_MAX_DEPTH", 32)

# Every request gets an id (taken from X-Request-ID when a proxy sent one) that
# is returned in the response and stamped on every log line of the request.
DJANGO_GUID = {
    "GUID_HEADER_NAME": "X-Request-ID",
    "VALIDATE_GUID": False,
    "RETURN_HEADER": True,
    # NOTE: django-cors-headers exposes it (CORS_EXPOSE_HEADERS) where CORS applies;
    # django-guid's own header would overwrite that list.
    "EXPOSE_HEADER": False,
}

# Structured JSON logs by default; LOG_FORMAT=plain for a human at a terminal.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "django_guid.log_filters.CorrelationId"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
            "rename_fields": {"correlation_id": "request_id", "levelname": "level"},
        },
        "plain": {"format": "%(asctime)s %(levelname)s [%(correlation_id)s] %(name)s %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # axes: its start banner and per-attempt notes are INFO; lockouts stay visible.
    "loggers": {"django_guid": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

# The data plane's routing state lives in each process; it is re-validated
# against PostgreSQL's routing generation at least this often (seconds).
# After a Redis timeout or connection error, a process stops asking Redis for this
# long and serves from PostgreSQL; then one request tries it again (canary.redis).
CANARY_REDIS_BACKOFF_SECONDS = float(os.environ.get("CANARY_REDIS_BACKOFF_SECONDS", "5"))
CANARY_ROUTING_RECHECK_SECONDS = float(os.environ.get("CANARY_ROUTING_RECHECK_SECONDS", "0.5"))
# A token Redis vouches for is accepted only at the auth generation the process knows,
# which the database bumps on every revocation; re-read at least this often (seconds).
CANARY_AUTH_RECHECK_SECONDS = float(os.environ.get("CANARY_AUTH_RECHECK_SECONDS", "0.5"))
# Write buffers (Redis streams, see docs/durability.md): web processes drain them
# in a background thread; readers that must be exact drain first and wait up to
# CANARY_DRAIN_WAIT_SECONDS for batches other drainers hold; entries a drainer
# has held for CANARY_DRAIN_CLAIM_SECONDS are taken over (it may have died;
# writes are idempotent, so taking over a slow one's batch duplicates nothing).
CANARY_DRAIN_IN_WEB = env_bool("CANARY_DRAIN_IN_WEB", True)
CANARY_DRAIN_BLOCK_MS = env_int("CANARY_DRAIN_BLOCK_MS", 200)
CANARY_DRAIN_INTERVAL_MS = env_int("CANARY_DRAIN_INTERVAL_MS", 250)
CANARY_DRAIN_WAIT_SECONDS = float(os.environ.get("CANARY_DRAIN_WAIT_SECONDS", "3"))
CANARY_DRAIN_CLAIM_SECONDS = float(os.environ.get("CANARY_DRAIN_CLAIM_SECONDS", "1"))
# Most entries a stream keeps undrained (approximate); older ones are trimmed.
CANARY_STREAM_MAXLEN = env_int("CANARY_STREAM_MAXLEN", 5_000_000)
# Bounded sticky state (docs/durability.md, "Bounds"). Redis holds at most
# CANARY_STICKY_MAX_PER_DEPLOYMENT decisions of one canary; a context first seen
# beyond it is decided and stored in PostgreSQL, which answers for it after. A client
# token (public: per token and client address) may create at most
# CANARY_STICKY_MAX_PER_CLIENT new decisions per deployment in
# CANARY_STICKY_CLIENT_WINDOW_SECONDS; beyond: 429 "sticky_quota_exceeded".
CANARY_STICKY_MAX_PER_DEPLOYMENT = env_int("CANARY_STICKY_MAX_PER_DEPLOYMENT", 1_000_000)
CANARY_STICKY_MAX_PER_CLIENT = env_int("CANARY_STICKY_MAX_PER_CLIENT", 10_000)
CANARY_STICKY_CLIENT_WINDOW_SECONDS = env_int("CANARY_STICKY_CLIENT_WINDOW_SECONDS", 86_400)
# Copy a deployment's decisions back into Redis (after Redis lost them) in a
# background thread of the process that noticed; off: in the request itself (tests).
CANARY_REFILL_IN_BACKGROUND = env_bool("CANARY_REFILL_IN_BACKGROUND", True)
# Serve the common execute/resolve request in front of Django (assignments.fastpath);
# needs Redis. Off: every request goes through Django and DRF.
CANARY_FAST_PATH = env_bool("CANARY_FAST_PATH", True)

# Data lifecycle (docs/scale.md, docs/security.md). Execution logs are kept this
# many days, dropped a day partition at a time on PostgreSQL; rollups (metrics of
# old deployments) are kept longer. Partitions are created this many days ahead.
CANARY_LOG_RETENTION_DAYS = env_int("CANARY_LOG_RETENTION_DAYS", 30)
CANARY_ROLLUP_RETENTION_DAYS = env_int("CANARY_ROLLUP_RETENTION_DAYS", 400)
CANARY_LOG_PARTITIONS_AHEAD_DAYS = env_int("CANARY_LOG_PARTITIONS_AHEAD_DAYS", 7)
# False: no execution stores its input (replay then reports every input redacted).
CANARY_STORE_INPUTS = env_bool("CANARY_STORE_INPUTS", True)

# Recorded production inputs and backtests (SPEC 10.2, docs/scale.md). Captured
# inputs are kept this many days and at most this many per rule set (the oldest
# go first); a backtest reads and evaluates its inputs this many at a time, and a
# run whose worker stopped reporting progress for this long is resumed (at most
# CANARY_BACKTEST_MAX_ATTEMPTS runs in all, then failed).
CANARY_CAPTURE_RETENTION_DAYS = env_int("CANARY_CAPTURE_RETENTION_DAYS", 30)
CANARY_CAPTURE_MAX_PER_RULESET = env_int("CANARY_CAPTURE_MAX_PER_RULESET", 1_000_000)
CANARY_BACKTEST_CHUNK = env_int("CANARY_BACKTEST_CHUNK", 2_000)
# Parts of one backtest run side by side by the worker's processes (each at least a chunk).
CANARY_BACKTEST_PARTS = env_int("CANARY_BACKTEST_PARTS", 2)
CANARY_BACKTEST_STALE_SECONDS = env_int("CANARY_BACKTEST_STALE_SECONDS", 120)
CANARY_BACKTEST_MAX_ATTEMPTS = env_int("CANARY_BACKTEST_MAX_ATTEMPTS", 5)
CANARY_BACKTEST_MAX_DIFFERENCES = env_int("CANARY_BACKTEST_MAX_DIFFERENCES", 10_000)
