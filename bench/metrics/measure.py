"""Seed a big and a small deployment, roll up, then time the measurement endpoints.

Prints, per endpoint, the median of 7 calls for the 10M-log deployment, the same
for the 10k-log baseline, their ratio, and the process's peak memory before and
after, so "memory stays flat" is visible.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from datetime import timedelta

import django

django.setup()

from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from deployments import services  # noqa: E402
from deployments.models import Deployment  # noqa: E402
from monitoring import partitions  # noqa: E402
from monitoring.rollups import rollup_run  # noqa: E402

RULES = [{"name": "hot", "condition": "input.temperature > 25", "output": {"alert": True}}]


def canary(name: str) -> Deployment:
    ruleset = services.ruleset_create(name=name, actor="bench")
    for version in ("v1.0.0", "v2.0.0"):
        services.ruleset_version_create(
            ruleset=ruleset, version=version, rules=RULES, default=None, actor="bench"
        )
    first = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="bench")
    services.deployment_promote(deployment_id=first.pk, actor="bench")
    draft = services.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="bench")
    started = services.deployment_start_canary(deployment_id=draft.pk, canary_pct=10, actor="bench")
    # The canary began a week ago, so "the whole canary" spans every row.
    Deployment.objects.filter(pk=started.pk).update(
        started_at=started.started_at.replace(year=2000)
    )
    return Deployment.objects.get(pk=started.pk)


def seed(deployment: Deployment, rows: int) -> None:
    """Rows spread over the last 7 days; 10% v2, 2% of v2 and 1% of v1 failing.

    Every row is paired (shadowed); 2% of the pairs disagree.
    """
    v1 = deployment.baseline.version_id
    v2 = deployment.version_id
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO monitoring_executionlog
              (deployment_id, served_version, version_id, success, latency_ms, error_rule,
               error_message, user_id, session_id, workflow_id, input, needs_reprocess, created_at,
               matched_rule, shadow_success, shadow_rule, shadow_error_message,
               shadow_latency_ms, agreed)
            SELECT %s,
                   CASE WHEN g %% 10 = 0 THEN 'v2' ELSE 'v1' END,
                   CASE WHEN g %% 10 = 0 THEN %s::uuid ELSE %s::uuid END,
                   NOT ((g %% 10 = 0 AND g %% 500 = 0) OR (g %% 10 <> 0 AND g %% 100 = 1)),
                   exp(random() * 4 - 1),
                   '', '', 'user-' || (g %% 100000), '', '', '{}'::jsonb, false,
                   now() - (random() * interval '7 days'),
                   '', true, '', '', exp(random() * 4 - 1), g %% 50 <> 0
            FROM generate_series(1, %s) AS g
            """,
            [str(deployment.pk), str(v2), str(v1), rows],
        )


def timed(client: APIClient, url: str) -> float:
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.content
    return statistics.median(samples)


def main() -> None:
    rows = int(sys.argv[1])
    # Day partitions for the seeded week (on PostgreSQL; a no-op on a plain table).
    created = partitions.partitions_ensure(now=timezone.now() - timedelta(days=8), days_ahead=9)
    print(f"{len(created)} day partitions created for the seeded week")
    big, small = canary("big"), canary("small")
    started = time.perf_counter()
    seed(big, rows)
    seed(small, 10_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE monitoring_executionlog")
    print(f"seeded {rows:,} + 10,000 rows in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    rollup_run()
    print(f"rolled up in {time.perf_counter() - started:.0f} s")

    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create(username="bench", is_superuser=True)
    client = APIClient()
    client.force_authenticate(user)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n| endpoint | {rows:,} logs (s) | 10,000 logs (s) | ratio |")
    print("|---|---|---|---|")
    for path in (
        "metrics",
        "comparison",
        "health",
        "metrics?window_minutes=30",
        "shadow",
        "shadow/differences",
    ):
        slow = timed(client, f"/api/v1/deployments/{big.pk}/{path}")
        fast = timed(client, f"/api/v1/deployments/{small.pk}/{path}")
        print(f"| {path} | {slow:.3f} | {fast:.3f} | {slow / fast:.1f}x |")
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS: {peak_before:.0f} MiB before the calls, {peak_after:.0f} MiB after")


if __name__ == "__main__":
    main()
