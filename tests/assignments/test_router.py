"""The pure router: priority, expiry, eligibility, stable buckets, monotone ramp, share."""

from __future__ import annotations

import pytest

from assignments import router as r

DEPLOYMENT = "00000000-0000-0000-0000-000000000001"


def nothing_stored(tier: str, identifier: str) -> None:
    return None


def policy(traffic: int = 10, **kwargs: object) -> r.CanaryPolicy:
    return r.CanaryPolicy(deployment_id=DEPLOYMENT, traffic_percentage=traffic, **kwargs)  # type: ignore[arg-type]


def store_of(*assignments: r.StoredAssignment) -> r.Lookup:
    table = {(a.tier, a.identifier): a for a in assignments}
    return lambda tier, identifier: table.get((tier, identifier))


# NOTE: these values are part of the product's contract: changing the hash would
# move live users between versions mid-canary. They must never change.
@pytest.mark.parametrize(
    ("deployment", "tier", "identifier", "bucket"),
    [
        (DEPLOYMENT, "workflow", "workflow_123", 6071),
        (DEPLOYMENT, "workflow", "workflow_456", 6151),
        (DEPLOYMENT, "user", "user-a", 9282),
        (DEPLOYMENT, "session", "s-1", 7622),
        ("5b6c1f5e-0000-4000-8000-000000000000", "user", "user-a", 9525),
        ("5b6c1f5e-0000-4000-8000-000000000000", "workflow", "wf-ü", 2195),
    ],
)
def test_bucket_table_never_changes(
    deployment: str, tier: str, identifier: str, bucket: int
) -> None:
    assert r.bucket_for(deployment, tier, identifier) == bucket


def test_bucket_depends_on_deployment_and_tier() -> None:
    assert r.bucket_for(DEPLOYMENT, "user", "x") != r.bucket_for(DEPLOYMENT, "session", "x")
    assert r.bucket_for(DEPLOYMENT, "user", "x") != r.bucket_for("other", "user", "x")


def test_share_is_within_tolerance_over_100k_ids() -> None:
    ids = [f"user-{n}" for n in range(100_000)]
    for traffic in (1, 10, 50, 90):
        in_v2 = sum(
            r.version_for_bucket(r.bucket_for(DEPLOYMENT, "user", i), traffic) == r.V2 for i in ids
        )
        assert abs(in_v2 / len(ids) - traffic / 100) < 0.005, traffic


def test_ramp_is_monotone() -> None:
    for n in range(5_000):
        bucket = r.bucket_for(DEPLOYMENT, "user", f"u{n}")
        versions = [r.version_for_bucket(bucket, traffic) for traffic in range(0, 101)]
        first_v2 = versions.index(r.V2) if r.V2 in versions else 101
        assert all(v == r.V1 for v in versions[:first_v2])
        assert all(v == r.V2 for v in versions[first_v2:])


def test_zero_and_hundred_percent() -> None:
    assert r.version_for_bucket(0, 0) == r.V1
    assert r.version_for_bucket(9_999, 100) == r.V2


def test_priority_workflow_over_session_over_user() -> None:
    context = r.RoutingContext(workflow_id="w", session_id="s", user_id="u")
    stored = store_of(
        r.StoredAssignment("user", "u", r.V1),
        r.StoredAssignment("session", "s", r.V2, expires_at=2_000),
        r.StoredAssignment("workflow", "w", r.V1),
    )
    decision = r.decide(policy(), context, stored, now=1_000)
    assert (decision.version, decision.priority, decision.existing) == (r.V1, "workflow", True)
    assert decision.store_at is None

    no_workflow = store_of(
        r.StoredAssignment("user", "u", r.V1),
        r.StoredAssignment("session", "s", r.V2, expires_at=2_000),
    )
    decision = r.decide(policy(), context, no_workflow, now=1_000)
    assert (decision.version, decision.priority) == (r.V2, "session")
    # The workflow inherits the decision so it stays sticky whoever reruns it.
    assert decision.store_at == ("workflow", "w")


def test_expired_session_is_ignored_and_redecided() -> None:
    context = r.RoutingContext(session_id="s")
    stored = store_of(r.StoredAssignment("session", "s", r.V2, expires_at=1_000))
    live = r.decide(policy(traffic=0), context, stored, now=999.999)
    assert (live.version, live.existing) == (r.V2, True)
    expired = r.decide(policy(traffic=0), context, stored, now=1_000)
    assert (expired.version, expired.existing, expired.store_at) == (r.V1, False, ("session", "s"))


def test_new_decision_at_the_strongest_tier_present() -> None:
    decision = r.decide(
        policy(traffic=100), r.RoutingContext(session_id="s", user_id="u"), nothing_stored, now=0
    )
    assert (decision.version, decision.priority, decision.store_at) == (
        r.V2,
        "session",
        ("session", "s"),
    )
    user_only = r.decide(policy(traffic=0), r.RoutingContext(user_id="u"), nothing_stored, now=0)
    assert (user_only.version, user_only.priority, user_only.store_at) == (
        r.V1,
        "user",
        ("user", "u"),
    )


def test_new_decision_follows_the_bucket() -> None:
    context = r.RoutingContext(workflow_id="workflow_123")  # bucket 6071
    assert r.decide(policy(traffic=60), context, nothing_stored, now=0).version == r.V1
    assert r.decide(policy(traffic=61), context, nothing_stored, now=0).version == r.V2


def test_target_filter_limits_v2_to_listed_contexts() -> None:
    targeted = policy(
        traffic=100, target_user_ids=frozenset({"vip"}), target_workflow_ids=frozenset({"wf-x"})
    )
    assert (
        r.decide(targeted, r.RoutingContext(user_id="vip"), nothing_stored, now=0).version == r.V2
    )
    assert (
        r.decide(targeted, r.RoutingContext(workflow_id="wf-x"), nothing_stored, now=0).version
        == r.V2
    )
    assert (
        r.decide(
            targeted, r.RoutingContext(workflow_id="wf-x", user_id="other"), nothing_stored, now=0
        ).version
        == r.V2
    )
    outsider = r.decide(targeted, r.RoutingContext(user_id="nobody"), nothing_stored, now=0)
    assert (outsider.version, outsider.store_at) == (r.V1, ("user", "nobody"))
    # A listed user running an unlisted workflow is eligible through the user.
    assert (
        r.decide(
            targeted, r.RoutingContext(workflow_id="wf-y", user_id="vip"), nothing_stored, now=0
        ).version
        == r.V2
    )


def test_eligible_contexts_are_still_bucketed() -> None:
    targeted = policy(traffic=0, target_user_ids=frozenset({"vip"}))
    assert (
        r.decide(targeted, r.RoutingContext(user_id="vip"), nothing_stored, now=0).version == r.V1
    )


def test_breaker_open_serves_v1_and_stores_nothing() -> None:
    stored = store_of(r.StoredAssignment("user", "u", r.V2))
    decision = r.decide(
        policy(traffic=100), r.RoutingContext(user_id="u"), stored, now=0, breaker_open=True
    )
    assert (decision.version, decision.priority, decision.store_at) == (r.V1, None, None)


def test_no_ids_is_random_and_not_stored() -> None:
    low = r.decide(
        policy(traffic=10), r.RoutingContext(), nothing_stored, now=0, rng=lambda: 0.0999
    )
    high = r.decide(policy(traffic=10), r.RoutingContext(), nothing_stored, now=0, rng=lambda: 0.1)
    assert (low.version, low.priority, low.store_at) == (r.V2, "random", None)
    assert (high.version, high.store_at) == (r.V1, None)
