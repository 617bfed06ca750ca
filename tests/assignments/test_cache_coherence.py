"""After a lifecycle change, the next request on any server process routes by it."""

from __future__ import annotations

import pytest
import requests

from deployments import services as lifecycle
from tests.accounts import create_user
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES
from tests.servers import gunicorn


@pytest.mark.django_db(transaction=True)
def test_two_servers_never_serve_stale_routing(roles: None) -> None:
    ruleset = lifecycle.ruleset_create(name="coherence", actor="t")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        lifecycle.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
        )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    lifecycle.deployment_promote(deployment_id=first.pk, actor="t")
    draft = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
    token = create_user("approver-http", "approver")
    headers = {"Authorization": f"Bearer {token}"}

    with gunicorn() as server_a, gunicorn() as server_b:

        def resolve(base: str, user: str) -> dict:
            response = requests.get(
                f"{base}/api/v1/rulesets/{ruleset.pk}/resolve",
                params={"user_id": user},
                headers=headers,
                timeout=10,
            )
            assert response.status_code == 200, response.text
            return response.json()

        # Both servers warm the shared cache with "no canary".
        assert resolve(server_a, "warm")["version"] == "v1.0.0"
        assert resolve(server_b, "warm")["version"] == "v1.0.0"

        started = requests.post(
            f"{server_a}/api/v1/deployments/{draft.pk}/start-canary",
            json={"canary_pct": 100},
            headers=headers,
            timeout=10,
        )
        assert started.status_code == 200, started.text
        assert resolve(server_b, "user-1")["canary_version"] == "v2"

        lowered = requests.put(
            f"{server_b}/api/v1/deployments/{draft.pk}/traffic",
            json={"traffic_percentage": 0},
            headers=headers,
            timeout=10,
        )
        assert lowered.status_code == 200
        assert resolve(server_a, "user-2")["canary_version"] == "v1"
        assert resolve(server_a, "user-1")["canary_version"] == "v2"  # sticky

        promoted = requests.post(
            f"{server_a}/api/v1/deployments/{draft.pk}/promote", headers=headers, timeout=10
        )
        assert promoted.status_code == 200
        after_promote = resolve(server_b, "user-2")
        assert (after_promote["version"], after_promote["canary_version"]) == ("v2.0.0", "v1")
        assert after_promote["assignment_priority"] is None

        rolled = requests.post(
            f"{server_b}/api/v1/deployments/{draft.pk}/rollback",
            json={"reason": "coherence check"},
            headers=headers,
            timeout=10,
        )
        assert rolled.status_code == 200
        assert resolve(server_a, "user-3")["version"] == "v1.0.0"
        assert resolve(server_b, "user-3")["deployment_id"] == str(first.pk)
