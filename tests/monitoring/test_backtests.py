"""Backtests (SPEC 10.2): the report equals an independent evaluation of both versions."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from deployments.models import Deployment, DeploymentEvent, RuleSet
from deployments.rules import compile_rules
from deployments.rules import language as rl
from monitoring.automation.backtests import (
    backtest_create,
    backtest_report,
    backtest_run,
    backtest_sweep,
    evaluate_pair,
)
from monitoring.models import Backtest, BacktestDifference, CapturedInput, ExecutionLog
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES

pytestmark = pytest.mark.django_db

EXPECT = "input.temperature > 25 && input.temperature <= 27"


def recorded_inputs(ruleset: RuleSet, deployment: Deployment, count: int) -> list[tuple]:
    """Captured inputs and canary executions, interleaved in time; (created_at, input) of
    every input a backtest may read, plus executions without a stored input, which it may not."""
    rng = random.Random(7)
    now = timezone.now()
    readable, captured, logged = [], [], []
    for n in range(count):
        document: dict[str, Any] = {"temperature": rng.randint(18, 32)}
        if rng.random() < 0.8:
            document["zone"] = rng.choice(["A", "B", "C"])
        at = now - timedelta(seconds=10 * n + 5)
        readable.append((at, document))
        if n % 3:
            captured.append(CapturedInput(ruleset=ruleset, input=document, created_at=at))
        else:
            logged.append(
                ExecutionLog(
                    deployment=deployment,
                    served_version="v1",
                    version_id=deployment.version_id,
                    success=True,
                    latency_ms=1.0,
                    input=document,
                    created_at=at,
                )
            )
    unstored = [
        ExecutionLog(
            deployment=deployment,
            served_version="v1",
            version_id=deployment.version_id,
            success=True,
            latency_ms=1.0,
            input={},
            redacted_paths=["*"],
            created_at=now - timedelta(seconds=3),
        )
    ]
    CapturedInput.objects.bulk_create(captured)
    ExecutionLog.objects.bulk_create(logged + unstored)
    return readable


def independent(inputs: list[dict]) -> dict[str, Any]:
    """Both versions evaluated here, without the backtest's code."""
    v1 = compile_rules(V1_RULES, DEFAULT_OUTPUT)
    v2 = compile_rules(V2_RULES, DEFAULT_OUTPUT)
    expected_rule = compile_rules([{"name": "e", "condition": EXPECT, "output": True}], False)
    outcomes: Counter = Counter()
    changes: Counter = Counter()
    unexpected = []
    for document in inputs:
        one, two = v1.evaluate(document), v2.evaluate(document)
        outcomes[
            {
                (True, True): "both_succeeded",
                (True, False): "only_v2_failed",
                (False, True): "only_v1_failed",
                (False, False): "both_failed",
            }[(one.success, two.success)]
        ] += 1
        if (one.success, one.output) == (two.success, two.output):
            continue
        rule = [(e.matched_rule if e.success else e.error.rule) or None for e in (one, two)]
        changes[(rule[0], rule[1], repr(one.output), repr(two.output))] += 1
        verdict = expected_rule.evaluate(document)
        if not (verdict.success and verdict.output is True):
            unexpected.append(document)
    return {"outcomes": outcomes, "changes": changes, "unexpected": unexpected}


def test_counts_changes_and_unexpected_equal_an_independent_computation(
    draft_v2: Deployment,
    active_v1: Deployment,
    approver: APIClient,
    viewer: APIClient,
    settings: Any,
) -> None:
    settings.CANARY_BACKTEST_CHUNK = 7
    ruleset = draft_v2.ruleset
    readable = recorded_inputs(ruleset, active_v1, 150)
    limit = 120
    created = approver.post(
        f"/api/v1/rulesets/{ruleset.pk}/backtests",
        {"version": "v2.0.0", "limit": limit, "expect_changes": EXPECT},
        format="json",
    )
    assert created.status_code == 202, created.content
    assert created.json()["status"] == "queued"
    backtest_id = created.json()["id"]
    backtest_run(backtest_id=backtest_id)

    body = viewer.get(f"/api/v1/backtests/{backtest_id}").json()
    newest = [document for _, document in sorted(readable, key=lambda r: r[0], reverse=True)]
    truth = independent(newest[:limit])
    assert body["status"] == "done"
    assert (body["version"], body["against"]) == ("v2.0.0", "v1.0.0")
    assert body["progress"] == {"evaluated": limit, "total": limit}
    assert body["evaluated"] == limit
    assert body["outcomes"] == {
        name: truth["outcomes"][name]
        for name in ("both_succeeded", "only_v1_failed", "only_v2_failed", "both_failed")
    }
    disagreed = sum(truth["changes"].values())
    assert (body["disagreed"], body["agreed"]) == (disagreed, limit - disagreed)
    assert body["disagreement_rate"] == pytest.approx(disagreed / limit)
    low, high = body["disagreement_rate_ci"]
    assert low < body["disagreement_rate"] < high
    assert (
        Counter(
            {
                (c["v1_rule"], c["v2_rule"], repr(c["v1_output"]), repr(c["v2_output"])): c["count"]
                for c in body["changes"]
            }
        )
        == truth["changes"]
    )
    assert [c["count"] for c in body["changes"]] == sorted(
        (c["count"] for c in body["changes"]), reverse=True
    )
    assert body["unexpected"]["count"] == len(truth["unexpected"])
    assert body["unexpected"]["examples"]
    assert len(body["unexpected"]["examples"]) == min(10, len(truth["unexpected"]))
    assert [e["input"] for e in body["unexpected"]["examples"]] == truth["unexpected"][:10]
    assert body["latency"]["v2_over_v1_median_ratio"] > 0
    assert body["expect_changes"] == EXPECT
    assert body["finished_at"] and body["error"] is None

    first = viewer.get(f"/api/v1/backtests/{backtest_id}/differences?page_size=10").json()
    assert first["total"] == disagreed
    rows = first["results"]
    page = 2
    while len(rows) < disagreed:
        rows += viewer.get(
            f"/api/v1/backtests/{backtest_id}/differences?page_size=10&page={page}"
        ).json()["results"]
        page += 1
    assert sum(1 for row in rows if row["expected"] is False) == len(truth["unexpected"])

    listed = viewer.get(f"/api/v1/rulesets/{ruleset.pk}/backtests").json()["results"]
    assert [item["id"] for item in listed] == [backtest_id]
    event = DeploymentEvent.objects.get(deployment=draft_v2, action="backtest_completed")
    assert event.payload["backtest_id"] == backtest_id
    assert event.payload["unexpected"] == len(truth["unexpected"])

    # Idempotent: running it again changes nothing.
    backtest_run(backtest_id=backtest_id)
    assert viewer.get(f"/api/v1/backtests/{backtest_id}").json()["disagreed"] == disagreed
    assert DeploymentEvent.objects.filter(action="backtest_completed").count() == 1


def test_a_backtest_run_in_parts_finds_what_one_run_finds(
    draft_v2: Deployment, active_v1: Deployment, settings: Any
) -> None:
    """Parts cut the order where captured inputs and executions share a timestamp; each
    keeps its first differences, and the backtest the first overall."""
    settings.CANARY_BACKTEST_CHUNK = 4
    settings.CANARY_BACKTEST_MAX_DIFFERENCES = 50
    ruleset = draft_v2.ruleset
    rng = random.Random(3)
    now = timezone.now()
    captured, logged = [], []
    for n in range(90):
        at = now - timedelta(seconds=10 * (n // 3) + 5)  # three inputs per timestamp
        # Every input a difference, each its own: the stored differences show the order.
        document = {"temperature": rng.randint(18, 27), "zone": rng.choice(["A", "B"]), "n": n}
        if n % 3 == 1:
            logged.append(
                ExecutionLog(
                    deployment=active_v1,
                    served_version="v1",
                    version_id=active_v1.version_id,
                    success=True,
                    latency_ms=1.0,
                    input=document,
                    created_at=at,
                )
            )
        else:
            captured.append(CapturedInput(ruleset=ruleset, input=document, created_at=at))
    CapturedInput.objects.bulk_create(captured)
    ExecutionLog.objects.bulk_create(logged)

    def run(parts: int) -> tuple[Backtest, dict[str, Any], list[tuple]]:
        settings.CANARY_BACKTEST_PARTS = parts
        backtest = backtest_create(
            ruleset_id=ruleset.pk, version="v2.0.0", limit=80, expect_changes=EXPECT, actor=None
        )
        backtest_run(backtest_id=backtest.pk)
        backtest.refresh_from_db()
        report = backtest_report(backtest)
        for varying in ("id", "created_at", "finished_at", "latency"):
            report.pop(varying)
        differences = list(
            BacktestDifference.objects.filter(backtest=backtest)
            .order_by("position")
            .values_list("position", "input", "v1_output", "v2_output", "v1_rule", "expected")
        )
        return backtest, report, differences

    whole, whole_report, whole_differences = run(1)
    parted, parted_report, parted_differences = run(3)

    assert len(whole.state["parts"]) == 1
    assert [(p["start"], p["size"]) for p in parted.state["parts"]] == [(0, 26), (26, 27), (53, 27)]
    assert whole_report["status"] == parted_report["status"] == "done"
    assert whole_report["disagreed"] == 80
    assert parted_report == whole_report
    assert parted_differences == whole_differences
    assert len(whole_differences) == 50


def test_a_backtest_begun_before_parts_resumes_from_its_cursors(
    draft_v2: Deployment, active_v1: Deployment
) -> None:
    readable = recorded_inputs(draft_v2.ruleset, active_v1, 40)
    backtest = backtest_create(
        ruleset_id=draft_v2.ruleset_id,
        version="v2.0.0",
        limit=30,
        expect_changes=EXPECT,
        actor=None,
    )
    start = [backtest.created_at.isoformat(), 2**63 - 1]
    outcomes = ("both_succeeded", "only_v1_failed", "only_v2_failed", "both_failed")
    Backtest.objects.filter(pk=backtest.pk).update(
        status="running",
        attempts=1,
        total=30,
        state={  # as a run of the previous release left it, before its first chunk
            "cursors": {"captured": start, "executions": start},
            "outcomes": dict.fromkeys(outcomes, 0),
            "agreed": 0,
            "changes": {},
            "ratio": {},
            "unexpected": 0,
            "examples": [],
            "differences": 0,
        },
    )

    backtest_run(backtest_id=backtest.pk)

    backtest.refresh_from_db()
    report = backtest_report(backtest)
    newest = [document for _, document in sorted(readable, key=lambda r: r[0], reverse=True)]
    truth = independent(newest[:30])
    assert (report["status"], report["evaluated"]) == ("done", 30)
    assert report["outcomes"] == {name: truth["outcomes"][name] for name in outcomes}
    assert report["disagreed"] == sum(truth["changes"].values())
    assert report["unexpected"]["count"] == len(truth["unexpected"])


def test_an_evaluation_stopped_by_the_budget_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A busy machine may deschedule an evaluation past the wall-clock budget; that says
    nothing about the rules, so the backtest does not count it as the version's failure."""
    v1 = compile_rules(V1_RULES, DEFAULT_OUTPUT)
    v2 = compile_rules(V2_RULES, DEFAULT_OUTPUT)
    document = {"temperature": 26, "zone": "A"}
    reads = 0

    def descheduled_once() -> float:  # the third read: after v1's first rule
        nonlocal reads
        reads += 1
        return time.perf_counter() + (60.0 if reads == 3 else 0.0)

    monkeypatch.setattr(rl, "_clock", descheduled_once)
    one, two, _, _, _ = evaluate_pair(v1, v2, document)

    assert reads > 3
    assert (one.success, one.output, one.matched_rule) == (True, {"alert": "raise"}, "hot")
    assert (two.success, two.output, two.matched_rule) == (True, {"alert": "watch"}, "zone")


def test_bad_requests_name_their_field(
    draft_v2: Deployment, approver: APIClient, viewer: APIClient
) -> None:
    url = f"/api/v1/rulesets/{draft_v2.ruleset_id}/backtests"
    for body, field in [
        ({"version": "v2.0.0", "expect_changes": "input.temperature >"}, "expect_changes"),
        ({"version": "v2.0.0", "expect_changes": "no_such_function(input)"}, "expect_changes"),
        ({"version": "v9.0.0"}, "version"),
        ({"version": "v2.0.0", "against": "v8.0.0"}, "against"),
        ({"version": "v2.0.0", "limit": 1_000_001}, "limit"),
        ({"version": "v2.0.0", "limit": 0}, "limit"),
    ]:
        response = approver.post(url, body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in response.json(), (body, response.json())
    assert viewer.post(url, {"version": "v2.0.0"}, format="json").status_code == 403
    assert viewer.get("/api/v1/backtests/not-a-uuid").status_code == 404


def test_a_silent_run_is_resumed_and_one_out_of_attempts_fails(
    draft_v2: Deployment, active_v1: Deployment, approver: APIClient, settings: Any
) -> None:
    settings.CANARY_BACKTEST_MAX_ATTEMPTS = 2
    recorded_inputs(draft_v2.ruleset, active_v1, 10)
    created = approver.post(
        f"/api/v1/rulesets/{draft_v2.ruleset_id}/backtests", {"version": "v2.0.0"}, format="json"
    ).json()
    backtest = Backtest.objects.get(pk=created["id"])
    later = timezone.now() + timedelta(seconds=settings.CANARY_BACKTEST_STALE_SECONDS + 1)
    # Queued and never picked up (a lost message): re-queued, still queued.
    assert backtest_sweep(now=later) == 1
    Backtest.objects.filter(pk=backtest.pk).update(
        status="running", attempts=2, heartbeat_at=timezone.now()
    )
    assert backtest_sweep(now=later + timedelta(seconds=settings.CANARY_BACKTEST_STALE_SECONDS))
    backtest.refresh_from_db()
    assert backtest.status == "failed"
    assert "attempts" in backtest.error


def test_a_finished_backtest_is_announced_once_to_its_webhooks(
    draft_v2: Deployment, active_v1: Deployment, approver: APIClient
) -> None:
    from monitoring.models import WebhookDelivery
    from monitoring.notifications.webhooks import webhook_create

    listening = webhook_create(
        name="ci", url="http://127.0.0.1:9/hook", events=["backtest.completed"]
    )
    webhook_create(name="other", url="http://127.0.0.1:9/other", events=["deployment.promoted"])
    ruleset = draft_v2.ruleset
    recorded_inputs(ruleset, active_v1, 30)
    created = approver.post(
        f"/api/v1/rulesets/{ruleset.pk}/backtests", {"version": "v2.0.0"}, format="json"
    )
    backtest_id = created.json()["id"]

    backtest_run(backtest_id=backtest_id)
    backtest_run(backtest_id=backtest_id)

    delivery = WebhookDelivery.objects.get(event_type="backtest.completed")
    assert delivery.webhook_id == listening.pk
    assert delivery.event["attributes"]["subject"] == backtest_id
    assert delivery.event["attributes"]["type"] == "io.canary.backtest.completed"
    report = delivery.event["data"]["backtest"]
    assert (report["id"], report["status"], report["evaluated"]) == (backtest_id, "done", 30)
