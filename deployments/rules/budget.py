"""The runtime budget's bookkeeping: what the check before each rule needs, and the
outcome of a rule not started because its worst case would not fit what is left.

``CompiledRuleSet.evaluate`` (``language``) runs the check; this module holds its parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.rules import cost as rule_cost
from deployments.rules.cost import InputCaps
from deployments.rules.inputs import _InputShape
from deployments.rules.limits import EvalLimits
from deployments.rules.types import Evaluation, RuleError


def _next_power_of_two(value: int) -> int:
    return 1 if value <= 1 else 1 << (value - 1).bit_length()


@dataclass(slots=True)
class _Check:
    """What the check before a rule needs, made once per evaluation that needs it."""

    shape: _InputShape
    limits: EvalLimits
    started: float
    cpu_started: float | None
    deadline: float
    rounded: InputCaps | None = None  # the caps rounded up to the input's shape
    estimates: int = 1  # worst cases on the input's shape still allowed in this evaluation


def _rounded_caps(shape: _InputShape, caps: InputCaps) -> InputCaps:
    """Caps that hold the input: its shape rounded up to powers of two, at most ``caps``.

    A valid bound (the estimate only grows with the caps) shared by similar inputs.
    """
    return InputCaps(
        max_elements=min(_next_power_of_two(shape.widest), caps.max_elements),
        max_size=min(_next_power_of_two(shape.size), caps.max_size),
        max_string=min(_next_power_of_two(shape.longest), caps.max_string),
    )


def _stopped_before(
    position: int,
    count: int,
    rule: str,
    worst: int,
    slowdown: float,
    seconds_left: float,
    limits: EvalLimits,
) -> Evaluation:
    """The budget-exhausted outcome of a rule not started: it might not end in time."""
    worst_ms = worst / rule_cost.UNITS_PER_MILLISECOND
    speed = f", {slowdown:.1f} times slower on this busy machine" if slowdown > 1 else ""
    message = (
        f"evaluation stopped before rule {position + 1} of {count}: its worst case on this "
        f"input ({worst_ms:.1f} ms at the calibrated speed{speed}) does not fit the "
        f"{max(0.0, seconds_left * 1000):.1f} ms left of the {limits.budget_ms} ms budget"
    )
    return Evaluation(False, None, None, RuleError(rule, message), exhausted=True)
