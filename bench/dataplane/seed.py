"""Seed the benchmark database through the project's own services.

A rule set "bench-checkout" with two versions of ten CEL rules over the
twenty-field order in ``input.json``; v1 promoted as the initial release, v2 in
canary at 10%. Optionally pre-warms ``--prewarm N`` sticky user assignments
(ids ``<prefix>1`` .. ``<prefix>N``) through ``dataplane_resolve``, exactly as
the first request of each user would.

Prints ``KEY=VALUE`` lines (RULESET_ID, V1_DEPLOYMENT_ID, V2_DEPLOYMENT_ID,
WARM_V2_SHARE) for run.sh. Reads the same environment as the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "canary.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402

from assignments import router  # noqa: E402
from assignments import services as dataplane  # noqa: E402
from deployments import services  # noqa: E402
from deployments.models import RuleSet  # noqa: E402

RULESET_NAME = "bench-checkout"


def rules(version: str) -> list[dict]:
    """Ten checkout-risk rules; v2 tightens three thresholds and adds a regex check."""
    v2 = version == "v2"
    mismatch_amount = "300.0" if v2 else "500.0"
    returns_rate = "0.35" if v2 else "0.4"
    new_account_days = "14" if v2 else "7"
    return [
        {
            "name": "block_chargebacks",
            "condition": "input.chargebacks_12m >= 3",
            "output": {"decision": "block", "reason": "chargebacks"},
        },
        {
            "name": "block_risky_ip",
            "condition": "input.ip_risk_score > 0.9 && !input.email_verified",
            "output": {"decision": "block", "reason": "ip_risk"},
        },
        {
            "name": "review_country_mismatch",
            "condition": (
                "input.billing_country != input.shipping_country "
                f"&& input.amount > {mismatch_amount}"
            ),
            "output": {"decision": "review", "queue": "geo"},
        },
        {
            "name": "review_new_account_large",
            "condition": f"input.account_age_days < {new_account_days} && input.amount > 1000.0",
            "output": {"decision": "review", "queue": "new_account"},
        },
        {
            "name": "review_card_country",
            "condition": (
                'input.payment_method == "card" && input.card_bin_country != input.country'
            ),
            "output": {"decision": "review", "queue": "card"},
        },
        {
            "name": "review_night_velocity",
            "condition": "input.hour_of_day < 5 && input.orders_last_30d > 10",
            "output": {"decision": "review", "queue": "velocity"},
        },
        {
            "name": "review_bulk_items",
            "condition": "size(input.items) > 20 || input.items.exists(i, i.qty > 50)",
            "output": {"decision": "review", "queue": "bulk"},
        },
        (
            {
                "name": "review_order_id_format",
                "condition": '!input.order_id.matches("^ORD-[0-9]{8}-[0-9]{5}$")',
                "output": {"decision": "review", "queue": "format"},
            }
            if v2
            else {
                "name": "review_returns",
                "condition": (
                    f"input.returns_rate > {returns_rate} "
                    '&& input.customer_tier in ["bronze", "new"]'
                ),
                "output": {"decision": "review", "queue": "returns"},
            }
        ),
        {
            "name": "approve_vip",
            "condition": (
                'input.customer_tier in ["gold", "platinum"] '
                "&& input.email_verified && input.phone_verified"
            ),
            "output": {"decision": "approve", "lane": "fast", "tier": "vip"},
        },
        {
            "name": "approve_welcome_coupon",
            "condition": (
                'has(input.coupon_code) && input.coupon_code.startsWith("WELCOME") '
                "&& input.amount < 200.0"
            ),
            "output": {"decision": "approve", "lane": "fast", "tier": "welcome"},
        },
    ]


DEFAULT_OUTPUT = {"decision": "approve", "lane": "standard"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actor", default="bench", help="an existing user (canary_user)")
    parser.add_argument("--prewarm", type=int, default=0, help="sticky user ids to pre-assign")
    parser.add_argument("--prefix", default="w", help="prefix of the pre-warmed user ids")
    args = parser.parse_args()

    actor = get_user_model().objects.get(username=args.actor)
    sample = json.loads((HERE / "input.json").read_text())

    if RuleSet.objects.filter(name=RULESET_NAME).exists():
        sys.exit(f"rule set {RULESET_NAME!r} already exists: seed a fresh database")
    ruleset = services.ruleset_create(
        name=RULESET_NAME, description="Checkout risk rules (benchmark)", actor=actor
    )
    for label, semver in (("v1", "v1.0.0"), ("v2", "v2.0.0")):
        services.ruleset_version_create(
            ruleset=ruleset,
            version=semver,
            rules=rules(label),
            default=DEFAULT_OUTPUT,
            changelog=f"benchmark {label}",
            actor=actor,
        )
        # The sample must evaluate cleanly on both versions, or the benchmark measures errors.
        result = services.ruleset_test(ruleset=ruleset, input=sample, version=semver)
        if result["error"] is not None or result["matched_rule"] != "approve_vip":
            sys.exit(f"input.json does not evaluate as expected on {semver}: {result}")

    v1 = services.deployment_create(ruleset_id=ruleset.pk, version="v1.0.0", actor=actor)
    services.deployment_promote(deployment_id=v1.pk, actor=actor)
    v2 = services.deployment_create(
        ruleset_id=ruleset.pk,
        version="v2.0.0",
        changelog="tighter geo, returns and new-account thresholds",
        canary_config={
            "initial_traffic_percentage": 10,
            "increment": 10,
            "duration_minutes": 60,
            # SHADOW_PERCENTAGE=0 measures execute without paired evaluation.
            "shadow_percentage": int(os.environ.get("SHADOW_PERCENTAGE", "100")),
        },
        actor=actor,
    )
    services.deployment_start_canary(deployment_id=v2.pk, actor=actor, canary_pct=10)

    v2_count = 0
    for n in range(1, args.prewarm + 1):
        resolution = dataplane.dataplane_resolve(
            ruleset_id=ruleset.pk, context=router.RoutingContext(user_id=f"{args.prefix}{n}")
        )
        v2_count += resolution.canary_version == router.V2

    print(f"RULESET_ID={ruleset.pk}")
    print(f"V1_DEPLOYMENT_ID={v1.pk}")
    print(f"V2_DEPLOYMENT_ID={v2.pk}")
    if args.prewarm:
        print(f"WARM_V2_SHARE={v2_count / args.prewarm:.4f}")


if __name__ == "__main__":
    main()
