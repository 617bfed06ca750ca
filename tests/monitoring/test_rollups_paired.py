"""Paired outcomes in rollups: a long canary's shadow answers come from hourly rollups,
equal to the raw rows' (counts exactly, latencies within 1%), and rollups written
before paired outcomes existed are filled in rather than trusted."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.models import Deployment
from monitoring.decision import shadow, windows
from monitoring.logstore import rollups
from monitoring.models import ExecutionLog, ExecutionRollup
from tests.concurrency import run_together

pytestmark = pytest.mark.django_db

RAISE, NONE = {"alert": "raise"}, {"alert": "none"}


def paired_rows(deployment: Deployment, now: datetime) -> int:
    """Six hours of executions every ten minutes, half paired, with known kinds of
    disagreement (a moved decision, a v2-only failure, a v1-only failure); returns
    how many disagree."""
    rng = np.random.default_rng(11)
    rows, disagreeing = [], 0
    v1_id, v2_id = deployment.baseline.version_id, deployment.version_id
    for minutes_ago in range(360, 0, -10):
        at = now - timedelta(minutes=minutes_ago)
        for index in range(30):
            served = "v2" if index % 3 == 0 else "v1"
            paired = index % 2 == 0
            kind = index % 10
            served_v1 = served == "v1"
            v1_ok = kind != 4  # the v1-only failure
            v2_ok = kind != 2  # the v2-only failure
            v1_rule, v2_rule = ("hot", "" if kind == 6 else "hot")  # kind 6: a moved decision
            v1_out, v2_out = RAISE, NONE if kind == 6 else RAISE
            latency, other = (float(x) for x in rng.lognormal(0.5, 0.6, size=2))
            ok, shadow_ok = (v1_ok, v2_ok) if served_v1 else (v2_ok, v1_ok)
            row = ExecutionLog(
                deployment=deployment,
                served_version=served,
                version_id=v1_id if served_v1 else v2_id,
                success=ok,
                latency_ms=latency,
                error_rule="" if ok else "hot",
                error_message="" if ok else "boom",
                matched_rule=(v1_rule if served_v1 else v2_rule) if ok else "",
                output=(v1_out if served_v1 else v2_out) if ok else None,
                input={"n": index},
                created_at=at,
            )
            if paired:
                agreed = v1_ok == v2_ok and (not v1_ok or (v1_rule, v1_out) == (v2_rule, v2_out))
                row.shadow_success = shadow_ok
                row.shadow_latency_ms = other
                row.shadow_rule = (v2_rule if served_v1 else v1_rule) if shadow_ok else "hot"
                row.shadow_output = (v2_out if served_v1 else v1_out) if shadow_ok else None
                row.agreed = agreed
                disagreeing += not agreed
            rows.append(row)
    ExecutionLog.objects.bulk_create(rows)
    return disagreeing


def answers(deployment: Deployment, since: datetime, until: datetime) -> dict[str, Any]:
    window = {"deployment_id": deployment.pk, "since": since, "until": until}
    return {
        "counts": shadow.paired_counts(**window),
        "discordant": shadow.discordant_counts(**window),
        "direction": shadow.paired_latency_direction(**window),
        "p95": shadow.paired_latency_p95(**window),
        "ratio": shadow.paired_latency_ratio(**window),
        "changes": shadow.shadow_changes(deployment_id=deployment.pk, since=since),
        "disagreements": shadow.disagreement_count(deployment_id=deployment.pk, since=since),
    }


def assert_same(rolled: dict[str, Any], exact: dict[str, Any]) -> None:
    for exact_key in ("counts", "discordant", "direction", "changes", "disagreements"):
        assert rolled[exact_key] == exact[exact_key], exact_key
    assert rolled["p95"] == pytest.approx(exact["p95"], rel=0.01)
    assert rolled["ratio"]["pairs"] == exact["ratio"]["pairs"]
    median = exact["ratio"]["v2_over_v1_median_ratio"]
    assert rolled["ratio"]["v2_over_v1_median_ratio"] == pytest.approx(median, rel=0.01)
    assert rolled["ratio"]["ci"] == pytest.approx(exact["ratio"]["ci"], rel=0.01)


def rolled_up(deployment: Deployment, since: datetime, until: datetime) -> bool:
    return windows._span(deployment.pk, since, until, paired=True).hours is not None


@pytest.fixture
def long_canary(canary_v2: Deployment) -> tuple[Deployment, datetime, datetime, int]:
    now = (timezone.now() - timedelta(hours=1)).replace(minute=30, second=30, microsecond=0)
    Deployment.objects.filter(pk=canary_v2.pk).update(started_at=now - timedelta(hours=7))
    canary_v2.refresh_from_db()
    disagreeing = paired_rows(canary_v2, now)
    # Not hour-aligned: the partial first hour and the tail come from raw rows.
    return canary_v2, now - timedelta(hours=6, minutes=5), now + timedelta(seconds=1), disagreeing


def test_a_long_window_answers_from_rollups_as_the_raw_rows_do(
    long_canary: tuple[Deployment, datetime, datetime, int],
) -> None:
    deployment, since, until, disagreeing = long_canary
    exact = answers(deployment, since, until)
    assert not rolled_up(deployment, since, until)
    assert exact["disagreements"] == disagreeing > 0
    assert exact["counts"].only_v1_failed and exact["counts"].only_v2_failed
    assert exact["changes"][0]["v2_output"] == NONE  # the moved decision is the commonest

    rollups.rollup_deployment(deployment=deployment, now=until)
    assert rolled_up(deployment, since, until)
    assert_same(answers(deployment, since, until), exact)


def test_rolled_up_pairs_outlive_their_raw_rows(
    long_canary: tuple[Deployment, datetime, datetime, int],
) -> None:
    """Retention drops whole days of raw logs; the pair counts of those hours remain."""
    deployment, since, until, _ = long_canary
    exact = answers(deployment, since, until)
    rollups.rollup_deployment(deployment=deployment, now=until)
    watermark = rollups.watermark_for(deployment.pk)
    first_hour = rollups.floor_hour(since) + timedelta(hours=1)
    ExecutionLog.objects.filter(
        deployment=deployment, created_at__gte=first_hour, created_at__lt=watermark
    ).delete()
    kept = answers(deployment, since, until)
    assert kept["counts"] == exact["counts"]
    assert kept["changes"] == exact["changes"]


def test_rollups_without_paired_outcomes_are_filled_in_not_trusted(
    long_canary: tuple[Deployment, datetime, datetime, int],
) -> None:
    deployment, since, until, _ = long_canary
    exact = answers(deployment, since, until)
    rollups.rollup_deployment(deployment=deployment, now=until)
    # As rows rolled up before the paired columns existed.
    stale = ExecutionRollup.objects.filter(deployment=deployment)
    stale.update(**dict.fromkeys(rollups.PAIRED_FIELDS))
    assert not rolled_up(deployment, since, until)  # the raw rows answer meanwhile
    assert answers(deployment, since, until)["counts"] == exact["counts"]

    assert rollups.backfill_paired(deployment=deployment) == stale.count()
    assert rolled_up(deployment, since, until)
    assert_same(answers(deployment, since, until), exact)


def test_differences_total_from_rollups_matches_the_rows_paged(
    long_canary: tuple[Deployment, datetime, datetime, int], viewer: APIClient
) -> None:
    deployment, _, until, disagreeing = long_canary
    rollups.rollup_deployment(deployment=deployment, now=until)
    url = f"/api/v1/deployments/{deployment.pk}/shadow/differences"
    seen, page = 0, viewer.get(url, {"page_size": 100}).json()
    total = page["total"]
    while True:
        seen += len(page["results"])
        if not page["next"]:
            break
        page = viewer.get(page["next"]).json()
    assert total == seen == disagreeing


def test_slices_folded_every_few_minutes_answer_as_one_fold_does(
    long_canary: tuple[Deployment, datetime, datetime, int],
) -> None:
    """The job runs every minute: each closed slice grows its hour's rollup."""
    deployment, since, until, _ = long_canary
    exact = answers(deployment, since, until)
    moment = since
    while moment < until:
        rollups.rollup_deployment(deployment=deployment, now=moment)
        moment += timedelta(minutes=7)
    rollups.rollup_deployment(deployment=deployment, now=until)
    assert rollups.watermark_for(deployment.pk) > until - timedelta(minutes=7)
    assert rolled_up(deployment, since, until)
    assert_same(answers(deployment, since, until), exact)


@pytest.mark.django_db(transaction=True)
def test_two_rollup_runs_at_once_fold_every_row_once(
    long_canary: tuple[Deployment, datetime, datetime, int],
) -> None:
    """A first fold of a big canary can outlast the one-minute schedule."""
    deployment, since, until, _ = long_canary
    exact = answers(deployment, since, until)
    written = run_together(
        *[lambda: rollups.rollup_deployment(deployment=deployment, now=until)] * 2
    )
    assert sorted(written)[0] == 0 and sorted(written)[1] > 0  # the second found it done
    assert rolled_up(deployment, since, until)
    assert_same(answers(deployment, since, until), exact)
