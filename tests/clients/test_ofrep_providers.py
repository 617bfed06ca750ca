"""OFREP through OpenFeature's own providers against the production server (granian, the
data plane's fast path in front of Django): the same versions as resolve, a missing flag
falls back with FLAG_NOT_FOUND, and a client token works from an allowed origin."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import requests
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from assignments.client_tokens import client_token_create
from deployments import services as lifecycle
from deployments.models import RuleSet
from tests.accounts import create_user
from tests.samples import DEFAULT_OUTPUT, V1_RULES, V2_RULES
from tests.servers import ROOT, granian

ORIGIN = "https://shop.example"
USERS = [f"user-{n}" for n in range(30)]
WEB_CHECK = ROOT / "clients" / "react" / "test-live" / "ofrep.mjs"


def canary_at_half(name: str) -> RuleSet:
    ruleset = lifecycle.ruleset_create(name=name, actor="t")
    for version, rules in (("v1.0.0", V1_RULES), ("v2.0.0", V2_RULES)):
        lifecycle.ruleset_version_create(
            ruleset=ruleset, version=version, rules=rules, default=DEFAULT_OUTPUT, actor="t"
        )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor="t")
    lifecycle.deployment_promote(deployment_id=first.pk, actor="t")
    draft = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v2.0.0", actor="t")
    lifecycle.deployment_start_canary(deployment_id=draft.pk, canary_pct=50, actor="t")
    return ruleset


def resolved(base: str, ruleset: RuleSet, token: str, user: str) -> dict:
    answer = requests.get(
        f"{base}/api/v1/rulesets/{ruleset.pk}/resolve",
        params={"user_id": user},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.django_db(transaction=True)
def test_the_python_provider_reads_resolve_s_answer(roles: None) -> None:
    ruleset = canary_at_half("checkout")
    token = create_user("sdk", "viewer")
    with granian(workers=1) as server:
        api.set_provider(
            OFREPProvider(server.base, headers_factory=lambda: {"Authorization": f"Bearer {token}"})
        )
        client = api.get_client()
        seen = set()
        for user in USERS:
            details = client.get_string_details("checkout", "none", EvaluationContext(user))
            expected = resolved(server.base, ruleset, token, user)
            assert details.value == details.variant == expected["canary_version"]
            assert details.reason == Reason.SPLIT  # decided by this first request
            assert details.flag_metadata == {
                "deploymentId": expected["deployment_id"],
                "version": expected["version"],
            }
            again = client.get_string_details(
                str(ruleset.pk), "none", EvaluationContext(user, {"plan": "pro"})
            )
            assert (again.value, again.reason) == (details.value, Reason.TARGETING_MATCH)
            seen.add(details.value)
        assert seen == {"v1", "v2"}
        missing = client.get_string_details("no-such-flag", "fallback", EvaluationContext("u"))
        assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
        bad = client.get_string_details(
            "checkout", "fallback", EvaluationContext("u", {"sessionId": 7})
        )
        assert (bad.value, bad.error_code) == ("fallback", ErrorCode.INVALID_CONTEXT)
        # The bulk answer's ETag, and 304 while nothing changed.
        headers = {"Authorization": f"Bearer {token}"}
        body = {"context": {"targetingKey": USERS[0]}}
        bulk = requests.post(
            f"{server.base}/ofrep/v1/evaluate/flags", json=body, headers=headers, timeout=10
        )
        assert bulk.json()["flags"][0]["key"] == "checkout"
        unchanged = requests.post(
            f"{server.base}/ofrep/v1/evaluate/flags",
            json=body,
            headers={**headers, "If-None-Match": bulk.headers["ETag"]},
            timeout=10,
        )
        assert unchanged.status_code == 304 and unchanged.headers["ETag"] == bulk.headers["ETag"]
    api.clear_providers()


@pytest.mark.django_db(transaction=True)
def test_the_web_provider_with_a_client_token_from_an_allowed_origin(roles: None) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed for OpenFeature's web provider"
    assert (ROOT / "clients/react/node_modules/@openfeature/ofrep-web-provider").is_dir(), (
        "npm ci in clients/react"
    )
    ruleset = canary_at_half("storefront")
    _, client_token = client_token_create(
        name="web", ruleset_ids=[str(ruleset.pk)], allowed_origins=[ORIGIN], actor="t"
    )
    api_token = create_user("reader", "viewer")
    users = USERS[:12]
    with granian(workers=1) as server:
        run = subprocess.run(
            [node, str(WEB_CHECK)],
            env={
                "PATH": "/usr/bin:/bin",
                "BASE": server.base,
                "TOKEN": client_token,
                "ORIGIN": ORIGIN,
                "FLAG": "storefront",
                "USERS": ",".join(users),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        for user in users:
            expected = resolved(server.base, ruleset, api_token, user)
            assert result["users"][user]["value"] == expected["canary_version"]
            assert result["users"][user]["variant"] == expected["canary_version"]
            assert result["users"][user]["metadata"]["deploymentId"] == expected["deployment_id"]
        assert {row["value"] for row in result["users"].values()} == {"v1", "v2"}
        assert result["missing"] == {"value": "fallback", "errorCode": "FLAG_NOT_FOUND"}
        assert result["allowOrigins"] and set(result["allowOrigins"]) == {ORIGIN}
