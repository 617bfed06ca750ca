"""A redacted input path never reaches the database; replay and differences say so."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import TestCase
from rest_framework.test import APIClient

from assignments import router
from assignments.services import dataplane_execute
from deployments import services as lifecycle
from deployments.models import Deployment, RuleSet
from monitoring.automation.compensation import compensation_replay
from monitoring.models import ExecutionLog
from tests.monitoring.test_compensation import manual_canary
from tests.stored import stored

pytestmark = pytest.mark.django_db

SECRET = "jane.doe@example.com"
MOVED = {"temperature": 26, "zone": "C", "customer": {"email": SECRET, "tier": "gold"}}


def redact(deployment: Deployment, paths: list[str]) -> None:
    # As committed: the announcement that makes every process reload its state runs.
    with TestCase.captureOnCommitCallbacks(execute=True):
        lifecycle.ruleset_update(
            ruleset_id=deployment.ruleset_id, redacted_input_paths=paths, actor="t"
        )


def serve(deployment: Deployment, data: dict, users: int = 4) -> None:
    for n in range(users):
        dataplane_execute(
            ruleset_id=deployment.ruleset_id,
            input=data,
            context=router.RoutingContext(user_id=f"user-{n}"),
        )


def raw_rows(deployment: Deployment) -> list[str]:
    """Every stored column of every row as the database returns it, as text."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT * FROM monitoring_executionlog WHERE deployment_id = %s",
            [deployment.pk.hex if connection.vendor == "sqlite" else deployment.pk],
        )
        return [repr(row) for row in cursor.fetchall()]


def test_a_redacted_path_never_reaches_the_database() -> None:
    canary = manual_canary("redacted")
    redact(canary, ["customer.email"])
    serve(canary, MOVED)
    rows = stored(ExecutionLog).filter(deployment=canary)
    assert rows.count() == 4
    for row in rows:
        assert row.input == {"temperature": 26, "zone": "C", "customer": {"tier": "gold"}}
        assert row.redacted_paths == ["customer.email"]
    assert not any(SECRET in row for row in raw_rows(canary))


def test_store_inputs_off_stores_no_input(settings: Any) -> None:
    settings.CANARY_STORE_INPUTS = False
    canary = manual_canary("no-inputs")
    serve(canary, MOVED, users=2)
    rows = stored(ExecutionLog).filter(deployment=canary)
    assert [(row.input, row.redacted_paths) for row in rows] == [({}, ["*"])] * 2
    assert not any(SECRET in row for row in raw_rows(canary))


def test_replay_reports_redacted_inputs_instead_of_guessing(
    roles: None, approver: APIClient
) -> None:
    canary = manual_canary("replay-redacted")
    serve(canary, {"temperature": 26, "zone": "C"}, users=3)  # complete inputs
    redact(canary, ["zone"])
    serve(canary, {"temperature": 26, "zone": "C"}, users=2)  # stored without the zone
    lifecycle.deployment_rollback(deployment_id=canary.pk, reason="x", actor="t")
    v2 = stored(ExecutionLog).filter(deployment=canary, served_version="v2")
    replayable = v2.filter(redacted_paths__isnull=True).count()
    redacted = v2.filter(redacted_paths__isnull=False).count()
    assert replayable and redacted

    result = compensation_replay(deployment_id=canary.pk)
    assert result["redacted"] == redacted
    assert result["processed"] == replayable + redacted
    assert not v2.filter(redacted_paths__isnull=False, replay_success__isnull=False).exists()
    body = approver.get(f"/api/v1/deployments/{canary.pk}/compensation").json()
    assert body["redacted"] == redacted
    notes = [row["redaction"] for row in body["differences"] if row["redacted_paths"]]
    assert notes == ["input redacted: zone"] * redacted


def test_shadow_differences_carry_the_redaction_note(
    canary_v2: Deployment, viewer: APIClient
) -> None:
    redact(canary_v2, ["customer.email"])
    serve(canary_v2, MOVED, users=3)
    body = viewer.get(f"/api/v1/deployments/{canary_v2.pk}/shadow/differences").json()
    assert body["total"] == 3
    for row in body["results"]:
        assert row["redacted_paths"] == ["customer.email"]
        assert row["redaction"] == "input redacted: customer.email"
        assert SECRET not in str(row["input"])


def test_paths_are_set_and_validated_through_the_api(
    ruleset: RuleSet, admin_api: APIClient, viewer: APIClient
) -> None:
    url = f"/api/v1/rulesets/{ruleset.pk}"
    generation = ruleset.routing_generation
    ok = admin_api.patch(url, {"redacted_input_paths": ["customer.email"]}, format="json")
    assert ok.status_code == 200, ok.content
    assert ok.json()["redacted_input_paths"] == ["customer.email"]
    assert RuleSet.objects.get(pk=ruleset.pk).routing_generation == generation + 1
    bad = admin_api.patch(url, {"redacted_input_paths": ["a..b"]}, format="json")
    assert bad.status_code == 400 and "redacted_input_paths" in str(bad.json())
    assert viewer.patch(url, {"redacted_input_paths": []}, format="json").status_code == 403
    created = admin_api.post(
        "/api/v1/rulesets",
        {"name": "with-redaction", "redacted_input_paths": ["ssn"]},
        format="json",
    )
    assert created.status_code == 201 and created.json()["redacted_input_paths"] == ["ssn"]
