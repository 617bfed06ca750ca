"""Count what one data-plane request costs: SQL queries, PostgreSQL and Redis round-trips.

Calls the real WSGI application (``canary.wsgi.application``) in-process, so
Django's request signals run as under gunicorn, including the connection health
check that ``conn_health_checks=True`` performs at the first query of each request.
Three counts per request:

- ``sql``: queries Django executes, counted with ``connection.execute_wrapper``
  (``CaptureQueriesContext`` reads ``connection.queries_log``, which Django's
  ``request_started`` handler empties, so it cannot span a whole request);
- ``pg``: every command sent to PostgreSQL (Django's queries, plus the health
  check ``SELECT 1`` and ``BEGIN``/``COMMIT``, which bypass Django's cursor);
- ``redis``: every Redis round-trip (a pipeline or MULTI..EXEC sent in one write
  counts once, shown as ``[MULTI SET EXEC]``).

Also prints the median in-process time over ``--repeat`` requests per scenario
(the application only: no HTTP parsing, no gunicorn). Run by run.sh on the
benchmark database; usable on its own with the same environment:

    python bench/dataplane/roundtrips.py --ruleset <id> --token <token>
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")

import psycopg  # noqa: E402
import redis  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.db import connection  # noqa: E402
from psycopg._connection_base import BaseConnection  # noqa: E402

from canary.wsgi import application  # noqa: E402  (runs django.setup())


class Wire:
    """Records PostgreSQL and Redis commands while ``on``."""

    on = False
    inside_send_command = False
    pg: list[str] = []
    redis: list[str] = []

    @classmethod
    def reset(cls) -> None:
        cls.pg, cls.redis = [], []


def _short(sql: object) -> str:
    text = sql.decode() if isinstance(sql, bytes) else str(sql)
    return " ".join(text.split())[:90]


_cursor_execute = psycopg.Cursor.execute


def _counting_execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def]
    try:
        return _cursor_execute(self, query, params, **kwargs)
    finally:  # recorded after any BEGIN the query itself sends first
        if Wire.on:
            Wire.pg.append(_short(query))


_exec_command = BaseConnection._exec_command


def _counting_exec_command(self, command, *args, **kwargs):  # type: ignore[no-untyped-def]
    if Wire.on:
        Wire.pg.append(_short(command))
    return (yield from _exec_command(self, command, *args, **kwargs))


# Redis: count at the connection, one network write per round-trip. send_command
# sends one command; pipelines and MULTI/EXEC go through send_packed_command directly.
_send_command = redis.connection.Connection.send_command
_send_packed_command = redis.connection.Connection.send_packed_command
_RESP_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")


def _counting_send_command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    if Wire.on:
        Wire.redis.append(str(args[0]))
    Wire.inside_send_command = True
    try:
        return _send_command(self, *args, **kwargs)
    finally:
        Wire.inside_send_command = False


def _counting_send_packed_command(self, command, *args, **kwargs):  # type: ignore[no-untyped-def]
    if Wire.on and not Wire.inside_send_command:
        raw = command if isinstance(command, bytes) else b"".join(command)
        names = [name.decode().upper() for name in _RESP_COMMAND.findall(raw)]
        Wire.redis.append("[" + " ".join(names) + "]")
    return _send_packed_command(self, command, *args, **kwargs)


psycopg.Cursor.execute = _counting_execute  # type: ignore[method-assign]
BaseConnection._exec_command = _counting_exec_command  # type: ignore[method-assign]
redis.connection.Connection.send_command = _counting_send_command  # type: ignore[method-assign]
redis.connection.Connection.send_packed_command = _counting_send_packed_command  # type: ignore[method-assign]


def call(method: str, path: str, token: str, query: str = "", body: bytes = b"") -> int:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    status: list[str] = []

    def start_response(value: str, headers: list, exc_info: object = None) -> None:
        status.append(value)

    result = application(environ, start_response)
    try:
        b"".join(result)
    finally:
        result.close()  # sends request_finished, as a server does
    return int(status[0].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ruleset", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--show-commands", action="store_true")
    args = parser.parse_args()

    sample = json.loads((HERE / "input.json").read_text())
    run = uuid.uuid4().hex[:8]
    resolve_path = f"/api/v1/rulesets/{args.ruleset}/resolve"
    execute_path = f"/api/v1/rulesets/{args.ruleset}/execute"

    def healthz(user: str) -> int:
        return call("GET", "/healthz", args.token)

    def resolve(user: str) -> int:
        return call("GET", resolve_path, args.token, query=f"user_id={user}")

    def execute(user: str) -> int:
        body = json.dumps({"user_id": user, "input": sample}).encode()
        return call("POST", execute_path, args.token, body=body)

    from assignments.router import V2, bucket_for, version_for_bucket
    from assignments.selectors import assignment_cache_key, routing_state_for

    state = routing_state_for(ruleset_id=args.ruleset)
    if state is None or state.canary is None:
        sys.exit("no canary running for this rule set: seed one first")
    canary_id, traffic = state.canary.deployment_id, state.traffic_percentage
    counter = iter(range(10**9))

    def fresh_user(version: str) -> str:
        """A never-seen user id whose bucket sends it to ``version`` (v1 or v2)."""
        while True:
            user = f"rt-{run}-{next(counter)}"
            bucket = bucket_for(canary_id, "user", user)
            if version_for_bucket(bucket, traffic) == version:
                return user

    def forget_cached_assignment(user: str) -> None:
        # What a Redis restart or eviction leaves: the row exists, the cache entry does not.
        caches["routing"].delete(assignment_cache_key(canary_id, "user", user))

    # (label, request, served version, "new" user each time or the "same" sticky one, prepare)
    scenarios = [
        ("healthz", healthz, "v1", "same", None),
        ("resolve, first request of a user", resolve, "v1", "new", None),
        ("resolve, sticky (Redis hit)", resolve, "v1", "same", None),
        ("resolve, sticky (Redis miss)", resolve, "v1", "same", forget_cached_assignment),
        ("execute v1, first request of a user", execute, "v1", "new", None),
        ("execute v1, sticky (Redis hit)", execute, "v1", "same", None),
        ("execute v1, sticky (Redis miss)", execute, "v1", "same", forget_cached_assignment),
        ("execute v2, first request of a user", execute, "v2", "new", None),
        ("execute v2, sticky (Redis hit)", execute, "v2", "same", None),
    ]

    # Warm the process: connections open, rules of both versions compiled, state cached.
    for version in ("v1", V2):
        assert resolve(fresh_user(version)) == 200
        assert execute(fresh_user(version)) == 200

    rows = []
    for label, func, version, ids, prepare in scenarios:
        user = fresh_user(version)
        if ids == "same":
            func(user)  # the user's first request; the measured one is the next
        if prepare:
            prepare(user)
        Wire.reset()
        captured: list[str] = []

        def count_query(execute, sql, params, many, context, captured=captured):  # type: ignore[no-untyped-def]
            captured.append(sql)
            return execute(sql, params, many, context)

        Wire.on = True
        with connection.execute_wrapper(count_query):
            status = func(user)
        Wire.on = False
        if status != 200:
            sys.exit(f"{label}: HTTP {status}")
        timings = []
        for _ in range(args.repeat):
            timed_user = fresh_user(version) if ids == "new" else user
            if prepare:
                prepare(timed_user)
            started = time.perf_counter()
            func(timed_user)
            timings.append((time.perf_counter() - started) * 1000)
        rows.append(
            (label, len(captured), list(Wire.pg), list(Wire.redis), statistics.median(timings))
        )

    print(f"{'request':<38} {'sql':>4} {'pg':>4} {'redis':>6} {'median ms':>10}")
    for label, sql, pg, red, median in rows:
        print(f"{label:<38} {sql:>4} {len(pg):>4} {len(red):>6} {median:>10.3f}")
    if args.show_commands:
        for label, _, pg, red, _ in rows:
            print(f"\n{label}")
            for command in pg:
                print(f"  pg     {command}")
            for command in red:
                print(f"  redis  {command}")


if __name__ == "__main__":
    main()
