"""Rate limits on the data plane, the API and token guessing; request ids; secrets."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from deployments.models import Deployment, RuleSet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    cache.clear()


def test_data_plane_rate_limit(
    settings: Any, viewer: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    settings.CANARY_THROTTLE_RATES = {"dataplane": "3/day", "api": ""}
    url = f"/api/v1/rulesets/{ruleset.pk}/resolve"
    assert [viewer.get(url, {"user_id": "u"}).status_code for _ in range(4)] == [200, 200, 200, 429]
    limited = viewer.get(url)
    assert limited.json()["code"] == "throttled"
    assert int(limited["Retry-After"]) > 0
    # The management API has its own budget.
    assert viewer.get("/api/v1/deployments").status_code == 200


def test_api_rate_limit_is_per_client(settings: Any, client_for: Any) -> None:
    settings.CANARY_THROTTLE_RATES = {"dataplane": "", "api": "2/day"}
    viewer, approver = client_for("viewer"), client_for("approver")
    assert [viewer.get("/api/v1/rulesets").status_code for _ in range(3)] == [200, 200, 429]
    assert approver.get("/api/v1/rulesets").status_code == 200


def test_token_guessing_is_cut_off(settings: Any, viewer: APIClient) -> None:
    settings.CANARY_AUTH_FAILURES_PER_MINUTE = 3
    guesser = APIClient()
    codes = []
    for n in range(5):
        guesser.credentials(HTTP_AUTHORIZATION=f"Bearer wrong-{n}")
        codes.append(guesser.get("/api/v1/deployments").status_code)
    assert codes == [401, 401, 401, 429, 429]
    # A client holding a valid token is not slowed down by the guesser.
    assert viewer.get("/api/v1/deployments").status_code == 200


def test_every_response_carries_a_request_id(client: Any) -> None:
    response = client.get("/healthz")
    assert len(response["X-Request-ID"]) >= 32
    echoed = client.get("/healthz", HTTP_X_REQUEST_ID="proxy-assigned-id-123")
    assert echoed["X-Request-ID"] == "proxy-assigned-id-123"


def test_tokens_are_revocable(client_for: Any) -> None:
    from django.core.management import call_command
    from knox.models import AuthToken

    viewer = client_for("viewer")
    assert viewer.get("/api/v1/deployments").status_code == 200
    call_command("canary_user", "viewer-user", "--role", "viewer", "--rotate-token", stdout=None)
    assert viewer.get("/api/v1/deployments").status_code == 401
    assert AuthToken.objects.filter(user__username="viewer-user").count() == 1


def test_tokens_are_stored_only_as_hashes_and_shown_once(db: Any, roles: None) -> None:
    import hashlib

    from knox.models import AuthToken

    from tests.accounts import create_user

    token = create_user("hashed", "viewer")
    again = create_user("hashed", "viewer")
    assert token != again  # each issue is a new token; none is shown twice
    stored = AuthToken.objects.filter(user__username="hashed")
    assert stored.count() == 2
    assert {row.digest for row in stored} == {
        hashlib.sha512(value.encode()).hexdigest() for value in (token, again)
    }
    for row in stored:
        assert token not in (row.digest, row.token_key)
        assert row.expiry is not None  # CANARY_TOKEN_TTL_DAYS


def test_an_expired_token_is_refused(db: Any, roles: None) -> None:
    from datetime import timedelta

    from django.utils import timezone
    from knox.models import AuthToken
    from rest_framework.test import APIClient

    from tests.accounts import create_user

    token = create_user("short-lived", "viewer")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/deployments").status_code == 200
    AuthToken.objects.filter(user__username="short-lived").update(
        expiry=timezone.now() - timedelta(seconds=1)
    )
    assert client.get("/api/v1/deployments").status_code == 401


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/api/schema/", "*/*"),
        ("/api/schema/", "application/yaml"),
        ("/api/schema/?format=yaml", "*/*"),
        ("/api/docs/", "text/html"),
        ("/api/docs/", "*/*"),
    ],
)
def test_errors_of_the_schema_and_its_page_are_json(
    settings: Any, path: str, accept: str, viewer: APIClient
) -> None:
    """Every error under /api/ is JSON, also where the answer would be YAML or HTML."""
    settings.CANARY_AUTH_FAILURES_PER_MINUTE = 0
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    unauthenticated = wrong.get(path, HTTP_ACCEPT=accept)
    assert unauthenticated.status_code == 401
    assert unauthenticated["Content-Type"] == "application/json"
    assert unauthenticated.json() == {
        "detail": "Invalid token.",
        "code": "authentication_failed",
    }

    not_allowed = viewer.post(path, HTTP_ACCEPT=accept)
    assert not_allowed.status_code == 405
    assert not_allowed["Content-Type"] == "application/json"
    assert not_allowed.json()["code"] == "method_not_allowed"
    assert not_allowed["Allow"] == "GET, HEAD, OPTIONS"

    settings.CANARY_THROTTLE_RATES = {"dataplane": "", "api": "1/day"}
    assert viewer.get(path, HTTP_ACCEPT=accept).status_code == 200
    throttled = viewer.get(path, HTTP_ACCEPT=accept)
    assert throttled.status_code == 429
    assert throttled["Content-Type"] == "application/json"
    assert throttled.json()["code"] == "throttled"
    assert int(throttled["Retry-After"]) > 0


@pytest.mark.parametrize(
    ("path", "accept"), [("/api/schema/", "text/html"), ("/api/docs/", "application/yaml")]
)
def test_an_unacceptable_accept_header_is_a_json_406(
    path: str, accept: str, viewer: APIClient
) -> None:
    refused = viewer.get(path, HTTP_ACCEPT=accept)
    assert refused.status_code == 406
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["code"] == "not_acceptable"


def test_the_schema_itself_is_still_yaml_or_json_as_asked(viewer: APIClient) -> None:
    assert viewer.get("/api/schema/")["Content-Type"].startswith("application/vnd.oai.openapi")
    as_json = viewer.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert as_json.json()["openapi"].startswith("3.")
