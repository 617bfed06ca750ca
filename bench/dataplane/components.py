"""Time the pieces of the data-plane hot path one by one, in-process.

    python bench/dataplane/components.py --ruleset <id> --token <token> [--rounds 3]

For each piece: CPU time (this process) and wall time per call, the best of
``--rounds`` rounds (the least disturbed by other work on the machine). Run by
run.sh on the benchmark database, after seeding; it writes execution-log rows there.
Alternatives that are not in the application (a raw-SQL token look-up, a raw-SQL
log insert, ``synchronous_commit=off``) are timed for comparison only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")

import django  # noqa: E402

django.setup()

from django.core.cache import caches  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from assignments import router, services  # noqa: E402
from assignments.api.serializers import ContextQuerySerializer, ExecuteInputSerializer  # noqa: E402
from assignments.hooks import ExecutionRecord, hooks  # noqa: E402
from assignments.models import Assignment  # noqa: E402
from assignments.selectors import routing_state_for  # noqa: E402
from deployments.api.serializers import validated  # noqa: E402
from deployments.selectors import compiled_rules_for_version_id  # noqa: E402
from monitoring.models import ExecutionLog  # noqa: E402


def measure(func: Callable[[], object], calls: int, rounds: int) -> tuple[float, float]:
    for _ in range(min(calls, 20)):
        func()
    best_cpu = best_wall = float("inf")
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            func()
        best_cpu = min(best_cpu, (time.process_time() - cpu) / calls * 1000)
        best_wall = min(best_wall, (time.perf_counter() - wall) / calls * 1000)
    return best_cpu, best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ruleset", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    sample = json.loads((HERE / "input.json").read_text())
    state = routing_state_for(ruleset_id=args.ruleset)
    assert state is not None and state.canary is not None, "seed a canary first"
    compiled = compiled_rules_for_version_id(state.canary.version_id)
    context = router.RoutingContext(user_id="components-1")
    services.dataplane_resolve(ruleset_id=args.ruleset, context=context)  # now sticky
    record = ExecutionRecord(
        deployment_id=state.canary.deployment_id,
        version_id=state.canary.version_id,
        served_version="v2",
        success=True,
        latency_ms=0.1,
        error_rule=None,
        error_message="",
        user_id="components-1",
        session_id=None,
        workflow_id=None,
        input=sample,
        output={"decision": "approve"},
        executed_at=timezone.now(),
    )
    v1_record = dataclasses.replace(record, served_version="v1", version_id=state.active.version_id)

    def log_create() -> None:
        # The INSERT alone, as monitoring's execution_record writes it.
        ExecutionLog.objects.create(
            deployment_id=record.deployment_id,
            served_version=record.served_version,
            version_id=record.version_id,
            success=record.success,
            latency_ms=record.latency_ms,
            error_rule="",
            error_message="",
            user_id=record.user_id,
            session_id="",
            workflow_id="",
            input=record.input,
            output=record.output,
            created_at=record.executed_at,
        )

    connection.ensure_connection()
    cursor = connection.cursor()

    def raw_token() -> None:
        cursor.execute(
            "SELECT u.id, u.is_active FROM authtoken_token t "
            "JOIN auth_user u ON u.id = t.user_id WHERE t.key = %s",
            [args.token],
        )
        cursor.fetchone()

    def raw_log_insert() -> None:
        cursor.execute(
            "INSERT INTO monitoring_executionlog (deployment_id, served_version, version_id, "
            "success, latency_ms, error_rule, error_message, user_id, session_id, workflow_id, "
            "input, output, needs_reprocess, created_at) "
            "VALUES (%s, %s, %s, %s, %s, '', '', %s, '', '', %s, %s, false, %s)",
            [
                record.deployment_id,
                record.served_version,
                record.version_id,
                record.success,
                record.latency_ms,
                record.user_id,
                json.dumps(record.input),
                json.dumps(record.output),
                record.executed_at,
            ],
        )

    counter = iter(range(10**9))
    run = timezone.now().strftime("%H%M%S%f")

    def first_resolve() -> None:
        user = f"components-{run}-{next(counter)}"
        services.dataplane_resolve(
            ruleset_id=args.ruleset, context=router.RoutingContext(user_id=user)
        )

    def store_as_orm() -> None:
        # What _store does for a new user: bulk_create(ignore_conflicts) then read the row back.
        user = f"components-{run}-{next(counter)}"
        Assignment.objects.bulk_create(
            [
                Assignment(
                    deployment_id=state.canary.deployment_id,
                    tier="user",
                    identifier=user,
                    assigned_version="v1",
                    version_id=state.active.version_id,
                    user_id=user,
                    assigned_at=timezone.now(),
                )
            ],
            ignore_conflicts=True,
        )
        Assignment.objects.filter(
            deployment_id=state.canary.deployment_id, tier="user", identifier=user
        ).values("pk", "assigned_version", "expires_at").first()

    def store_as_raw_upsert() -> None:
        # One autocommit statement: insert or keep the existing row, and answer which won.
        user = f"components-{run}-{next(counter)}"
        cursor.execute(
            "INSERT INTO assignments_assignment (id, deployment_id, tier, identifier, "
            "assigned_version, version_id, user_id, session_id, workflow_id, assigned_at, "
            "expires_at) VALUES (%s, %s, 'user', %s, 'v1', %s, %s, '', '', now(), NULL) "
            "ON CONFLICT (deployment_id, tier, identifier) DO NOTHING RETURNING assigned_version",
            [uuid.uuid4(), state.canary.deployment_id, user, state.active.version_id, user],
        )
        cursor.fetchone()

    pieces: list[tuple[str, Callable[[], object]] | tuple[str, Callable[[], object], str]] = [
        ("health check SELECT 1 (raw psycopg)", lambda: connection.connection.execute("SELECT 1")),
        (
            "token auth: Token.objects.select_related('user').get",
            lambda: Token.objects.select_related("user").get(key=args.token),
        ),
        ("  alternative: the same look-up as raw SQL", raw_token),
        ("  alternative: one Redis GET (cache client)", lambda: caches["routing"].get("x")),
        (
            "routing_state_for (Redis GET + unpickle)",
            lambda: routing_state_for(ruleset_id=args.ruleset),
        ),
        (
            "_known_assignments, Redis hit (MGET)",
            lambda: services._known_assignments(state.canary.deployment_id, context),
        ),
        (
            "ContextQuerySerializer (resolve input)",
            lambda: validated(ContextQuerySerializer, {"user_id": "components-1"}),
        ),
        (
            "ExecuteInputSerializer (execute input)",
            lambda: validated(ExecuteInputSerializer, {"user_id": "components-1", "input": sample}),
        ),
        ("CEL evaluate: 10 rules, 20-field input", lambda: compiled.evaluate(sample)),
        ("execution log INSERT: ExecutionLog.objects.create", log_create),
        ("  alternative: the same INSERT as raw SQL", raw_log_insert),
        ("  alternative: ORM INSERT, synchronous_commit=off", log_create, "synchronous_commit"),
        (
            "record_execution hook, v1 outcome (all it does)",
            lambda: hooks.record_execution(v1_record, {}),
        ),
        (
            "record_execution hook, v2 outcome (all it does)",
            lambda: hooks.record_execution(record, {}),
        ),
        ("dataplane_resolve, first request (service only)", first_resolve),
        ("  of which: _store's bulk_create + read-back (ORM)", store_as_orm),
        ("  alternative: one INSERT .. ON CONFLICT .. RETURNING", store_as_raw_upsert),
        (
            "dataplane_resolve, sticky (service only)",
            lambda: services.dataplane_resolve(ruleset_id=args.ruleset, context=context),
        ),
        (
            "dataplane_execute, sticky (service only)",
            lambda: services.dataplane_execute(
                ruleset_id=args.ruleset, input=sample, context=context
            ),
        ),
    ]
    print(f"{'piece':<52} {'cpu ms':>8} {'wall ms':>8}")
    for label, func, *session_off in pieces:
        for setting in session_off:  # for this piece only, on this connection only
            cursor.execute(f"SET {setting} TO off")
        cpu, wall = measure(func, args.calls, args.rounds)
        for setting in session_off:
            cursor.execute(f"RESET {setting}")
        print(f"{label:<52} {cpu:>8.3f} {wall:>8.3f}")
    throttle_costs(args.calls, args.rounds)


def throttle_costs(calls: int, rounds: int) -> None:
    """The data-plane rate limit, when the tree has one, against the size of its history.

    DRF's SimpleRateThrottle keeps one timestamp per request of the last window in
    the cache and reads and writes the whole list on every request, so its cost
    grows with the client's request rate. Measured under a throw-away identity.
    """
    try:
        from canary.api.throttling import ScopedClientThrottle
    except ImportError:
        return

    class View:
        throttle_scope = "dataplane"

    class User:
        pk = "components-throttle"
        is_authenticated = True

    class Request:
        user = User()
        META: dict[str, str] = {"REMOTE_ADDR": "127.0.0.1"}

    probe = ScopedClientThrottle()
    if not probe.allow_request(Request(), View()) or not getattr(probe, "key", None):
        return  # the data-plane limit is off
    key, cache = probe.key, probe.cache
    try:
        for size in (0, 6_000, 24_000, 60_000):
            now = time.time()
            history = [now - i * (50.0 / max(size, 1)) for i in range(size)]

            def check(history: list[float] = history) -> None:
                cache.set(key, history, 60)  # back to this size; not timed apart
                ScopedClientThrottle().allow_request(Request(), View())

            def reset_only(history: list[float] = history) -> None:
                cache.set(key, history, 60)

            cpu, wall = measure(check, max(calls // 10, 20), rounds)
            cpu0, wall0 = measure(reset_only, max(calls // 10, 20), rounds)
            label = f"throttle allow_request, {size:,} requests in window"
            print(f"{label:<52} {cpu - cpu0:>8.3f} {wall - wall0:>8.3f}")
    finally:
        cache.delete(key)


if __name__ == "__main__":
    main()
