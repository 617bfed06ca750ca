"""Test settings: the real settings with a throwaway secret, so tests need no environment."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-any-deployment")

from canary.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # NOTE: the default in-memory test database uses SQLite's shared cache, which
    # answers concurrent writers with "table is locked" instead of waiting; a
    # file gives the same locking as development and production on SQLite.
    # One file per test run, so two runs on one machine never share a database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}  # noqa: F405
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # noqa: F405

# Limits are exercised by their own tests (which set rates); elsewhere they would
# only make the suite depend on how fast it runs.
CANARY_THROTTLE_RATES = {"dataplane": "", "api": "", "client_address": ""}
CANARY_AUTH_FAILURES_PER_MINUTE = 0

# Test receivers listen on 127.0.0.1; the SSRF tests turn this off where they check it.
CANARY_WEBHOOK_ALLOW_PRIVATE = True

# A Redis that lost a deployment's decisions is re-filled in the request itself: a
# background thread would read the test database on a connection of its own.
CANARY_REFILL_IN_BACKGROUND = False
