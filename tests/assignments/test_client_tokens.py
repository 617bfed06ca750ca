"""Client tokens (SPEC §9.5): issued by Admins; resolve only, on their rule sets; revocable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client, override_settings
from rest_framework.test import APIClient

from assignments.client_tokens import client_token_create
from assignments.models import ClientToken
from deployments import services
from deployments.models import Deployment, RuleSet
from tests.samples import DEFAULT_OUTPUT, V1_RULES

pytestmark = pytest.mark.django_db

ORIGIN = "https://app.example.com"


def issue(admin_api: APIClient, ruleset: RuleSet, origins: list[str] | None = None) -> dict:
    response = admin_api.post(
        "/api/v1/client-tokens",
        {
            "name": "storefront",
            "ruleset_ids": [str(ruleset.pk)],
            "allowed_origins": origins or [ORIGIN],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def resolve_url(ruleset: Any) -> str:
    return f"/api/v1/rulesets/{ruleset.pk}/resolve"


def test_issued_once_listed_without_the_secret_stored_as_a_hash(
    admin_api: APIClient, ruleset: RuleSet
) -> None:
    created = issue(admin_api, ruleset, ["HTTPS://App.Example.com:443/", "http://localhost:5173"])
    token = created["token"]
    assert token.startswith("canary_ct_") and len(token) > 40
    assert created["name"] == "storefront"
    assert created["ruleset_ids"] == [str(ruleset.pk)]
    assert created["allowed_origins"] == [ORIGIN, "http://localhost:5173"]
    assert created["token_prefix"] == token[:16]

    listed = admin_api.get("/api/v1/client-tokens").json()["results"]
    assert [row["id"] for row in listed] == [created["id"]]
    assert "token" not in listed[0]
    one = admin_api.get(f"/api/v1/client-tokens/{created['id']}").json()
    assert "token" not in one and one["allowed_origins"] == created["allowed_origins"]

    stored = ClientToken.objects.get()
    assert token not in str(stored.__dict__)
    assert len(stored.digest) == 128


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ruleset_ids": "R", "allowed_origins": [ORIGIN]}, "name"),
        ({"name": "x", "ruleset_ids": [], "allowed_origins": [ORIGIN]}, "ruleset_ids"),
        ({"name": "x", "ruleset_ids": ["nope"], "allowed_origins": [ORIGIN]}, "ruleset_ids"),
        (
            {
                "name": "x",
                "ruleset_ids": ["00000000-0000-4000-8000-000000000000"],
                "allowed_origins": [ORIGIN],
            },
            "ruleset_ids",
        ),
        ({"name": "x", "ruleset_ids": "R", "allowed_origins": ["*"]}, "allowed_origins"),
        (
            {"name": "x", "ruleset_ids": "R", "allowed_origins": ["https://a.test/app"]},
            "allowed_origins",
        ),
        ({"name": "x", "ruleset_ids": "R", "allowed_origins": ["ftp://a.test"]}, "allowed_origins"),
        ({"name": "x", "ruleset_ids": "R", "allowed_origins": "https://a.test"}, "allowed_origins"),
        ({"name": "x", "ruleset_ids": "R", "allowed_origins": [ORIGIN], "extra": 1}, "extra"),
        ({"name": " ", "ruleset_ids": "R", "allowed_origins": [ORIGIN]}, "name"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    admin_api: APIClient, ruleset: RuleSet, body: dict, field: str
) -> None:
    if body.get("ruleset_ids") == "R":
        body = {**body, "ruleset_ids": [str(ruleset.pk)]}
    response = admin_api.post("/api/v1/client-tokens", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not ClientToken.objects.exists()


def test_scope_resolve_on_its_rule_sets_only(
    admin_api: APIClient, ruleset: RuleSet, active_v1: Deployment, canary_v2: Deployment
) -> None:
    other = services.ruleset_create(name="other", actor="t")
    services.ruleset_version_create(
        ruleset=other, version="v1.0.0", rules=V1_RULES, default=DEFAULT_OUTPUT, actor="t"
    )
    first = services.deployment_create(ruleset_id=other.pk, version="v1.0.0", actor="t")
    services.deployment_promote(deployment_id=first.pk, actor="t")
    client = bearer(issue(admin_api, ruleset)["token"])

    answer = client.get(resolve_url(ruleset), {"user_id": "alice"})
    assert answer.status_code == 200, answer.content
    assert answer.json()["deployment_id"] in (str(active_v1.pk), str(canary_v2.pk))
    assert answer["X-Canary-Version"] in ("v1", "v2")

    # another rule set: exactly what an unknown one answers
    assert client.get(resolve_url(other)).status_code == 404
    assert client.get(resolve_url(other)).json()["code"] == "not_found"

    refused = [
        client.post(
            f"/api/v1/rulesets/{ruleset.pk}/execute", {"input": {"temperature": 30}}, format="json"
        ),
        client.get("/api/v1/deployments"),
        client.get(f"/api/v1/deployments/{canary_v2.pk}"),
        client.post(f"/api/v1/deployments/{canary_v2.pk}/rollback", {"reason": "x"}, format="json"),
        client.get("/api/v1/rulesets"),
        client.get("/api/v1/client-tokens"),
        client.post("/api/v1/client-tokens", {}, format="json"),
        client.options(resolve_url(ruleset)),
        client.head(resolve_url(ruleset)),
    ]
    for response in refused:
        assert response.status_code == 403, (response.request, response.content)
        if response.content:  # HEAD has no body
            assert response.json()["code"] == "permission_denied"
    # the admin console is a session login: a bearer token opens nothing there
    console = Client(HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"])
    assert console.get("/admin/").status_code == 302
    canary_v2.refresh_from_db()
    assert canary_v2.status == "canary"


def test_revoked_at_once_and_unknown_tokens_are_401(
    admin_api: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    created = issue(admin_api, ruleset)
    client = bearer(created["token"])
    assert client.get(resolve_url(ruleset)).status_code == 200

    assert admin_api.delete(f"/api/v1/client-tokens/{created['id']}").status_code == 204
    response = client.get(resolve_url(ruleset))
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert admin_api.delete(f"/api/v1/client-tokens/{created['id']}").status_code == 404
    assert admin_api.delete("/api/v1/client-tokens/not-an-id").status_code == 404
    assert bearer("canary_ct_made-up").get(resolve_url(ruleset)).status_code == 401


def test_api_tokens_are_unchanged(viewer: APIClient, ruleset: RuleSet, active_v1: Deployment):
    assert viewer.get(resolve_url(ruleset)).status_code == 200
    assert viewer.get("/api/v1/deployments").status_code == 200


# --- CORS --------------------------------------------------------------------------------


def cors_get(token: str | None, url: str, origin: str) -> Any:
    client = APIClient()
    headers = {"HTTP_ORIGIN": origin}
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.get(url, {"user_id": "alice"}, **headers)


def preflight(url: str, origin: str) -> Any:
    return Client().options(
        url,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )


def test_cors_for_the_tokens_origins_only(
    admin_api: APIClient, ruleset: RuleSet, canary_v2: Deployment
) -> None:
    token = issue(admin_api, ruleset)["token"]
    url = resolve_url(ruleset)

    allowed = cors_get(token, url, ORIGIN)
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Canary-Version" in allowed["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in allowed

    other = cors_get(token, url, "https://evil.example")
    assert other.status_code == 200  # answered, but a browser will not hand it over
    assert not any(h.startswith("access-control-") for h in map(str.lower, other.headers))

    ok = preflight(url, ORIGIN)
    assert ok.status_code == 200
    assert ok["Access-Control-Allow-Origin"] == ORIGIN
    assert "authorization" in ok["Access-Control-Allow-Headers"].lower()
    assert "GET" in ok["Access-Control-Allow-Methods"]
    refused = preflight(url, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in refused

    # nothing else is exposed cross-origin, even to an allowed origin
    for elsewhere in (f"/api/v1/rulesets/{ruleset.pk}/execute", "/api/v1/deployments"):
        assert "Access-Control-Allow-Origin" not in preflight(elsewhere, ORIGIN)
        assert "Access-Control-Allow-Origin" not in cors_get(token, elsewhere, ORIGIN)


def test_cors_follows_each_token_and_revocation(
    admin_api: APIClient, ruleset: RuleSet, active_v1: Deployment
) -> None:
    mine = issue(admin_api, ruleset, [ORIGIN])
    theirs = issue(admin_api, ruleset, ["https://partner.example"])
    url = resolve_url(ruleset)
    # a request bearing a token is allowed only from that token's origins
    assert "Access-Control-Allow-Origin" not in cors_get(
        mine["token"], url, "https://partner.example"
    )
    assert cors_get(theirs["token"], url, "https://partner.example").status_code == 200
    # an unknown token from an allowed origin: the page may read its 401
    unknown = cors_get("canary_ct_unknown", url, ORIGIN)
    assert unknown.status_code == 401
    assert "Access-Control-Allow-Origin" not in unknown

    assert admin_api.delete(f"/api/v1/client-tokens/{mine['id']}").status_code == 204
    assert "Access-Control-Allow-Origin" not in preflight(url, ORIGIN)
    assert preflight(url, "https://partner.example")["Access-Control-Allow-Origin"]


# --- rate limits ---------------------------------------------------------------------------


def test_rate_limited_per_address_and_per_token(
    ruleset: RuleSet, active_v1: Deployment, client_for: Callable[[str | None], APIClient]
) -> None:
    from django.core.cache import cache

    cache.clear()
    _, first = client_token_create(
        name="a", ruleset_ids=[str(ruleset.pk)], allowed_origins=[ORIGIN], actor="t"
    )
    _, second = client_token_create(
        name="b", ruleset_ids=[str(ruleset.pk)], allowed_origins=[ORIGIN], actor="t"
    )
    url = resolve_url(ruleset)
    with override_settings(CANARY_THROTTLE_RATES={"dataplane": "", "client_address": "3/minute"}):
        answers = [bearer(first).get(url).status_code for _ in range(3)]
        assert answers == [200, 200, 200]
        limited = bearer(second).get(url)  # another token, same address
        assert limited.status_code == 429 and limited["Retry-After"]
        other_address = bearer(first).get(url, REMOTE_ADDR="10.0.0.9")
        assert other_address.status_code == 200
        # API tokens are not counted per address
        assert client_for("viewer").get(url).status_code == 200
    cache.clear()
    with override_settings(CANARY_THROTTLE_RATES={"dataplane": "2/minute", "client_address": ""}):
        assert [bearer(first).get(url).status_code for _ in range(3)] == [200, 200, 429]
        assert bearer(second).get(url).status_code == 200  # its own budget
    cache.clear()
