"""Client tokens through real server processes (the fast path in front of Django included)."""

from __future__ import annotations

import pytest
import requests

from deployments import services as lifecycle
from tests.accounts import create_user
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES
from tests.servers import gunicorn

ORIGIN = "https://shop.example"


@pytest.mark.django_db(transaction=True)
def test_revocation_holds_at_once_in_every_server_process(roles: None) -> None:
    ruleset = lifecycle.ruleset_create(name="web-rules", actor="t")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        lifecycle.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
        )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    lifecycle.deployment_promote(deployment_id=first.pk, actor="t")
    draft = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
    lifecycle.deployment_start_canary(
        deployment_id=draft.pk,
        canary_pct=100,
        canary_target_filter={"user_ids": ["alice"]},
        actor="t",
    )
    admin = {"Authorization": f"Bearer {create_user('admin-http', 'admin')}"}
    resolve_path = f"/api/v1/rulesets/{ruleset.pk}/resolve"

    with gunicorn() as server_a, gunicorn() as server_b:
        created = requests.post(
            f"{server_a}/api/v1/client-tokens",
            json={"name": "shop", "ruleset_ids": [str(ruleset.pk)], "allowed_origins": [ORIGIN]},
            headers=admin,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        client = {"Authorization": f"Bearer {created.json()['token']}"}

        def resolve(base: str, user: str, **headers: str) -> requests.Response:
            return requests.get(
                f"{base}{resolve_path}",
                params={"user_id": user},
                headers={**client, **headers},
                timeout=10,
            )

        for base in (server_a, server_b):
            # twice: a second request is where a per-process cache would answer
            for _ in range(2):
                alice, bob = resolve(base, "alice"), resolve(base, "bob")
                assert alice.status_code == bob.status_code == 200, alice.text
                assert alice.headers["X-Canary-Version"] == "v2"
                assert bob.headers["X-Canary-Version"] == "v1"
            browser = resolve(base, "alice", Origin=ORIGIN)
            assert browser.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "X-Canary-Version" in browser.headers["Access-Control-Expose-Headers"]
            assert (
                "Access-Control-Allow-Origin"
                not in resolve(base, "alice", Origin="https://x.y").headers
            )
            preflight = requests.options(
                f"{base}{resolve_path}",
                headers={
                    "Origin": ORIGIN,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization",
                },
                timeout=10,
            )
            assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
            # never execute, whichever path serves the request
            executed = requests.post(
                f"{base}/api/v1/rulesets/{ruleset.pk}/execute",
                json={"input": {"temperature": 30}, "user_id": "alice"},
                headers=client,
                timeout=10,
            )
            assert executed.status_code == 403, executed.text

        revoked = requests.delete(
            f"{server_a}/api/v1/client-tokens/{created.json()['id']}", headers=admin, timeout=10
        )
        assert revoked.status_code == 204
        for base in (server_b, server_a):
            after = resolve(base, "alice")
            assert after.status_code == 401, after.text
            assert (
                "Access-Control-Allow-Origin" not in resolve(base, "alice", Origin=ORIGIN).headers
            )
