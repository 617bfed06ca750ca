"""Validation and defaults for ``canary_config``; Django-free so every caller shares it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class CanaryConfigError(ValueError):
    """Carries one message per offending field, keyed by field name."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


# Every number has an upper bound, so nothing accepted here can overflow a float
# or a timer later (the data plane, the breaker and the monitor read these).
MAX_DURATION_MINUTES = 7 * 24 * 60  # a week
MAX_MIN_SAMPLES = 1_000_000
MAX_FAILURE_THRESHOLD = 10_000
MAX_BREAKER_COOLDOWN_SECONDS = 24 * 60 * 60  # a day
MAX_LATENCY_MULTIPLIER = 100
MAX_LATENCY_FLOOR_MS = 60_000.0  # a minute
MAX_READINESS_MINUTES = 7 * 24 * 60  # a week: the guide calls a longer canary stale
MAX_REQUIRED_APPROVALS = 5
MAX_NON_INFERIORITY_MARGIN = 0.5


def _int_between(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "Must be an integer."
        # NOTE: JSON integers have no size limit (10**400 parses); compare as ints,
        # never through float(), which would overflow.
        if not low <= value <= high:
            return f"Must be at least {low} and at most {high}."
        return None

    return check


def _finite_number(value: Any) -> str | None:
    """A JSON number that is not a bool, infinity or NaN (a float overflowing on parse is inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "Must be a number."
    if isinstance(value, float) and not math.isfinite(value):
        return "Must be a finite number."
    return None


def _fraction(value: Any) -> str | None:
    problem = _finite_number(value)
    if problem:
        return problem
    if not 0 <= value <= 1:
        return "Must be between 0 and 1."
    return None


def _multiplier(value: Any) -> str | None:
    problem = _finite_number(value)
    if problem:
        return problem
    if not 1 < value <= MAX_LATENCY_MULTIPLIER:
        return f"Must be greater than 1 and at most {MAX_LATENCY_MULTIPLIER}."
    return None


def _latency_floor(value: Any) -> str | None:
    problem = _finite_number(value)
    if problem:
        return problem
    if not 0 <= value <= MAX_LATENCY_FLOOR_MS:
        return f"Must be at least 0 and at most {MAX_LATENCY_FLOOR_MS:g}."
    return None


def _margin(value: Any) -> str | None:
    problem = _finite_number(value)
    if problem:
        return problem
    if not 0 <= value <= MAX_NON_INFERIORITY_MARGIN:
        return f"Must be at least 0 and at most {MAX_NON_INFERIORITY_MARGIN:g}."
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "Must be true or false."


@dataclass(frozen=True)
class Field:
    default: Any
    check: Callable[[Any], str | None]
    cast: Callable[[Any], Any] = lambda value: value


FIELDS: dict[str, Field] = {
    "initial_traffic_percentage": Field(10, _int_between(1, 100)),
    "increment": Field(10, _int_between(1, 100)),
    "duration_minutes": Field(60, _int_between(1, MAX_DURATION_MINUTES)),
    "success_threshold": Field(0.95, _fraction, float),
    "error_threshold": Field(0.05, _fraction, float),
    "latency_multiplier": Field(2.0, _multiplier, float),
    "min_samples": Field(20, _int_between(1, MAX_MIN_SAMPLES)),
    "auto_rollback": Field(True, _boolean),
    "auto_progress": Field(False, _boolean),
    "failure_threshold": Field(5, _int_between(1, MAX_FAILURE_THRESHOLD)),
    "breaker_cooldown_seconds": Field(60, _int_between(1, MAX_BREAKER_COOLDOWN_SECONDS)),
    # Paired evaluation (SPEC 9.1) and the latency rule's absolute floor (9.2).
    "shadow_percentage": Field(100, _int_between(0, 100)),
    "latency_floor_ms": Field(1.0, _latency_floor, float),
    # Release governance (SPEC 9.3): the readiness checklist and four-eyes approvals.
    "readiness_minutes": Field(60, _int_between(1, MAX_READINESS_MINUTES)),
    "enforce_readiness": Field(False, _boolean),
    "required_approvals": Field(1, _int_between(1, MAX_REQUIRED_APPROVALS)),
    # One decision (SPEC 9.6): promote needs v2 shown not worse than v1 by more than this.
    "non_inferiority_margin": Field(0.01, _margin, float),
    # Before the start (SPEC 10.2): the preflight checklist gates start-canary.
    "enforce_preflight": Field(False, _boolean),
    "require_backtest": Field(False, _boolean),
}


def default_canary_config() -> dict[str, Any]:
    return {name: field.default for name, field in FIELDS.items()}


def normalize_canary_config(
    raw: Mapping[str, Any] | None, *, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return a complete config: ``raw`` over ``base`` (or the defaults).

    Every field is checked and every problem reported at once, so a client
    fixes its request in one round trip.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise CanaryConfigError({"non_field_errors": ["Must be a JSON object."]})
    errors: dict[str, list[str]] = {}
    config = dict(base) if base is not None else default_canary_config()
    for name, value in raw.items():
        field = FIELDS.get(name)
        if field is None:
            errors[str(name)] = [f"Unknown field. Known fields: {', '.join(FIELDS)}."]
            continue
        problem = field.check(value)
        if problem:
            errors[name] = [problem]
        else:
            config[name] = field.cast(value)
    if errors:
        raise CanaryConfigError(errors)
    return config
