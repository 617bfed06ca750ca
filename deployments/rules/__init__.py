"""The rule language: CEL conditions compiled, bounded, costed, redacted, evaluated. No Django.

Everything outside this package uses the names below; which CEL library runs the
conditions is known to ``language`` alone. The modules: ``limits`` (the bounds and the
budget), ``types`` (errors and outcomes), ``inputs`` (an input measured against the
caps), ``bounds``, ``cost`` and ``regex`` (what a condition may do, and its worst-case work),
``budget`` (the check before each rule),
``messages`` (CEL's errors in words), ``redaction`` (input paths never stored) and
``language`` (compile, evaluate, the per-process cache).
"""

from deployments.rules.inputs import check_input_bounds
from deployments.rules.language import (
    CompiledRuleSet,
    PreparedInput,
    compile_rules,
    compiled_for,
    estimate_condition_cost,
    prepare_input,
)
from deployments.rules.limits import EvalLimits, eval_limits, set_limits_source
from deployments.rules.types import Evaluation, InputBoundsError, RuleCompileError, RuleError

__all__ = [
    "CompiledRuleSet",
    "EvalLimits",
    "Evaluation",
    "InputBoundsError",
    "PreparedInput",
    "RuleCompileError",
    "RuleError",
    "check_input_bounds",
    "compile_rules",
    "compiled_for",
    "estimate_condition_cost",
    "eval_limits",
    "prepare_input",
    "set_limits_source",
]
