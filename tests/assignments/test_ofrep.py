"""OFREP (SPEC §10.5) through the API: the same answer as resolve, the protocol's shapes and
errors, ETag and 304 on the bulk endpoint, client tokens and CORS as for resolve."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from assignments.client_tokens import client_token_create
from assignments.ofrep import ofrep_caches_clear
from deployments import services
from deployments.models import Deployment, RuleSet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_names() -> None:
    """Each test recreates "thermostat" under a new id within the names' recheck period."""
    ofrep_caches_clear()


ORIGIN = "https://shop.example"
FLAGS = "/ofrep/v1/evaluate/flags"


def evaluate(client: APIClient, key: Any, context: dict | None = None, **extra: Any) -> Any:
    body = {} if context is None else {"context": context}
    return client.post(f"{FLAGS}/{key}", body, format="json", **extra)


def resolve(client: APIClient, ruleset: RuleSet, **ids: str) -> dict:
    response = client.get(f"/api/v1/rulesets/{ruleset.pk}/resolve", ids)
    assert response.status_code == 200, response.content
    return response.json()


def test_a_flag_is_the_version_resolve_gives_by_name_or_id(
    viewer: APIClient, ruleset: RuleSet, canary_v2: Deployment
) -> None:
    services.deployment_set_traffic(deployment_id=canary_v2.pk, traffic_percentage=50, actor="t")
    seen = set()
    for n in range(40):
        user = f"user-{n}"
        first = evaluate(viewer, "thermostat", {"targetingKey": user, "plan": "pro"})
        assert first.status_code == 200, first.content
        body = first.json()
        assert body["reason"] == "SPLIT"  # decided now, by the canary's split
        expected = resolve(viewer, ruleset, user_id=user)
        assert body["value"] == body["variant"] == expected["canary_version"]
        assert body["key"] == "thermostat"
        assert body["metadata"] == {
            "deploymentId": str(canary_v2.pk),
            "version": expected["version"],
        }
        again = evaluate(viewer, str(ruleset.pk), {"targetingKey": user}).json()
        assert again["value"] == body["value"] and again["reason"] == "TARGETING_MATCH"
        seen.add(body["value"])
    assert seen == {"v1", "v2"}


def test_session_and_workflow_ids_are_the_other_tiers(
    viewer: APIClient, ruleset: RuleSet, canary_v2: Deployment
) -> None:
    body = evaluate(
        viewer, "thermostat", {"targetingKey": "ann", "sessionId": "s-1", "workflowId": "wf-9"}
    ).json()
    expected = resolve(viewer, ruleset, user_id="bob", workflow_id="wf-9")
    assert expected["assignment_priority"] == "workflow"
    assert body["value"] == expected["canary_version"]


def test_static_without_a_canary_and_targeting_by_the_filter(
    viewer: APIClient, ruleset: RuleSet, draft_v2: Deployment, active_v1: Deployment
) -> None:
    body = evaluate(viewer, "thermostat", {"targetingKey": "ann"}).json()
    assert body == {
        "key": "thermostat",
        "value": "v1",
        "variant": "v1",
        "reason": "STATIC",
        "metadata": {"deploymentId": str(active_v1.pk), "version": "v1.0.0"},
    }
    services.deployment_start_canary(
        deployment_id=draft_v2.pk,
        canary_pct=100,
        canary_target_filter={"user_ids": ["alice"]},
        actor="t",
    )
    alice = evaluate(viewer, "thermostat", {"targetingKey": "alice"}).json()
    assert (alice["value"], alice["reason"]) == ("v2", "SPLIT")
    bob = evaluate(viewer, "thermostat", {"targetingKey": "bob"}).json()
    assert (bob["value"], bob["reason"]) == ("v1", "TARGETING_MATCH")


def test_protocol_errors(viewer: APIClient, ruleset: RuleSet, active_v1: Deployment) -> None:
    missing = evaluate(viewer, "no-such-flag", {"targetingKey": "ann"})
    assert missing.status_code == 404
    assert missing.json() == {
        "key": "no-such-flag",
        "errorCode": "FLAG_NOT_FOUND",
        "errorDetails": "No flag 'no-such-flag'.",
    }
    # A non-canonical spelling of the id is no flag either (SPEC 9.4).
    assert evaluate(viewer, str(ruleset.pk).upper()).status_code == 404
    bad = evaluate(viewer, "thermostat", {"targetingKey": 42})
    assert bad.status_code == 400
    assert bad.json()["errorCode"] == "INVALID_CONTEXT"
    assert "targetingKey" in bad.json()["errorDetails"]
    assert evaluate(viewer, "thermostat", "not-an-object").json()["errorCode"] == "INVALID_CONTEXT"
    parse = viewer.post(f"{FLAGS}/thermostat", "{nope", content_type="application/json")
    assert parse.status_code == 400 and parse.json()["errorCode"] == "PARSE_ERROR"
    # No context at all: a random draw, as resolve without ids.
    assert evaluate(viewer, "thermostat").json()["value"] == "v1"
    assert APIClient().post(f"{FLAGS}/thermostat", {}, format="json").status_code == 401


def test_nothing_deployed_is_flag_not_found(viewer: APIClient, ruleset: RuleSet) -> None:
    answer = evaluate(viewer, "thermostat", {"targetingKey": "ann"})
    assert answer.status_code == 404
    assert answer.json()["errorCode"] == "FLAG_NOT_FOUND"
    bulk = viewer.post(FLAGS, {"context": {"targetingKey": "ann"}}, format="json")
    assert bulk.json() == {"flags": []}


def test_bulk_lists_every_deployed_flag_with_an_etag_and_304(
    viewer: APIClient, ruleset: RuleSet, canary_v2: Deployment
) -> None:
    services.ruleset_create(name="undeployed", actor="t")
    context = {"context": {"targetingKey": "carol"}}
    decided = viewer.post(FLAGS, context, format="json")
    assert decided.json()["flags"][0]["reason"] == "SPLIT"
    first = viewer.post(FLAGS, context, format="json")  # the decision is stored now
    assert first.status_code == 200 and first["ETag"] != decided["ETag"]
    flags = first.json()["flags"]
    assert [flag["key"] for flag in flags] == ["thermostat"]
    assert flags[0]["value"] == resolve(viewer, ruleset, user_id="carol")["canary_version"]
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    unchanged = viewer.post(FLAGS, context, format="json", HTTP_IF_NONE_MATCH=etag)
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged["ETag"] == etag
    weak = viewer.post(FLAGS, context, format="json", HTTP_IF_NONE_MATCH=f'"x", W/{etag}')
    assert weak.status_code == 304
    services.deployment_promote(deployment_id=canary_v2.pk, actor="t")
    changed = viewer.post(FLAGS, context, format="json", HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert changed.json()["flags"][0]["reason"] == "STATIC"


def test_client_tokens_read_their_own_flags_from_allowed_origins(
    admin_api: APIClient, ruleset: RuleSet, canary_v2: Deployment
) -> None:
    other = services.ruleset_create(name="other", actor="t")
    services.ruleset_version_create(
        ruleset=other, version="1.0.0", rules=[], default={"x": 1}, actor="t"
    )
    first = services.deployment_create(ruleset_id=other.pk, version="1.0.0", actor="t")
    services.deployment_promote(deployment_id=first.pk, actor="t")
    _, token = client_token_create(
        name="web", ruleset_ids=[str(ruleset.pk)], allowed_origins=[ORIGIN], actor="t"
    )
    browser = APIClient()
    browser.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    answer = evaluate(browser, "thermostat", {"targetingKey": "dan"}, HTTP_ORIGIN=ORIGIN)
    assert answer.status_code == 200
    assert answer["Access-Control-Allow-Origin"] == ORIGIN
    assert "ETag" in answer["Access-Control-Expose-Headers"]
    assert evaluate(browser, "other").status_code == 404  # not its rule set
    bulk = browser.post(FLAGS, {}, format="json", HTTP_ORIGIN=ORIGIN)
    assert [flag["key"] for flag in bulk.json()["flags"]] == ["thermostat"]
    stranger = evaluate(browser, "thermostat", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in stranger
    preflight = APIClient().options(
        FLAGS,
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type,if-none-match",
    )
    assert preflight["Access-Control-Allow-Origin"] == ORIGIN
    assert "if-none-match" in preflight["Access-Control-Allow-Headers"]
    # Everything else stays closed to a client token.
    assert browser.get(f"/api/v1/rulesets/{ruleset.pk}").status_code == 403
    assert (
        browser.post(f"/api/v1/rulesets/{ruleset.pk}/execute", {}, format="json").status_code == 403
    )
