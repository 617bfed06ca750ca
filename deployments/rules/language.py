"""Canary's rule language: CEL conditions over a JSON ``input`` document.

A rule-set version is a list of ``{name, condition, output}`` rules plus a ``default``
output. The first rule whose condition is true gives the output. Conditions are CEL
(Common Expression Language) expressions evaluated by ``cel-expr-python``, the official
C++ CEL runtime for Python.

This module is the only place that knows which CEL implementation is used: everything
else sees ``compile_rules``, ``compiled_for`` and ``CompiledRuleSet.evaluate``. Swapping
the library means rewriting this file (and its tests), nothing else. It has no Django
imports so it can be tested and benchmarked on its own.

Safety model: the library bounds parsing (nesting, length) and the number of loop
iterations per evaluation, but not memory or the size of values built during
evaluation. We therefore inspect each checked expression (see ``_check_bounded``) and
refuse the constructs that let a short expression build huge values: string/list
concatenation, ``map``/``filter``, many or deeply nested macros, and big literals inside
macros. Time is bounded by a static worst-case cost estimate of each condition over the
inputs the caps allow (``rule_cost``), checked when a version is created, and by the
evaluation budget: a rule starts only if its worst case fits what is left of it. See
docs/rules.md for the measurements behind each limit.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cel_expr_python import cel

from deployments.rules import cost as rule_cost
from deployments.rules.bounds import _check_bounded, _describe_cost, _estimate, _read_checked
from deployments.rules.budget import _Check, _rounded_caps, _stopped_before
from deployments.rules.cost import CostEstimate, InputCaps
from deployments.rules.inputs import _InputShape, _measured
from deployments.rules.limits import (
    _ENV,
    _FATAL,
    _RULE_KEYS,
    CACHE_SIZE,
    MAX_CONDITION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_OUTPUT_CHARS,
    MAX_OUTPUT_DEPTH,
    MAX_RULES,
    EvalLimits,
    eval_limits,
)
from deployments.rules.messages import (
    _describe_compile_failure,
    _describe_exception,
    _describe_non_bool,
    _failure,
    _json_kind,
    _type_name,
)
from deployments.rules.types import Evaluation, InputBoundsError, RuleCompileError, RuleError


@dataclass(frozen=True, slots=True)
class _Output:
    """A JSON value stored so that every caller gets its own copy of lists and objects."""

    scalar: Any
    encoded: str | None  # set for lists/objects, decoded afresh on each evaluation

    def value(self) -> Any:
        if self.encoded is None:
            return self.scalar
        try:
            return orjson.loads(self.encoded)
        except orjson.JSONDecodeError:  # what only the standard library reads (NaN, 2**64)
            return json.loads(self.encoded)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    program: cel.Expression
    typed_bool: bool  # the checker proved the result is a bool (or an error)
    output: _Output
    cost: int = 0  # worst case at the caps in force when compiled (``CompiledRuleSet._caps``)


@dataclass(frozen=True, slots=True)
class _Costs:
    """The rules' worst cases at some caps, in units; ``unchecked``: the time left (s) past
    which a rule starts without a closer look (it fits even _MAX_SLOWDOWN times slower)."""

    units: tuple[int, ...]
    unchecked: tuple[float, ...]
    heaviest: int

    @classmethod
    def of(cls, units: tuple[int, ...]) -> _Costs:
        unchecked = tuple(cost * _MAX_SLOWDOWN / _UNITS_PER_SECOND for cost in units)
        return cls(units, unchecked, max(units, default=0))


# Wall clock of the evaluation budget; tests replace it to simulate slow rules.
_clock = time.perf_counter
# This thread's CPU time: with the wall clock, how much slower than calibrated rules run
# on a busy machine (``_slowdown``).
_cpu_clock = time.thread_time


class CompiledRuleSet:
    """A validated, compiled version; immutable and safe to share between threads.

    Build it with ``compile_rules`` or ``compiled_for``.
    """

    __slots__ = ("_at_caps", "_caps", "_costly", "_costs", "_default", "_rules", "_worst")

    def __init__(
        self, rules: tuple[_Rule, ...], default: _Output, caps: InputCaps | None = None
    ) -> None:
        self._rules = rules
        self._default = default
        self._caps = caps  # the caps ``_Rule.cost`` was computed for
        self._costs = _Costs.of(tuple(rule.cost for rule in rules))
        # Per (caps, cost limit): indices of the rules whose worst case is over the limit.
        # Only stored versions compiled without the cost check (or under looser settings)
        # ever have such rules.
        self._costly: dict[tuple[InputCaps, int], frozenset[int]] = {}
        # Per caps other than ``_caps`` (a setting changed): every rule's worst case.
        self._at_caps: dict[InputCaps, _Costs] = {}
        # (caps in force, position, caps rounded to an input's shape) -> the rule's worst
        # case on inputs of that shape (``_worst_case``), for the check before each rule.
        self._worst: dict[tuple[InputCaps, int, InputCaps], int] = {}

    def is_cheap(self) -> bool:
        """Its worst case (every rule run at the input caps) is at most a tenth of the budget.

        The data plane evaluates a version before it knows the request will be served
        it (``assignments.services``) only when this holds, so a guess that turns out
        wrong costs little.
        """
        limit = eval_limits().rule_cost_limit
        return sum(rule.cost for rule in self._rules) * 10 <= limit

    def worst_case(self) -> int:
        """Its worst case in cost units: every rule run at the input caps (the budget is
        ``rule_cost_limit`` units). Two versions whose worst cases add up to at most the
        budget may both be evaluated for one request without exceeding it."""
        return sum(rule.cost for rule in self._rules)

    def evaluate(
        self,
        input: Any,
        *,
        budget_ms: float | None = None,
        prepared: PreparedInput | Evaluation | None = None,
    ) -> Evaluation:
        """First matching rule's output, else the default; failures become error outcomes.

        Never raises (except KeyboardInterrupt/SystemExit): a missing key, a type error,
        a non-bool result or an exhausted budget is reported with the rule's name; an input
        outside the caps (``check_input_bounds``) without one.

        Bounded: the input is checked against the caps first; a rule whose worst case on
        this input could exceed the budget is not run (only possible for versions stored
        before the cost check); a rule is started only if its worst case on this input fits
        what is left of ``CANARY_EVAL_BUDGET_MS``, else the evaluation stops before it
        (``exhausted``, an error naming it); and once the budget has passed the evaluation
        stops, at the end of the rule that was running, with an error naming it. So an
        evaluation ends within the budget as long as the cost estimate bounds the rules'
        time (docs/rules.md "The runtime budget"). ``budget_ms`` narrows the wall-clock
        budget (a shadow evaluation gets what the served one left). ``prepared``: this
        input already prepared (``prepare_input``), when several versions judge it: they
        share the measurement and the activation, whose values CEL converts once.
        """
        started = _clock()
        if prepared is None:
            prepared = prepare_input(input)
        if isinstance(prepared, Evaluation):
            return prepared
        return self._evaluate(prepared, started, budget_ms)

    def evaluate_prepared(self, prepared: PreparedInput | Evaluation) -> Evaluation:
        """``evaluate`` on an input already measured and converted (``prepare_input``).

        Several versions judged on one input (a backtest) share that work: the
        measurement and the activation, whose values CEL converts once, on first use.
        The outcome is the one ``evaluate`` gives; the budget counts from this call.
        """
        if isinstance(prepared, Evaluation):
            return prepared
        return self._evaluate(prepared, _clock(), None)

    def _evaluate(
        self, prepared: PreparedInput, started: float, budget_ms: float | None
    ) -> Evaluation:
        limits, shape, activation = prepared.limits, prepared.shape, prepared.activation
        deadline = started + (limits.budget_ms if budget_ms is None else budget_ms) / 1000
        caps = limits.caps
        costs = self._costs if caps == self._caps else self._costs_at(caps)
        # Contention matters only for a rule that could take a good part of the budget.
        heavy = costs.heaviest * _MAX_SLOWDOWN * 2 > limits.rule_cost_limit
        cpu_started = _cpu_clock() if heavy else None
        evaluation = self._run_rules(
            activation, shape, limits, costs, started, cpu_started, deadline
        )
        if cpu_started is not None:
            _slowdown(started, cpu_started, _clock(), remember=True)
        return evaluation

    def _run_rules(
        self,
        activation: Any,
        shape: _InputShape,
        limits: EvalLimits,
        costs: _Costs,
        started: float,
        cpu_started: float | None,
        deadline: float,
    ) -> Evaluation:
        costly = self._costly_rules(limits)
        check: _Check | None = None  # the check before a rule, once a rule needs it
        now = _clock() if self._rules else started
        for position, rule in enumerate(self._rules):
            if costly and position in costly:
                refusal = self._refuse_costly(position, rule, shape, limits)
                if refusal is not None:
                    return _failure(rule.name, refusal)
            # Start a rule only if its worst case fits what is left of the budget: at once
            # when it does even on a machine _MAX_SLOWDOWN times slower, else ``_fits``.
            if costs.unchecked[position] > deadline - now:
                check = check or _Check(shape, limits, started, cpu_started, deadline)
                stopped, now = self._fits(position, rule, costs.units[position], check, now)
                if stopped is not None:
                    return stopped
            outcome = _run(rule, activation)
            if isinstance(outcome, str):
                return _failure(rule.name, outcome)
            now = _clock()
            if now > deadline:
                count = f"rule {position + 1} of {len(self._rules)}"
                message = f"evaluation exceeded the {limits.budget_ms} ms budget"
                error = RuleError(rule.name, f"{message} (stopped after {count})")
                return Evaluation(False, None, None, error, exhausted=True)
            if outcome:
                return Evaluation(True, rule.output.value(), rule.name, None)
        return Evaluation(True, self._default.value(), None, None)

    def _fits(
        self, position: int, rule: _Rule, worst: int, check: _Check, now: float
    ) -> tuple[Evaluation | None, float]:
        """Whether to start a rule that might not fit what is left of the budget: None and
        the clock's time to run it, else the outcome that stops the evaluation before it.

        What is left is divided by how much slower than calibrated rules run now. The
        rule's worst case at the caps decides if it fits; else its worst case on inputs of
        this one's shape, remembered per shape (estimated here the first time, at most
        once per evaluation: an estimate takes up to a few milliseconds).
        """
        caps = check.limits.caps
        slowdown = _slowdown(check.started, check.cpu_started, now)
        left = (check.deadline - now) * _UNITS_PER_SECOND / slowdown
        if worst > left:
            check.rounded = check.rounded or _rounded_caps(check.shape, caps)
            known = self._worst.get((caps, position, check.rounded))
            if known is None and check.estimates > 0 and left > 0:
                check.estimates -= 1
                known = self._worst_case(position, rule, caps, check.rounded)
                now = _clock()
                left = (check.deadline - now) * _UNITS_PER_SECOND / slowdown
            worst = worst if known is None else min(worst, known)
        if worst <= left:
            return None, now
        stopped = _stopped_before(
            position,
            len(self._rules),
            rule.name,
            worst,
            slowdown,
            check.deadline - now,
            check.limits,
        )
        return stopped, now

    def _cost_at_caps(self, position: int, rule: _Rule, caps: InputCaps) -> int:
        """The rule's worst case over inputs within ``caps`` (the caps in force)."""
        return rule.cost if caps == self._caps else self._costs_at(caps).units[position]

    def _costs_at(self, caps: InputCaps) -> _Costs:
        """Every rule's worst case at caps other than those it was compiled for."""
        costs = self._at_caps.get(caps)
        if costs is None:  # estimated again for all rules at once, when a setting changed
            costs = _Costs.of(tuple(self._cost(rule, caps) for rule in self._rules))
            if len(self._at_caps) < 16:
                self._at_caps[caps] = costs
        return costs

    def _worst_case(self, position: int, rule: _Rule, caps: InputCaps, rounded: InputCaps) -> int:
        """The rule's worst case over inputs within ``rounded`` (at most ``caps``)."""
        key = (caps, position, rounded)
        cost = self._worst.get(key)
        if cost is None:
            cost = self._cost(rule, rounded)
            if len(self._worst) < _WORST_CASES_KEPT:
                self._worst[key] = cost
        return cost

    def _costly_rules(self, limits: EvalLimits) -> frozenset[int]:
        key = (limits.caps, limits.rule_cost_limit)
        costly = self._costly.get(key)
        if costly is None:
            costly = frozenset(
                position
                for position, rule in enumerate(self._rules)
                if self._cost_at_caps(position, rule, limits.caps) > limits.rule_cost_limit
            )
            self._costly[key] = costly
        return costly

    def _cost(self, rule: _Rule, caps: InputCaps) -> int:
        if caps == self._caps:
            return rule.cost
        checked = _read_checked(rule.program)  # not kept: re-read in this rare case
        return rule.cost if checked is None else _estimate(checked, caps).total

    def _refuse_costly(
        self, position: int, rule: _Rule, shape: _InputShape, limits: EvalLimits
    ) -> str | None:
        """Why a rule over the cost limit must not run on this input (None: it may)."""
        caps = limits.caps
        cost = self._worst_case(position, rule, caps, _rounded_caps(shape, caps))
        if cost <= limits.rule_cost_limit:
            return None
        return (
            f"not evaluated: on this input its worst case ({cost:,} cost units) could exceed "
            f"the {limits.budget_ms} ms evaluation budget (limit {limits.rule_cost_limit:,} "
            "units); the version was saved before this limit or under larger input caps"
        )


@dataclass(frozen=True, slots=True)
class PreparedInput:
    """An input measured against the caps in force and converted for CEL, ready for any
    number of versions (``CompiledRuleSet.evaluate_prepared``)."""

    limits: EvalLimits
    shape: _InputShape
    activation: Any


def prepare_input(input: Any) -> PreparedInput | Evaluation:
    """The input measured and its activation built, or the error outcome every version
    would answer for it (not an object, outside the caps, not convertible)."""
    if not isinstance(input, dict):
        if not isinstance(input, Mapping):
            return _failure(None, f"input must be a JSON object, got {_json_kind(input)}")
        input = dict(input)  # the library converts plain dicts only
    limits = eval_limits()
    try:
        shape = _measured(input, limits)
    except InputBoundsError as exc:
        return _failure(None, str(exc))
    try:
        activation = _ENV.Activation({"input": input})
    except BaseException as exc:
        if isinstance(exc, _FATAL):
            raise
        return _failure(None, f"input cannot be used: {_describe_exception(exc)}")
    return PreparedInput(limits, shape, activation)


def _run(rule: _Rule, activation: Any) -> bool | str:
    """True or False when the condition decides, else the error message."""
    try:
        result = rule.program.eval(activation)
        if rule.typed_bool:
            outcome = result.value()
            if outcome is True or outcome is False:
                return outcome
        elif result.type() == cel.Type.BOOL:
            return bool(result.value())
        return _describe_non_bool(result)
    except BaseException as exc:
        if isinstance(exc, _FATAL):
            raise
        return _describe_exception(exc)


# --- the runtime budget -----------------------------------------------------------------
_UNITS_PER_SECOND = 1e9 / rule_cost.NANOSECONDS_PER_UNIT
_WORST_CASES_KEPT = 16_384  # per compiled version


# How much slower than calibrated rules may run on a busy machine: the wall-clock time of
# the evaluation so far over its CPU time (at least 1, at most _MAX_SLOWDOWN), measured
# once at least _SLOWDOWN_WINDOW has passed; before that, the last one measured in this
# process if recent. Shared by threads without a lock: a lost update only makes one
# evaluation use an older measurement.
_MAX_SLOWDOWN = 3.0
_SLOWDOWN_WINDOW = 0.002  # seconds
_SLOWDOWN_KEPT = 1.0  # seconds a measurement stands for the evaluations that follow
_recent_slowdown: tuple[float, float] = (1.0, -math.inf)  # (slowdown, when measured)


def _slowdown(
    started: float, cpu_started: float | None, now: float, *, remember: bool = False
) -> float:
    global _recent_slowdown
    if cpu_started is not None and now - started >= _SLOWDOWN_WINDOW:
        cpu = _cpu_clock() - cpu_started
        ratio = (now - started) / cpu if cpu > 0 else _MAX_SLOWDOWN
        slowdown = min(_MAX_SLOWDOWN, max(1.0, ratio))
        _recent_slowdown = (slowdown, now)
        return slowdown
    if remember:
        return 1.0
    slowdown, measured = _recent_slowdown
    return slowdown if 0 <= now - measured <= _SLOWDOWN_KEPT else 1.0


# --- compiling ----------------------------------------------------------------------------
def compile_rules(rules: Any, default: Any, *, check_cost: bool = True) -> CompiledRuleSet:
    """Validate the structure and compile every condition; raise ``RuleCompileError``.

    ``rules`` is a list of dicts with exactly the keys ``name`` (non-empty, unique, at most
    ``MAX_NAME_LENGTH`` characters), ``condition`` (CEL source, at most
    ``MAX_CONDITION_LENGTH`` characters) and ``output`` (any JSON value). The first
    problem found is raised, in rule order.

    With ``check_cost`` (the default, used when a version is created) a condition whose
    worst-case cost over inputs within the caps exceeds ``EvalLimits.rule_cost_limit`` is
    refused. ``compiled_for`` (serving stored versions) passes False: a version stored
    before the limit, or under looser settings, still compiles, and ``evaluate`` refuses
    to run such a rule on an input where it could exceed the budget.
    """
    if not isinstance(rules, list):
        raise RuleCompileError(f"must be a list of rules, got {_json_kind(rules)}", field="rules")
    if len(rules) > MAX_RULES:
        raise RuleCompileError(
            f"at most {MAX_RULES} rules per version, got {len(rules)}", field="rules"
        )
    compiled: list[_Rule] = []
    seen: set[str] = set()
    limits = eval_limits()
    for index, rule in enumerate(rules):
        name = _validate_rule_shape(index, rule, seen)
        seen.add(name)
        output = _encode_output(rule["output"], field="output", index=index, name=name)
        program, typed_bool, cost = _compile_condition(
            index, name, rule["condition"], limits, check_cost=check_cost
        )
        compiled.append(_Rule(name, program, typed_bool, output, cost))
    default_output = _encode_output(default, field="default", index=None, name=None)
    return CompiledRuleSet(tuple(compiled), default_output, limits.caps)


def _validate_rule_shape(index: int, rule: Any, seen: set[str]) -> str:
    """Check keys, name and condition type/length; return the rule's name."""
    if not isinstance(rule, dict):
        expected = "an object with keys name, condition and output"
        raise RuleCompileError(
            f"must be {expected}, got {_json_kind(rule)}", field="rules", rule_index=index
        )
    raw_name = rule.get("name")
    name = raw_name if isinstance(raw_name, str) else None
    unknown = sorted(str(key) for key in rule if key not in _RULE_KEYS)
    if unknown:
        raise RuleCompileError(
            f"unknown keys {', '.join(map(repr, unknown))}; a rule has exactly name, "
            "condition and output",
            field="rules",
            rule_index=index,
            rule_name=name,
        )
    for key in _RULE_KEYS:
        if key not in rule:
            raise RuleCompileError(
                "this field is required", field=key, rule_index=index, rule_name=name
            )

    def bad(key: str, message: str) -> RuleCompileError:
        return RuleCompileError(message, field=key, rule_index=index, rule_name=name)

    if name is None:
        raise bad("name", f"must be a string, got {_json_kind(raw_name)}")
    if not name.strip():
        raise bad("name", "must not be blank")
    if len(name) > MAX_NAME_LENGTH:
        raise bad("name", f"at most {MAX_NAME_LENGTH} characters, got {len(name)}")
    if name in seen:
        raise bad("name", f"duplicate rule name {name!r}; names must be unique")
    condition = rule["condition"]
    if not isinstance(condition, str):
        raise bad("condition", f"must be a string, got {_json_kind(condition)}")
    if not condition.strip():
        raise bad("condition", "must not be blank")
    if len(condition) > MAX_CONDITION_LENGTH:
        raise bad("condition", f"at most {MAX_CONDITION_LENGTH} characters, got {len(condition)}")
    return name


def _compile_condition(
    index: int, name: str, source: str, limits: EvalLimits, *, check_cost: bool
) -> tuple[cel.Expression, bool, int]:
    """Compile, check the result type, the shape and the cost; build the program eagerly."""

    def bad(message: str, position: str | None = None) -> RuleCompileError:
        return RuleCompileError(
            message, field="condition", rule_index=index, rule_name=name, position=position
        )

    try:
        program = _ENV.compile(source)
    except BaseException as exc:
        if isinstance(exc, _FATAL):
            raise
        message, position = _describe_compile_failure(str(exc))
        raise bad(message, position) from None

    return_type = program.return_type()
    if return_type not in (cel.Type.BOOL, cel.Type.DYN):
        raise bad(f"must be a boolean expression, but its type is {_type_name(return_type)}")

    checked = _read_checked(program)
    violation = _check_bounded(program, source, checked=checked)
    if violation is not None:
        message, position = violation
        where = f" at {position}" if position else ""
        raise bad(f"not allowed{where}: {message}", position)
    cost = _estimate(checked, limits.caps) if checked is not None else None
    if check_cost and cost is not None and cost.total > limits.rule_cost_limit:
        message, position = _describe_cost(cost, limits, checked, source)
        raise bad(message, position)

    # The library plans the program lazily on first evaluation; do it now, on an empty
    # input, so planning errors and expressions that exhaust the budget whatever the
    # input (e.g. loops over big literals) are refused here, not on live traffic.
    try:
        program.eval(_ENV.Activation({"input": {}}))
    except BaseException as exc:
        if isinstance(exc, _FATAL):
            raise
        raise bad(f"cannot be evaluated within the limits: {_describe_exception(exc)}") from None
    return program, return_type == cel.Type.BOOL, 0 if cost is None else cost.total


def _encode_output(value: Any, *, field: str, index: int | None, name: str | None) -> _Output:
    problem = _json_problem(value)
    if problem is None:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if len(encoded) > MAX_OUTPUT_CHARS:
            problem = f"at most {MAX_OUTPUT_CHARS} characters as JSON, got {len(encoded)}"
    if problem is not None:
        raise RuleCompileError(problem, field=field, rule_index=index, rule_name=name)
    if isinstance(value, dict | list):
        return _Output(None, encoded)
    return _Output(value, None)


def _json_problem(value: Any) -> str | None:
    """Why ``value`` is not plain JSON (None when it is): outputs go back to API clients."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, bool | int | str):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"must be a JSON value; {item!r} is not a finite number"
            continue
        if depth >= MAX_OUTPUT_DEPTH:
            return f"nested more than {MAX_OUTPUT_DEPTH} levels deep"
        if isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"must be a JSON value; object key {key!r} is not a string"
                stack.append((child, depth + 1))
        else:
            return f"must be a JSON value, found {type(item).__name__}"
    return None


# --- cost -------------------------------------------------------------------------------
def estimate_condition_cost(condition: str, limits: EvalLimits | None = None) -> CostEstimate:
    """The worst-case cost of one condition under ``limits`` (default: those in force).

    For documentation, tests and benchmarks; raises ``RuleCompileError`` like
    ``compile_rules`` for a condition that does not compile or is not allowed.
    """
    limits = limits or eval_limits()
    compiled = compile_rules(
        [{"name": "r", "condition": condition, "output": None}], None, check_cost=False
    )
    checked = _read_checked(compiled._rules[0].program)
    if checked is None:  # pragma: no cover - refused by _check_bounded
        raise RuleCompileError("cannot be inspected", field="condition", rule_index=0)
    return _estimate(checked, limits.caps)


# --- per-process cache --------------------------------------------------------------------
_cache: OrderedDict[Hashable, CompiledRuleSet] = OrderedDict()
_cache_lock = threading.Lock()
_compiling: dict[Hashable, threading.Lock] = {}


def compiled_for(key: Hashable, rules: Any, default: Any) -> CompiledRuleSet:
    """The compiled rule set for an immutable version ``key``, compiled once per process.

    Bounded LRU (``CACHE_SIZE`` entries), thread-safe. Concurrent first requests for the
    same key wait for one compilation instead of each compiling. ``key`` must identify
    immutable content (a version's primary key): ``rules`` is ignored on a cache hit.
    Compile errors are raised, not cached.
    """
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
        key_lock = _compiling.setdefault(key, threading.Lock())
    with key_lock:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit
        try:
            compiled = compile_rules(rules, default, check_cost=False)
        except BaseException:
            with _cache_lock:
                _compiling.pop(key, None)
            raise
        with _cache_lock:
            _cache[key] = compiled
            _cache.move_to_end(key)
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
            _compiling.pop(key, None)
    return compiled
