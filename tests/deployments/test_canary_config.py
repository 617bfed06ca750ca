import math

import pytest

from deployments.canary_config import (
    FIELDS,
    CanaryConfigError,
    default_canary_config,
    normalize_canary_config,
)


def test_defaults_match_the_contract() -> None:
    assert default_canary_config() == {
        "initial_traffic_percentage": 10,
        "increment": 10,
        "duration_minutes": 60,
        "success_threshold": 0.95,
        "error_threshold": 0.05,
        "latency_multiplier": 2.0,
        "min_samples": 20,
        "auto_rollback": True,
        "auto_progress": False,
        "failure_threshold": 5,
        "breaker_cooldown_seconds": 60,
        "shadow_percentage": 100,
        "latency_floor_ms": 1.0,
        "readiness_minutes": 60,
        "enforce_readiness": False,
        "required_approvals": 1,
        "non_inferiority_margin": 0.01,
        "bake_minutes": 0,
        "gates": [],
        "max_traffic_jump": 50,
        "steps": None,
        "metric_checks": [],
        "enforce_preflight": False,
        "require_backtest": False,
    }


@pytest.mark.parametrize("margin", [-0.01, 0.51, "0.01", float("nan"), True])
def test_non_inferiority_margin_out_of_range_names_the_field(margin: object) -> None:
    with pytest.raises(CanaryConfigError) as refused:
        normalize_canary_config({"non_inferiority_margin": margin})
    assert "non_inferiority_margin" in refused.value.errors


@pytest.mark.parametrize("minutes", [-1, 10_081, 1.0, "1440", None, True])
def test_bake_minutes_out_of_range_names_the_field(minutes: object) -> None:
    with pytest.raises(CanaryConfigError) as refused:
        normalize_canary_config({"bake_minutes": minutes})
    assert list(refused.value.errors) == ["bake_minutes"]


@pytest.mark.parametrize("minutes", [0, 1, 1440, 10_080])
def test_bake_minutes_at_its_bounds(minutes: int) -> None:
    assert normalize_canary_config({"bake_minutes": minutes})["bake_minutes"] == minutes


def test_given_values_override_defaults() -> None:
    config = normalize_canary_config({"increment": 25, "error_threshold": 0, "auto_progress": True})
    assert config["increment"] == 25
    assert config["error_threshold"] == 0.0
    assert isinstance(config["error_threshold"], float)
    assert config["auto_progress"] is True
    assert config["duration_minutes"] == 60


def test_base_is_kept_for_partial_updates() -> None:
    base = normalize_canary_config({"increment": 25})
    assert normalize_canary_config({"min_samples": 5}, base=base)["increment"] == 25


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_traffic_percentage", 0),
        ("initial_traffic_percentage", 101),
        ("initial_traffic_percentage", 10.5),
        ("initial_traffic_percentage", "10"),
        ("initial_traffic_percentage", True),
        ("increment", 0),
        ("duration_minutes", 0),
        ("success_threshold", 1.01),
        ("success_threshold", -0.1),
        ("error_threshold", "0.05"),
        ("error_threshold", False),
        ("latency_multiplier", 1),
        ("latency_multiplier", 0.5),
        ("min_samples", 0),
        ("auto_rollback", "yes"),
        ("auto_progress", 1),
        ("failure_threshold", 0),
        ("breaker_cooldown_seconds", 0),
        ("breaker_cooldown_seconds", None),
        ("readiness_minutes", 0),
        ("enforce_readiness", "true"),
        ("required_approvals", 0),
        ("required_approvals", 6),
        ("required_approvals", 2.0),
    ],
)
def test_out_of_range_or_wrong_type_names_the_field(field: str, value: object) -> None:
    with pytest.raises(CanaryConfigError) as error:
        normalize_canary_config({field: value})
    assert list(error.value.errors) == [field]


def test_unknown_keys_are_refused_all_at_once() -> None:
    with pytest.raises(CanaryConfigError) as error:
        normalize_canary_config({"speed": 1, "increment": 0, "initial_traffic": 5})
    assert set(error.value.errors) == {"speed", "increment", "initial_traffic"}


def test_not_an_object() -> None:
    with pytest.raises(CanaryConfigError):
        normalize_canary_config([1, 2])  # type: ignore[arg-type]


HUGE = 10**400  # what the JSON integer 1e400 written out in digits parses to

NUMERIC_FIELDS = [name for name, field in FIELDS.items() if not isinstance(field.default, bool)]


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
@pytest.mark.parametrize("value", [HUGE, -HUGE, math.inf, -math.inf, math.nan])
def test_every_number_is_bounded_and_finite(field: str, value: object) -> None:
    with pytest.raises(CanaryConfigError) as error:
        normalize_canary_config({field: value})
    assert list(error.value.errors) == [field]


@pytest.mark.parametrize(
    ("field", "highest"),
    [
        ("initial_traffic_percentage", 100),
        ("increment", 100),
        ("duration_minutes", 10_080),
        ("min_samples", 1_000_000),
        ("failure_threshold", 10_000),
        ("breaker_cooldown_seconds", 86_400),
        ("latency_multiplier", 100),
        ("success_threshold", 1),
        ("error_threshold", 1),
        ("readiness_minutes", 10_080),
        ("required_approvals", 5),
    ],
)
def test_upper_bounds_are_inclusive(field: str, highest: int) -> None:
    assert normalize_canary_config({field: highest})[field] == highest
    over = highest + 1 if isinstance(FIELDS[field].default, int) else highest + 0.001
    with pytest.raises(CanaryConfigError) as error:
        normalize_canary_config({field: over})
    assert list(error.value.errors) == [field]
