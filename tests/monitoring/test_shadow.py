"""Paired (shadow) evaluation through the real execute path: counts, changes, differences."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from deployments import services as lifecycle
from deployments.models import Deployment
from monitoring.models import ExecutionLog
from tests.stored import stored

pytestmark = pytest.mark.django_db

# v1: "hot" above 25; v2: "hot" above 27, then "zone" (reads input.zone) -> watch.
MOVED = {"temperature": 26, "zone": "C"}  # v1 raise (hot), v2 none (default): differs
COLD = {"temperature": 20, "zone": "C"}  # none in both
HOT = {"temperature": 30, "zone": "C"}  # raise in both
NO_ZONE = {"temperature": 20}  # v1 none; v2 fails reading input.zone


def execute(client: APIClient, deployment: Deployment, data: dict, user: str) -> Any:
    response = client.post(
        f"/api/v1/rulesets/{deployment.ruleset_id}/execute",
        {"input": data, "user_id": user},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response


def run_mix(client: APIClient, deployment: Deployment) -> dict[str, int]:
    counts = {"moved": 6, "cold": 5, "hot": 4, "no_zone": 3}
    inputs = {"moved": MOVED, "cold": COLD, "hot": HOT, "no_zone": NO_ZONE}
    for name, count in counts.items():
        for index in range(count):
            execute(client, deployment, inputs[name], f"{name}-{index}")
    return counts


def test_shadow_counts_agreements_and_the_decisions_that_change(
    canary_v2: Deployment, approver: APIClient, viewer: APIClient
) -> None:
    counts = run_mix(approver, canary_v2)
    body = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/shadow").json()
    total = sum(counts.values())
    assert body["evaluated"] == total
    assert body["disagreed"] == counts["moved"] + counts["no_zone"]
    assert body["agreed"] == counts["cold"] + counts["hot"]
    assert body["disagreement_rate"] == pytest.approx(body["disagreed"] / total)
    low, high = body["disagreement_rate_ci"]
    assert low < body["disagreement_rate"] < high
    assert body["outcomes"] == {
        "both_succeeded": counts["moved"] + counts["cold"] + counts["hot"],
        "only_v1_failed": 0,
        "only_v2_failed": counts["no_zone"],
        "both_failed": 0,
    }
    assert body["mcnemar"]["worse"] is None  # 3 discordant pairs: not evidence yet
    assert body["latency"]["pairs"] == total
    first, second = body["changes"][:2]
    assert first == {
        "v1_rule": "hot",
        "v2_rule": None,
        "v1_output": {"alert": "raise"},
        "v2_output": {"alert": "none"},
        "v1_success": True,
        "v2_success": True,
        "count": counts["moved"],
    }
    assert (second["v2_rule"], second["v2_success"], second["count"]) == (
        "zone",
        False,
        counts["no_zone"],
    )
    # The shadow is never returned to the caller.
    answer = execute(approver, canary_v2, MOVED, "moved-0").json()
    assert "shadow" not in str(answer).lower()


def test_differences_list_the_inputs_newest_first(
    canary_v2: Deployment, approver: APIClient, viewer: APIClient
) -> None:
    counts = run_mix(approver, canary_v2)
    url = f"/api/v1/deployments/{canary_v2.pk}/shadow/differences"
    page = viewer.get(url, {"page_size": 4}).json()
    assert page["total"] == counts["moved"] + counts["no_zone"]
    assert len(page["results"]) == 4 and page["next"]
    newest = page["results"][0]
    assert newest["input"] == NO_ZONE  # the last inputs sent
    assert newest["v1_output"] == {"alert": "none"} and newest["v2_output"] is None
    assert (newest["v1_rule"], newest["v2_rule"]) == (None, "zone")
    times = [row["executed_at"] for row in page["results"]]
    assert times == sorted(times, reverse=True)
    assert viewer.get(url, {"page_size": 0}).status_code == 400


def test_dark_launch_serves_nobody_v2_and_shadows_everyone(
    draft_v2: Deployment, approver: APIClient, viewer: APIClient
) -> None:
    dark = lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=0, actor="t")
    for index in range(10):
        response = execute(approver, dark, MOVED, f"user-{index}")
        assert response["X-Canary-Version"] == "v1"
        assert response.json()["output"] == {"alert": "raise"}
    body = viewer.get(f"/api/v1/deployments/{dark.pk}/shadow").json()
    assert body["dark_launch"] is True
    assert body["evaluated"] == 10 and body["disagreed"] == 10
    assert not stored(ExecutionLog).filter(deployment=dark, served_version="v2").exists()
    health = viewer.get(f"/api/v1/deployments/{dark.pk}/health").json()
    assert health["dark_launch"] is True


def test_traffic_accepts_zero(canary_v2: Deployment, approver: APIClient) -> None:
    response = approver.put(
        f"/api/v1/deployments/{canary_v2.pk}/traffic", {"traffic_percentage": 0}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["traffic_percentage"] == 0


def test_shadow_percentage_zero_records_no_pairs(
    draft_v2: Deployment, approver: APIClient, viewer: APIClient
) -> None:
    lifecycle.deployment_update(
        deployment_id=draft_v2.pk, canary_config={"shadow_percentage": 0}, actor="t"
    )
    canary = lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=50, actor="t")
    for index in range(8):
        execute(approver, canary, MOVED, f"user-{index}")
    assert stored(ExecutionLog).filter(deployment=canary).count() == 8
    assert viewer.get(f"/api/v1/deployments/{canary.pk}/shadow").json()["evaluated"] == 0


def test_comparison_is_repeatable_and_paired(
    canary_v2: Deployment, approver: APIClient, viewer: APIClient
) -> None:
    run_mix(approver, canary_v2)
    url = f"/api/v1/deployments/{canary_v2.pk}/comparison"
    first, second = viewer.get(url).json(), viewer.get(url).json()
    for answer in (first, second):
        answer["window"].pop("until")
        answer.pop("decision")  # when it was decided: the request's own time
    assert first == second
    assert first["analysis"]["basis"] == "paired"
    assert first["evidence"]["error_rate"]["only_v2_failed"] == 3


def test_bad_window_is_a_400_naming_the_field(canary_v2: Deployment, viewer: APIClient) -> None:
    response = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/shadow", {"window_minutes": 0})
    assert response.status_code == 400
    assert "window_minutes" in response.json()


def skew_assignments(canary: Deployment, v2: int, total: int) -> None:
    from django.utils import timezone

    from assignments.models import Assignment

    now = timezone.now()
    Assignment.objects.bulk_create(
        Assignment(
            deployment=canary,
            tier="user",
            identifier=f"skewed-{index}",
            assigned_version="v2" if index < v2 else "v1",
            version_id=canary.version_id if index < v2 else canary.baseline.version_id,
            user_id=f"skewed-{index}",
            assigned_at=now,
        )
        for index in range(total)
    )


def test_sample_ratio_mismatch_warns_and_blocks_promotion(
    canary_v2: Deployment, viewer: APIClient
) -> None:
    skew_assignments(canary_v2, v2=300, total=1_000)  # 30% where 10% was asked
    health = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/health").json()
    assert any(w.startswith("sample_ratio_mismatch:") for w in health["warnings"])
    assert health["health_status"] == "degraded"
    comparison = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/comparison").json()
    ratio = comparison["evidence"]["sample_ratio"]
    assert ratio["mismatch"] is True and ratio["contexts"] == 1_000
    assert comparison["comparison"]["recommendation"] != "promote"


def test_a_split_as_planned_is_no_mismatch(canary_v2: Deployment, viewer: APIClient) -> None:
    skew_assignments(canary_v2, v2=105, total=1_000)
    health = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/health").json()
    assert not any("sample_ratio_mismatch" in w for w in health["warnings"])


def test_readiness_uses_the_paired_outcomes(canary_v2: Deployment, viewer: APIClient) -> None:
    from tests.monitoring.logs import add_logs

    add_logs(canary_v2, "v1", [1.0] * 100, errors=4, paired=True, shared_errors=4)
    add_logs(canary_v2, "v2", [1.0] * 20, errors=2, paired=True)  # 2 only-v2 failures
    body = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/readiness").json()
    checks = {check["name"]: check for check in body["checks"]}
    assert "inputs both versions evaluated" in checks["success_rate"]["detail"]
    # 2 against 0 is no evidence that v2 is worse, and none that it is not: it waits.
    assert checks["success_rate"]["passed"] is False
    assert "Not yet shown not worse" in checks["success_rate"]["detail"]
    assert checks["shadow_agreement"]["observed"] == pytest.approx(118 / 120)
    assert checks["shadow_agreement"]["required"] is False


def test_a_large_window_reads_the_ratio_from_its_histogram(
    canary_v2: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above RATIO_EXACT_PAIRS pairs no ratio is sorted: the median and interval come
    from one grouped pass, within 1% of the exact order statistics and repeatable."""
    from monitoring.decision import shadow
    from tests.monitoring.logs import add_logs

    add_logs(
        canary_v2, "v1", [1.0 + n / 100 for n in range(60)], paired=True,
        shadow_latencies=[2.0 + n / 50 for n in range(60)],
    )  # fmt: skip
    add_logs(
        canary_v2, "v2", [3.0 + n / 40 for n in range(30)], paired=True,
        shadow_latencies=[1.5 + n / 70 for n in range(30)],
    )  # fmt: skip
    exact = shadow.paired_latency_ratio(deployment_id=canary_v2.pk)
    monkeypatch.setattr(shadow, "RATIO_EXACT_PAIRS", 40)
    binned = shadow.paired_latency_ratio(deployment_id=canary_v2.pk)
    assert binned["pairs"] == exact["pairs"] == 90
    assert binned["v2_over_v1_median_ratio"] == pytest.approx(
        exact["v2_over_v1_median_ratio"], rel=0.01
    )
    assert binned["ci"] == pytest.approx(exact["ci"], rel=0.01)
    assert shadow.paired_latency_ratio(deployment_id=canary_v2.pk) == binned


@pytest.mark.parametrize("one_trip", [True, False], ids=["one Redis trip", "general path"])
def test_neither_version_is_always_timed_first(
    draft_v2: Deployment, approver: APIClient, monkeypatch: pytest.MonkeyPatch, one_trip: bool
) -> None:
    """The first evaluation of a request runs on caches the request left cold; the paired
    latency ratio must not credit that to the version that always runs second."""
    from django.conf import settings

    from assignments.services import execute as dataplane

    if one_trip and not settings.REDIS_URL:
        pytest.skip("the one-trip path needs Redis (CI runs on it)")
    if not one_trip:
        monkeypatch.setattr(dataplane, "redis_available", lambda: False)
    dark = lifecycle.deployment_start_canary(deployment_id=draft_v2.pk, canary_pct=0, actor="t")
    first: list[bool] = []  # per request: was v1 (the served version) evaluated first?
    evaluate = dataplane._evaluate

    def recording(
        rules: Any, input: Any, budget_ms: float | None = None, prepared: Any = None
    ) -> Any:
        if not calls:
            first.append(rules.evaluate(MOVED).matched_rule == "hot")  # only v1 says "hot"
        calls.append(1)
        return evaluate(rules, input, budget_ms, prepared)

    calls: list[int] = []
    monkeypatch.setattr(dataplane, "_evaluate", recording)
    for index in range(40):
        calls.clear()
        first_before = len(first)
        execute(approver, dark, COLD, f"order-{index}")
        assert len(first) == first_before + 1 and len(calls) == 2  # served and shadow
    assert 5 <= sum(first) <= 35  # v1 (served) ran first in some requests, v2 in others
