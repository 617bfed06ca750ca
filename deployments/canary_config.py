"""Validation and defaults for ``canary_config``; Django-free so every caller shares it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class CanaryConfigError(ValueError):
    """Carries one message per offending field, keyed by field name."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def _int_between(low: int, high: int | None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "Must be an integer."
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            return f"Must be at least {low}{upper}."
        return None

    return check


def _fraction(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "Must be a number."
    if not 0 <= value <= 1:
        return "Must be between 0 and 1."
    return None


def _greater_than_one(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "Must be a number."
    if value <= 1:
        return "Must be greater than 1."
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
    "duration_minutes": Field(60, _int_between(1, 525_600)),  # a year
    "success_threshold": Field(0.95, _fraction, float),
    "error_threshold": Field(0.05, _fraction, float),
    "latency_multiplier": Field(2.0, _greater_than_one, float),
    "min_samples": Field(20, _int_between(1, None)),
    "auto_rollback": Field(True, _boolean),
    "auto_progress": Field(False, _boolean),
    "failure_threshold": Field(5, _int_between(1, None)),
    "breaker_cooldown_seconds": Field(60, _int_between(1, None)),
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
