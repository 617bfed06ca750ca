"""Captured production inputs (SPEC 10.2): sampled in process, redacted, on the one trip."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import TestCase
from django.utils import timezone
from rest_framework.test import APIClient

from assignments import router
from assignments.services import ClientCheck, dataplane_execute
from canary.api.authentication import auth_generation, token_digest
from canary.redis import redis_client
from deployments import services as lifecycle
from deployments.models import Deployment, RuleSet
from monitoring.models import CapturedInput
from monitoring.recording.captures import capture_retention_run, capture_write_batch
from tests.stored import stored

pytestmark = pytest.mark.django_db

SECRET = "jane.doe@example.com"
INPUT = {"temperature": 26, "zone": "C", "customer": {"email": SECRET, "tier": "gold"}}


def configure(ruleset_id: Any, **changes: Any) -> None:
    # As committed: the announcement that makes every process reload its state runs.
    with TestCase.captureOnCommitCallbacks(execute=True):
        lifecycle.ruleset_update(ruleset_id=ruleset_id, actor="t", **changes)


def serve(ruleset_id: Any, count: int, check: ClientCheck | None = None) -> None:
    for n in range(count):
        dataplane_execute(
            ruleset_id=str(ruleset_id),
            input=INPUT,
            context=router.RoutingContext(user_id=f"user-{n}"),
            client_check=check,
        )


def vouched_check() -> ClientCheck:
    """A token Redis vouches for, so the routing script runs (the fast path's trip)."""
    digest = token_digest("capture-test-token")
    generation = auth_generation()
    redis_client().set(f"canary:tok:{digest}", f"1|{generation}")
    return ClientCheck(token_digest=digest, auth_generation=generation)


def test_the_sampled_share_is_within_its_binomial_interval(active_v1: Deployment) -> None:
    configure(active_v1.ruleset_id, capture_percentage=20)
    n, p = 1200, 0.2
    serve(active_v1.ruleset_id, n // 2)  # Redis not asked: one XADD
    serve(active_v1.ruleset_id, n // 2, vouched_check())  # inside the routing script
    captured = stored(CapturedInput).filter(ruleset_id=active_v1.ruleset_id).count()
    half_width = 3.29 * math.sqrt(n * p * (1 - p))  # 99.9%
    assert n * p - half_width <= captured <= n * p + half_width
    row = CapturedInput.objects.filter(ruleset_id=active_v1.ruleset_id).first()
    assert row.version_id == active_v1.version_id
    assert row.input == INPUT


def test_redacted_paths_never_reach_the_captured_input(active_v1: Deployment) -> None:
    configure(active_v1.ruleset_id, capture_percentage=100, redacted_input_paths=["customer.email"])
    serve(active_v1.ruleset_id, 5)
    serve(active_v1.ruleset_id, 5, vouched_check())
    rows = list(stored(CapturedInput).filter(ruleset_id=active_v1.ruleset_id))
    assert len(rows) == 10
    for row in rows:
        assert row.redacted_paths == ["customer.email"]
        assert row.input["customer"] == {"tier": "gold"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT input::text FROM monitoring_capturedinput")
        assert all(SECRET not in text for (text,) in cursor.fetchall())


def test_nothing_is_captured_while_a_canary_runs(canary_v2: Deployment) -> None:
    configure(canary_v2.ruleset_id, capture_percentage=100)
    serve(canary_v2.ruleset_id, 20)
    serve(canary_v2.ruleset_id, 20, vouched_check())
    assert not stored(CapturedInput).filter(ruleset_id=canary_v2.ruleset_id).exists()


def test_nothing_is_captured_when_inputs_are_not_stored(
    active_v1: Deployment, settings: Any
) -> None:
    settings.CANARY_STORE_INPUTS = False
    configure(active_v1.ruleset_id, capture_percentage=100)
    serve(active_v1.ruleset_id, 20)
    serve(active_v1.ruleset_id, 20, vouched_check())
    assert not stored(CapturedInput).filter(ruleset_id=active_v1.ruleset_id).exists()


def test_a_redelivered_entry_writes_one_row(ruleset: RuleSet) -> None:
    document = (
        b'{"ruleset_id":"%s","version_id":null,"input":{"a":1},"redacted":null,"created_at":1.5}'
        % str(ruleset.pk).encode()
    )
    entries = [("1700000000000-0", {b"k": document}), ("1700000000000-1", {b"k": document})]
    capture_write_batch(entries)
    capture_write_batch(entries)
    assert CapturedInput.objects.filter(ruleset=ruleset).count() == 2


def test_retention_drops_old_inputs_and_keeps_the_newest_within_the_bound(
    ruleset: RuleSet, settings: Any
) -> None:
    settings.CANARY_CAPTURE_RETENTION_DAYS = 30
    settings.CANARY_CAPTURE_MAX_PER_RULESET = 5
    now = timezone.now()
    CapturedInput.objects.bulk_create(
        [
            CapturedInput(ruleset=ruleset, input={"n": n}, created_at=now - timedelta(hours=n))
            for n in range(8)
        ]
        + [CapturedInput(ruleset=ruleset, input={"old": True}, created_at=now - timedelta(days=31))]
    )
    assert capture_retention_run(now=now) == 4
    kept = sorted(row["n"] for row in CapturedInput.objects.values_list("input", flat=True))
    assert kept == [0, 1, 2, 3, 4]
    assert capture_retention_run(now=now) == 0


def test_capture_percentage_is_set_through_the_api(
    ruleset: RuleSet, admin_api: APIClient, approver: APIClient
) -> None:
    url = f"/api/v1/rulesets/{ruleset.pk}"
    assert admin_api.get(url).json()["capture_percentage"] == 1
    assert (
        admin_api.patch(url, {"capture_percentage": 25}, format="json").json()["capture_percentage"]
        == 25
    )
    bad = admin_api.patch(url, {"capture_percentage": 101}, format="json")
    assert bad.status_code == 400
    assert "capture_percentage" in bad.json()
    assert approver.patch(url, {"capture_percentage": 5}, format="json").status_code == 403
