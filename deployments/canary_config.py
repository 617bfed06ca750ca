"""Validation and defaults for ``canary_config``; Django-free so every caller shares it."""

from __future__ import annotations

import copy
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
MAX_BAKE_MINUTES = 7 * 24 * 60  # a week
# Rollout plans (SPEC 10.1).
MAX_PLAN_STEPS = 20
MAX_PAUSE_MINUTES = 10_080  # a week
MAX_METRIC_CHECKS = 10
MAX_METRIC_NAME = 100
MAX_METRIC_QUERY = 2_000
# The guide's schedule: 10% for 30 minutes, 20% for 30, 50% for an hour, then promote.
GUIDE_STEPS: tuple[dict[str, Any], ...] = (
    {"traffic": 10},
    {"pause_minutes": 30},
    {"traffic": 20},
    {"pause_minutes": 30},
    {"traffic": 50},
    {"pause_minutes": 60},
    {"promote": True},
)


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


MAX_GATES = 5
MAX_GATE_URL = 2000
GATE_TYPES = ("confirm-start", "confirm-traffic", "confirm-promotion")


def _gates(value: Any) -> str | None:
    """Up to five ``{type, url}`` (SPEC 10.4); the address itself is vetted when asked."""
    if not isinstance(value, list) or len(value) > MAX_GATES:
        return f"Must be a list of at most {MAX_GATES} gates."
    for index, gate in enumerate(value):
        if not isinstance(gate, Mapping) or set(gate) != {"type", "url"}:
            return f"Gate {index}: must be an object with exactly the keys type and url."
        if gate["type"] not in GATE_TYPES:
            return f"Gate {index}: type must be one of {', '.join(GATE_TYPES)}."
        url = gate["url"]
        if not isinstance(url, str) or len(url) > MAX_GATE_URL:
            return f"Gate {index}: url must be a string of at most {MAX_GATE_URL} characters."
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
            return f"Gate {index}: url must be an http or https URL with a host."
    return None


def _step_problem(step: Any, index: int, count: int) -> str | None:
    if not isinstance(step, Mapping) or len(step) != 1:
        return (
            'Must be an object with exactly one key: "traffic", "pause_minutes", "pause" '
            'or "promote".'
        )
    [(kind, value)] = step.items()
    if kind == "traffic":
        return _int_between(0, 100)(value)
    if kind == "pause_minutes":
        return _int_between(1, MAX_PAUSE_MINUTES)(value)
    if kind == "pause":
        return None if value == "approval" else 'Must be "approval".'
    if kind == "promote":
        if value is not True:
            return "Must be true."
        return None if index == count - 1 else "The promote step may only be the last step."
    return f'Unknown step "{kind}". Known steps: traffic, pause_minutes, pause, promote.'


def check_steps(value: Any) -> dict[str, list[str]]:
    """Problems keyed ``steps`` or ``steps[i]``, so an error names the offending step."""
    if value is None or value == "guide":
        return {}
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_PLAN_STEPS:
        return {"steps": [f'Must be "guide" or a list of 1 to {MAX_PLAN_STEPS} steps.']}
    errors: dict[str, list[str]] = {}
    for index, step in enumerate(value):
        problem = _step_problem(step, index, len(value))
        if problem:
            errors[f"steps[{index}]"] = [problem]
    return errors


def _expand_steps(value: Any) -> list[dict[str, Any]] | None:
    if value == "guide":
        return [dict(step) for step in GUIDE_STEPS]
    return None if value is None else [dict(step) for step in value]


def _metric_check_problem(check: Any) -> str | None:
    if not isinstance(check, Mapping):
        return "Must be an object {name, query, max?, min?}."
    unknown = sorted(set(check) - {"name", "query", "max", "min"})
    if unknown:
        return f"Unknown key(s) {', '.join(map(str, unknown))}; known: name, query, max, min."
    name, query = check.get("name"), check.get("query")
    if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_METRIC_NAME:
        return f"name must be a non-empty string of at most {MAX_METRIC_NAME} characters."
    if not isinstance(query, str) or not 0 < len(query.strip()) <= MAX_METRIC_QUERY:
        return f"query must be a non-empty string of at most {MAX_METRIC_QUERY} characters."
    if "max" not in check and "min" not in check:
        return "Give max, min or both: a check needs a bound to be breached."
    for bound in ("max", "min"):
        if bound in check and _finite_number(check[bound]):
            return f"{bound} must be a finite number."
    if "max" in check and "min" in check and check["min"] > check["max"]:
        return "min must not be greater than max."
    return None


def check_metric_checks(value: Any) -> dict[str, list[str]]:
    """Problems keyed ``metric_checks`` or ``metric_checks[i]``."""
    if not isinstance(value, list) or len(value) > MAX_METRIC_CHECKS:
        return {"metric_checks": [f"Must be a list of at most {MAX_METRIC_CHECKS} checks."]}
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    for index, check in enumerate(value):
        problem = _metric_check_problem(check)
        if problem is None and check["name"] in seen:
            problem = f'Another check is already named "{check["name"]}".'
        if problem:
            errors[f"metric_checks[{index}]"] = [problem]
        else:
            seen.add(check["name"])
    return errors


# Fields whose value is a structure: validated as a whole, errors keyed by element.
STRUCTURED: dict[str, tuple[Callable[[Any], dict[str, list[str]]], Callable[[Any], Any]]] = {
    "steps": (check_steps, _expand_steps),
    "metric_checks": (check_metric_checks, lambda value: [dict(check) for check in value]),
}


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
    # The bake (SPEC 10.3): after a promotion the previous version keeps running in shadow
    # this long, and a paired breach rolls the promotion back. 0: no bake.
    "bake_minutes": Field(0, _int_between(0, MAX_BAKE_MINUTES)),
    # Webhooks, gates and triggers (SPEC 10.4): outside systems that must say yes.
    "gates": Field([], _gates, lambda value: [dict(gate) for gate in value]),
    # Rollout plans (SPEC 10.1): the step guard, the plan and the metric checks.
    "max_traffic_jump": Field(50, _int_between(1, 100)),
    "steps": Field(None, lambda value: None),
    "metric_checks": Field([], lambda value: None),
    # Before the start (SPEC 10.2): the preflight checklist gates start-canary.
    "enforce_preflight": Field(False, _boolean),
    "require_backtest": Field(False, _boolean),
}


def default_canary_config() -> dict[str, Any]:
    return {name: copy.deepcopy(field.default) for name, field in FIELDS.items()}


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
        if name in STRUCTURED:
            check, expand = STRUCTURED[name]
            problems = check(value)
            if problems:
                errors.update(problems)
            else:
                config[name] = expand(value)
            continue
        problem = field.check(value)
        if problem:
            errors[name] = [problem]
        else:
            config[name] = field.cast(value)
    if errors:
        raise CanaryConfigError(errors)
    return config
