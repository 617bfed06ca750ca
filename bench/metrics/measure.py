"""Seed a big and a small canary, roll up, then time the measurement endpoints.

``seed ROWS`` adds ``ROWS`` execution logs to the big canary (creating both canaries
and the small one's 10,000 logs the first time), so one database can be measured at
10 million rows and again after growing it to 50 million. ``rollup`` runs the hourly
job; ``measure`` prints, per endpoint, the median of 7 calls for the big canary, the
same for the 10,000-log baseline, their ratio, and the process's peak memory before
and after the calls, so "memory stays flat" is visible.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from datetime import timedelta

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from deployments import services  # noqa: E402
from deployments.models import Deployment  # noqa: E402
from monitoring.logstore import partitions  # noqa: E402
from monitoring.logstore.rollups import rollup_run  # noqa: E402
from monitoring.models import ExecutionLog, ExecutionRollup, RollupWatermark  # noqa: E402

RULES = [{"name": "hot", "condition": "input.temperature > 25", "output": {"alert": True}}]
DAYS = 7
BASELINE_ROWS = 10_000
ENDPOINTS = (
    "metrics",
    "comparison",
    "health",
    "metrics?window_minutes=30",
    "shadow",
    "shadow/differences",
    "readiness",
    # Windows of an hour or less are read from raw rows, and so is the partial first
    # hour of a longer one: what that costs at this row rate.
    "comparison?window_minutes=60",
    "shadow?window_minutes=60",
    "comparison?window_minutes=180",
)


def canary(name: str) -> Deployment:
    existing = Deployment.objects.filter(ruleset__name=name, status="canary").first()
    if existing is not None:
        return existing
    ruleset = services.ruleset_create(name=name, actor="bench")
    for version in ("v1.0.0", "v2.0.0"):
        services.ruleset_version_create(
            ruleset=ruleset, version=version, rules=RULES, default=None, actor="bench"
        )
    first = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="bench")
    services.deployment_promote(deployment_id=first.pk, actor="bench")
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="bench")
    started = services.deployment_start_canary(deployment_id=draft.pk, canary_pct=10, actor="bench")
    # The canary began before the seeded week, so "the whole canary" spans every row.
    Deployment.objects.filter(pk=started.pk).update(
        started_at=timezone.now() - timedelta(days=DAYS, hours=1)
    )
    return Deployment.objects.get(pk=started.pk)


def seed(deployment: Deployment, rows: int, offset: int) -> None:
    """``rows`` logs spread evenly over the last 7 days, inserted one day at a time in
    time order (as a live service writes them, so every index is appended to).

    10% v2; 2% of v2 and 1% of v1 failing; every row a shadowed pair, 2% disagreeing.
    ``offset`` keeps row numbers (and so user ids and outcomes) distinct across calls.
    """
    v1 = deployment.baseline.version_id
    v2 = deployment.version_id
    end = timezone.now() - timedelta(minutes=5)
    start = end - timedelta(days=DAYS)
    step = (end - start) / rows
    per_day = -(-rows // DAYS)
    for day in range(DAYS):
        first, last = day * per_day + 1, min(rows, (day + 1) * per_day)
        if first > last:
            break
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO monitoring_executionlog
                  (deployment_id, served_version, version_id, success, latency_ms, error_rule,
                   error_message, user_id, session_id, workflow_id, input, needs_reprocess,
                   created_at, matched_rule, shadow_success, shadow_rule, shadow_error_message,
                   shadow_latency_ms, agreed)
                SELECT %(deployment)s,
                       CASE WHEN n %% 10 = 0 THEN 'v2' ELSE 'v1' END,
                       CASE WHEN n %% 10 = 0 THEN %(v2)s::uuid ELSE %(v1)s::uuid END,
                       NOT ((n %% 10 = 0 AND n %% 500 = 0) OR (n %% 10 <> 0 AND n %% 100 = 1)),
                       exp(random() * 4 - 1),
                       '', '', 'user-' || (n %% 100000), '', '', '{}'::jsonb, false,
                       %(start)s + (g - 1) * %(step)s,
                       '', true, '', '', exp(random() * 4 - 1), n %% 50 <> 0
                FROM (SELECT g, g + %(offset)s AS n
                      FROM generate_series(%(first)s, %(last)s) AS g) AS numbered
                """,
                {
                    "deployment": str(deployment.pk),
                    "v1": str(v1),
                    "v2": str(v2),
                    "start": start,
                    "step": step,
                    "first": first,
                    "last": last,
                    "offset": offset,
                },
            )


def command_seed(rows: int) -> None:
    created = partitions.partitions_ensure(
        now=timezone.now() - timedelta(days=DAYS + 1), days_ahead=DAYS + 3
    )
    print(f"{len(created)} day partitions created")
    big = canary("big")
    fresh = not Deployment.objects.filter(ruleset__name="small").exists()
    small = canary("small")
    offset = ExecutionLog.objects.filter(deployment=big).count()
    started = time.perf_counter()
    seed(big, rows, offset)
    if fresh:
        seed(small, BASELINE_ROWS, 0)
    # The rows went into hours already rolled up: the next rollup starts over.
    ExecutionRollup.objects.filter(deployment=big).delete()
    RollupWatermark.objects.filter(deployment=big).delete()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitoring_executionlog")
    total = offset + rows
    print(f"seeded {rows:,} rows ({total:,} in all) in {time.perf_counter() - started:.0f} s")


def command_rollup() -> None:
    started = time.perf_counter()
    rollup_run()
    print(f"rolled up in {time.perf_counter() - started:.0f} s")


def timed(client: APIClient, url: str) -> float:
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content
    return statistics.median(samples)


def command_measure() -> None:
    big = Deployment.objects.get(ruleset__name="big", status="canary")
    small = Deployment.objects.get(ruleset__name="small", status="canary")
    rows = ExecutionLog.objects.filter(deployment=big).count()
    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_superuser": True}
    )
    client = APIClient()
    client.force_authenticate(user)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n| endpoint | {rows:,} logs (s) | {BASELINE_ROWS:,} logs (s) | ratio |")
    print("|---|---|---|---|")
    for path in ENDPOINTS:
        slow = timed(client, f"/api/v1/deployments/{big.pk}/{path}")
        fast = timed(client, f"/api/v1/deployments/{small.pk}/{path}")
        print(f"| {path} | {slow:.3f} | {fast:.3f} | {slow / fast:.1f}x |")
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS: {peak_before:.0f} MiB before the calls, {peak_after:.0f} MiB after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("seed").add_argument("rows", type=int)
    sub.add_parser("rollup")
    sub.add_parser("measure")
    args = parser.parse_args()
    if args.command == "seed":
        command_seed(args.rows)
    elif args.command == "rollup":
        command_rollup()
    else:
        command_measure()


if __name__ == "__main__":
    main()
