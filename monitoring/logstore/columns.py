"""ORM expressions over the execution log's columns, shared by the rollup job and the
selectors so an hour rolled up and the same hour read raw are computed alike.

A paired row holds the served version's outcome in the plain columns and the other
version's in the ``shadow_*`` columns; ``side`` reads one version's value whichever
version was served.
"""

from __future__ import annotations

import math
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    CharField,
    ExpressionWrapper,
    F,
    FloatField,
    JSONField,
    Q,
    Value,
    When,
)
from django.db.models.functions import Floor, Greatest, Ln

VERSIONS = ("v1", "v2")

# Latency histograms: log-spaced buckets, each 2% wider than the last, from 1 us.
LOW_MS = 0.001
RATIO = 1.02

PAIRED = Q(shadow_success__isnull=False)
BOTH_SUCCEEDED = Q(success=True, shadow_success=True)
BOTH_FAILED = Q(success=False, shadow_success=False)
V2_ONLY_FAILED = Q(served_version="v2", success=False, shadow_success=True) | Q(
    served_version="v1", success=True, shadow_success=False
)
V1_ONLY_FAILED = Q(served_version="v1", success=False, shadow_success=True) | Q(
    served_version="v2", success=True, shadow_success=False
)
V2_SLOWER = Q(served_version="v2", latency_ms__gt=F("shadow_latency_ms")) | Q(
    served_version="v1", shadow_latency_ms__gt=F("latency_ms")
)
V2_FASTER = Q(served_version="v2", latency_ms__lt=F("shadow_latency_ms")) | Q(
    served_version="v1", shadow_latency_ms__lt=F("latency_ms")
)
# Pairs whose latency ratio is defined.
TIMED_PAIR = Q(shadow_latency_ms__gt=0, latency_ms__gt=0)


def side(version: str, served: Any, shadow: Any, output_field: Any = None) -> Case:
    """A column of ``version``'s side of a pair, whichever version was served."""
    return Case(
        When(served_version=version, then=served),
        default=shadow,
        output_field=output_field,
    )


def latency_ratio() -> ExpressionWrapper:
    """v2's latency over v1's on the same input."""
    return ExpressionWrapper(
        side("v2", F("latency_ms"), F("shadow_latency_ms"), FloatField())
        / side("v1", F("latency_ms"), F("shadow_latency_ms"), FloatField()),
        output_field=FloatField(),
    )


def latency_bucket(column: str = "latency_ms") -> Any:
    """The histogram bucket of a latency column (see ``bucket_value``)."""
    latency = Greatest(F(column), Value(LOW_MS), output_field=FloatField())
    return Floor(Ln(latency / Value(LOW_MS)) / Value(math.log(RATIO)))


def latency_bucket_value(index: int) -> float:
    """The geometric midpoint of a latency bucket: within 1% of any latency in it."""
    return LOW_MS * RATIO ** (index + 0.5)


def ratio_bucket() -> Any:
    """The bucket of a pair's v2/v1 latency ratio: ``floor(log_1.02 ratio)``, negative
    when v2 was faster (pairs with a zero latency have no ratio: see ``TIMED_PAIR``)."""
    return Floor(Ln(latency_ratio()) / Value(math.log(RATIO)))


def ratio_bucket_value(index: int) -> float:
    return RATIO ** (index + 0.5)


def pair_sides() -> dict[str, Any]:
    """Each version's rule, output and success on a paired row."""
    rule = {
        version: Case(
            When(served_version=version, success=True, then=F("matched_rule")),
            When(served_version=version, then=F("error_rule")),
            default=F("shadow_rule"),
            output_field=CharField(),
        )
        for version in VERSIONS
    }
    return {
        "v1_rule": rule["v1"],
        "v2_rule": rule["v2"],
        "v1_output": side("v1", F("output"), F("shadow_output"), JSONField()),
        "v2_output": side("v2", F("output"), F("shadow_output"), JSONField()),
        "v1_success": side("v1", F("success"), F("shadow_success"), BooleanField()),
        "v2_success": side("v2", F("success"), F("shadow_success"), BooleanField()),
    }


CHANGE_KEYS = ("v1_rule", "v2_rule", "v1_output", "v2_output", "v1_success", "v2_success")
