"""The bounds of evaluation: sizes of a version, shapes of a condition, the budget and input caps.

The numbers in force come from a source the host application registers
(``set_limits_source``; Django settings in this project), so this package imports no Django.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cel_expr_python import cel

from deployments.rules import cost as rule_cost
from deployments.rules.cost import InputCaps

# --- limits -------------------------------------------------------------------------------
# Structure of a version.
MAX_RULES = 200  # rules per version: evaluation is a linear scan, keep it short
MAX_NAME_LENGTH = 100  # characters in a rule name
MAX_CONDITION_LENGTH = 4096  # characters in one condition (the library allows 100,000)
MAX_OUTPUT_CHARS = 65_536  # JSON-encoded size of one output (each rule and the default)
MAX_OUTPUT_DEPTH = 32  # nesting of lists/objects in one output

# Shape of a condition, checked on the compiled expression. These close the ways a
# short expression could allocate gigabytes: the library has no memory limit.
MAX_MACROS = 4  # all/exists/exists_one calls in one condition (map/filter are refused)
MAX_MACRO_NESTING = 2  # a macro inside a macro inside ... at most this deep
MAX_LITERAL_ELEMENTS_IN_MACRO = 100  # list/map literal elements inside macro bodies

# Fixed by cel-expr-python 0.1.3 (not configurable there), documented for operators.
CEL_MAX_RECURSION_DEPTH = 32  # parser/checker nesting limit
CEL_ITERATION_BUDGET = 10_000  # macro iterations per evaluation of one condition

# Compiled versions kept per process by ``compiled_for``.
CACHE_SIZE = 256

# Work per evaluation (docs/rules.md "Bounded evaluation"). Django settings override the
# defaults: CANARY_EVAL_BUDGET_MS, CANARY_INPUT_MAX_LIST_LENGTH,
# CANARY_INPUT_MAX_STRING_LENGTH, CANARY_INPUT_MAX_DEPTH and CANARY_MAX_INPUT_BYTES.
DEFAULT_EVAL_BUDGET_MS = 50  # wall-clock budget of one evaluate() call
DEFAULT_INPUT_MAX_LIST_LENGTH = 1_000  # elements in one list, keys in one object
DEFAULT_INPUT_MAX_STRING_LENGTH = 8_192  # characters in one string (or object key)
DEFAULT_INPUT_MAX_DEPTH = 32  # nested lists/objects, the input itself being level 1
DEFAULT_INPUT_MAX_SIZE = 64 * 1024  # values plus characters in the whole input

_RULE_KEYS = ("name", "condition", "output")
_FATAL = (KeyboardInterrupt, SystemExit)

# Variables are dynamically typed: the input is arbitrary JSON.
_ENV = cel.NewEnv(variables={"input": cel.Type.DYN})


# --- configuration ------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalLimits:
    """The evaluation budget and the input caps the static cost estimate assumes."""

    budget_ms: int = DEFAULT_EVAL_BUDGET_MS
    max_list_length: int = DEFAULT_INPUT_MAX_LIST_LENGTH
    max_string_length: int = DEFAULT_INPUT_MAX_STRING_LENGTH
    max_input_size: int = DEFAULT_INPUT_MAX_SIZE
    max_depth: int = DEFAULT_INPUT_MAX_DEPTH

    @cached_property
    def caps(self) -> InputCaps:
        """Built once per limits (read for every evaluation, twice)."""
        return InputCaps(
            max_elements=self.max_list_length,
            max_size=self.max_input_size,
            max_string=self.max_string_length,
        )

    @property
    def rule_cost_limit(self) -> int:
        """Cost units one condition may reach: the budget, at the calibrated speed."""
        return self.budget_ms * rule_cost.UNITS_PER_MILLISECOND


_limits_by_values: dict[tuple[int, ...], EvalLimits] = {}

# Where the numbers in force come from: a function the host application registers
# (``deployments.apps`` returns Django's settings). Without one (benchmarks, scripts) the
# defaults apply. The answer is kept until ``forget_limits`` (the host calls it when a
# setting changes), because every execute asks several times.
_settings_source: Callable[[], Any] | None = None
_in_force: EvalLimits | None = None


def set_limits_source(source: Callable[[], Any] | None) -> None:
    """Register what ``eval_limits`` reads its ``CANARY_*`` numbers from."""
    global _settings_source
    _settings_source = source
    forget_limits()


def forget_limits() -> None:
    """Read the limits again on the next call: a setting changed."""
    global _in_force
    _in_force = None


def eval_limits() -> EvalLimits:
    """The limits in force: the registered settings when there are some, else the defaults."""
    limits = _in_force
    return limits if limits is not None else _read_limits()


def _read_limits() -> EvalLimits:
    global _in_force
    values = (
        DEFAULT_EVAL_BUDGET_MS,
        DEFAULT_INPUT_MAX_LIST_LENGTH,
        DEFAULT_INPUT_MAX_STRING_LENGTH,
        DEFAULT_INPUT_MAX_SIZE,
        DEFAULT_INPUT_MAX_DEPTH,
    )
    source = _settings_source() if _settings_source is not None else None
    if source is not None:
        values = (
            getattr(source, "CANARY_EVAL_BUDGET_MS", values[0]),
            getattr(source, "CANARY_INPUT_MAX_LIST_LENGTH", values[1]),
            getattr(source, "CANARY_INPUT_MAX_STRING_LENGTH", values[2]),
            getattr(source, "CANARY_MAX_INPUT_BYTES", values[3]),
            getattr(source, "CANARY_INPUT_MAX_DEPTH", values[4]),
        )
    limits = _limits_by_values.get(values)
    if limits is None:
        limits = EvalLimits(*(max(1, int(value)) for value in values))
        if len(_limits_by_values) < 64:
            _limits_by_values[values] = limits
    _in_force = limits
    return limits
