"""The demo page's data: a rule set with a running canary, and a fresh client token.

Development only (``CANARY_DEMO``, on with ``DEBUG``). Everything is made through
the same services as the API, so the page shows the real integration: the React
package resolves with a client token, exactly as a customer's front end would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from assignments import client_tokens
from assignments.models import ClientToken
from canary.errors import ValidationFailed
from deployments import services as lifecycle
from deployments.models import RuleSet, RuleSetVersion

DEMO_RULESET = "canary-demo"
DEMO_TOKEN_NAME = "demo page"  # noqa: S105 (a label)
CANARY_USER = "alice"
OTHER_USER = "bob"
# Tokens the page issued earlier are revoked after this long (each page load issues one).
DEMO_TOKEN_LIFETIME = timedelta(hours=12)

_VERSIONS = [
    (
        "v1.0.0",
        [
            {"name": "big-basket", "condition": "input.total > 100", "output": {"discount": 5}},
        ],
    ),
    (
        "v2.0.0",
        [
            {"name": "big-basket", "condition": "input.total > 80", "output": {"discount": 7}},
            {
                "name": "loyal-customer",
                "condition": "input.orders > 10",
                "output": {"discount": 10},
            },
        ],
    ),
]


@dataclass(frozen=True)
class DemoSetup:
    ruleset_id: str
    token: str
    canary_user: str
    other_user: str


def demo_prepare(*, origin: str, actor: Any = "system:demo") -> DemoSetup:
    """Make the demo rule set on first use (v1 active, v2 a canary for ``alice`` only).

    Later calls leave the rule set as it is, so a newcomer can promote or roll
    back the demo canary in the admin and watch the page follow.
    """
    ruleset = RuleSet.objects.filter(name=DEMO_RULESET).first()
    if ruleset is None:
        try:
            ruleset = _make_demo_ruleset(actor)
        except ValidationFailed:  # another first page load made it a moment ago
            ruleset = RuleSet.objects.get(name=DEMO_RULESET)
    cutoff = timezone.now() - DEMO_TOKEN_LIFETIME
    for stale in ClientToken.objects.filter(name=DEMO_TOKEN_NAME, created_at__lt=cutoff):
        client_tokens.client_token_revoke(token_id=stale.pk, actor=actor)
    _, token = client_tokens.client_token_create(
        name=DEMO_TOKEN_NAME, ruleset_ids=[str(ruleset.pk)], allowed_origins=[origin], actor=actor
    )
    return DemoSetup(str(ruleset.pk), token, CANARY_USER, OTHER_USER)


def _make_demo_ruleset(actor: Any) -> RuleSet:
    with transaction.atomic():
        ruleset = lifecycle.ruleset_create(
            name=DEMO_RULESET, description="Checkout discounts (the /demo/ page)", actor=actor
        )
        for version, rules in _VERSIONS:
            lifecycle.ruleset_version_create(
                ruleset=ruleset, version=version, rules=rules, default={"discount": 0}, actor=actor
            )
    first = lifecycle.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor=actor)
    lifecycle.deployment_promote(deployment_id=first.pk, actor=actor)
    canary = lifecycle.deployment_create(
        ruleset_id=ruleset.pk, version="v2.0.0", changelog="Cheaper big baskets", actor=actor
    )
    lifecycle.deployment_start_canary(
        deployment_id=canary.pk,
        canary_pct=100,
        canary_target_filter={"user_ids": [CANARY_USER]},
        actor=actor,
    )
    return ruleset


def demo_rules(*, version: str) -> list[dict[str, Any]]:
    """The demo rule set's rules in ``version`` (what the page lists, keyed by version)."""
    found = (
        RuleSetVersion.objects.filter(ruleset__name=DEMO_RULESET, version=version)
        .values_list("rules", flat=True)
        .first()
    )
    return list(found or [])
