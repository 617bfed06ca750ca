"""Sticky three-tier routing, as pure functions: which version serves a request.

Django-free so every rule is tested without a database and every process makes
the same decision for the same context.

Buckets: ``bucket_for`` hashes ``"<deployment id>:<tier>:<identifier>"`` (UTF-8)
with SHA-256 and takes the first 8 bytes as a big-endian unsigned integer modulo
10,000. SHA-256 is specified byte for byte, so the bucket is the same on every
process, platform and Python version (unlike ``hash()``, which is salted per
process). A context gets v2 when its bucket is below ``traffic_percentage * 100``,
so raising traffic only ever moves contexts from v1 to v2 (a monotone ramp).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

V1 = "v1"
V2 = "v2"
WORKFLOW = "workflow"
SESSION = "session"
USER = "user"
RANDOM = "random"
# Look-up and decision order: the first tier is the strongest.
TIERS = (WORKFLOW, SESSION, USER)
BUCKETS = 10_000


@dataclass(frozen=True)
class RoutingContext:
    workflow_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None

    def identifier(self, tier: str) -> str | None:
        return {WORKFLOW: self.workflow_id, SESSION: self.session_id, USER: self.user_id}[tier]

    def present_tiers(self) -> list[tuple[str, str]]:
        return [(tier, ident) for tier in TIERS if (ident := self.identifier(tier))]


@dataclass(frozen=True)
class CanaryPolicy:
    deployment_id: str
    traffic_percentage: int
    target_user_ids: frozenset[str] | None = None
    target_workflow_ids: frozenset[str] | None = None

    @property
    def has_target_filter(self) -> bool:
        return self.target_user_ids is not None or self.target_workflow_ids is not None

    def is_eligible(self, context: RoutingContext) -> bool:
        """With a target filter, only listed users or workflows may get v2."""
        if not self.has_target_filter:
            return True
        if context.workflow_id and context.workflow_id in (self.target_workflow_ids or ()):
            return True
        return bool(context.user_id and context.user_id in (self.target_user_ids or ()))


@dataclass(frozen=True)
class StoredAssignment:
    tier: str
    identifier: str
    version: str
    expires_at: float | None = None  # epoch seconds; only session assignments expire

    def is_live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Decision:
    version: str
    # The tier whose assignment (existing or new) decided; "random" without ids;
    # None when the breaker forced v1.
    priority: str | None
    # Where to store the decision: (tier, identifier), or None to store nothing.
    store_at: tuple[str, str] | None = None
    existing: bool = False


Lookup = Callable[[str, str], StoredAssignment | None]


def bucket_for(deployment_id: str, tier: str, identifier: str) -> int:
    digest = hashlib.sha256(f"{deployment_id}:{tier}:{identifier}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def version_for_bucket(bucket: int, traffic_percentage: int) -> str:
    return V2 if bucket < traffic_percentage * 100 else V1


def decide(
    policy: CanaryPolicy,
    context: RoutingContext,
    lookup: Lookup,
    *,
    now: float,
    breaker_open: bool = False,
    rng: Callable[[], float] = random.random,
) -> Decision:
    """Route one request during a canary.

    1. Breaker OPEN: v1, nothing stored.
    2. The first live assignment in tier order decides. If it sits below the
       strongest tier present, the decision is also stored at that tier, so a
       workflow keeps the version it was first served whoever reruns it.
    3. Otherwise a new decision at the strongest tier present: ineligible
       contexts get v1; eligible ones are bucketed. It is stored at that tier.
    4. No ids at all: a random bucket, nothing stored.
    """
    if breaker_open:
        return Decision(V1, None)
    present = context.present_tiers()
    if not present:
        bucket = int(rng() * BUCKETS)
        return Decision(version_for_bucket(bucket, policy.traffic_percentage), RANDOM)
    strongest = present[0]
    for tier, identifier in present:
        found = lookup(tier, identifier)
        if found is not None and found.is_live(now):
            inherit = strongest if (tier, identifier) != strongest else None
            return Decision(found.version, tier, store_at=inherit, existing=True)
    tier, identifier = strongest
    if not policy.is_eligible(context):
        return Decision(V1, tier, store_at=strongest)
    bucket = bucket_for(policy.deployment_id, tier, identifier)
    return Decision(version_for_bucket(bucket, policy.traffic_percentage), tier, store_at=strongest)
