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
inputs the caps allow (``rule_cost``), checked when a version is created. See
docs/rules.md for the measurements behind each limit.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from cel.expr import checked_pb2, syntax_pb2
from cel_expr_python import cel
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from deployments import rule_cost
from deployments.rule_cost import CostEstimate, InputCaps

try:  # optional: outside Django (benchmarks, scripts) the defaults below apply
    from django.conf import settings as _django_settings
except ImportError:  # pragma: no cover - Django is a dependency of the project
    _django_settings = None

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

    @property
    def caps(self) -> InputCaps:
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


def eval_limits() -> EvalLimits:
    """The limits in force: Django settings when configured, else the defaults."""
    values = (
        DEFAULT_EVAL_BUDGET_MS,
        DEFAULT_INPUT_MAX_LIST_LENGTH,
        DEFAULT_INPUT_MAX_STRING_LENGTH,
        DEFAULT_INPUT_MAX_SIZE,
        DEFAULT_INPUT_MAX_DEPTH,
    )
    if _django_settings is not None and _django_settings.configured:
        values = (
            getattr(_django_settings, "CANARY_EVAL_BUDGET_MS", values[0]),
            getattr(_django_settings, "CANARY_INPUT_MAX_LIST_LENGTH", values[1]),
            getattr(_django_settings, "CANARY_INPUT_MAX_STRING_LENGTH", values[2]),
            getattr(_django_settings, "CANARY_MAX_INPUT_BYTES", values[3]),
            getattr(_django_settings, "CANARY_INPUT_MAX_DEPTH", values[4]),
        )
    limits = _limits_by_values.get(values)
    if limits is None:
        limits = EvalLimits(*(max(1, int(value)) for value in values))
        if len(_limits_by_values) < 64:
            _limits_by_values[values] = limits
    return limits


# --- public types -------------------------------------------------------------------------
class RuleCompileError(ValueError):
    """A version cannot be compiled; says which rule, which field and where.

    ``message`` is the bare reason (``syntax error at 1:14: ...``); ``str(e)`` prefixes it
    with the rule so a log line or API ``detail`` stands on its own.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str,
        rule_index: int | None = None,
        rule_name: str | None = None,
        position: str | None = None,
    ) -> None:
        self.message = message
        self.field = field
        self.rule_index = rule_index
        self.rule_name = rule_name
        self.position = position
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        if self.rule_index is None:
            return f"{self.field}: {self.message}"
        rule = f"rule #{self.rule_index}"
        if self.rule_name is not None:
            rule = f"rule {self.rule_name!r} (#{self.rule_index})"
        if self.field == "rules":
            return f"{rule}: {self.message}"
        return f"{rule} {self.field}: {self.message}"

    def as_field_errors(self) -> dict[str, Any]:
        """DRF-style nested errors, e.g. ``{"rules": {"0": {"condition": ["..."]}}}``.

        A problem with a rule as a whole (not a dict, unknown keys) goes under
        ``non_field_errors`` of that rule.
        """
        if self.rule_index is None:
            return {self.field: [self.message]}
        key = "non_field_errors" if self.field == "rules" else self.field
        return {"rules": {str(self.rule_index): {key: [self.message]}}}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild explicitly so the error survives pickling.
        return (_rebuild_compile_error, (self.message, self.__dict__.copy()))


def _rebuild_compile_error(message: str, state: dict[str, Any]) -> RuleCompileError:
    kwargs = {k: state[k] for k in ("field", "rule_index", "rule_name", "position")}
    return RuleCompileError(message, **kwargs)


class InputBoundsError(ValueError):
    """An input outside the caps: too long a list, string or key, too deep, too large.

    ``str(e)`` names the offending part from ``input`` (``input.items has 1,500 elements;
    at most 1,000 are allowed in one list``), ready for a 400 under the ``input`` field.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args)


@dataclass(frozen=True)
class RuleError:
    """Why an evaluation failed; ``rule`` is None when no rule was at fault (bad input)."""

    rule: str | None
    message: str


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one input: an output (possibly the default) or an error, never both."""

    success: bool
    output: Any
    matched_rule: str | None
    error: RuleError | None
    # Stopped by the wall-clock budget: says nothing about the version's rules.
    exhausted: bool = False


@dataclass(frozen=True, slots=True)
class _Output:
    """A JSON value stored so that every caller gets its own copy of lists and objects."""

    scalar: Any
    encoded: str | None  # set for lists/objects, decoded afresh on each evaluation

    def value(self) -> Any:
        return self.scalar if self.encoded is None else json.loads(self.encoded)


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    program: cel.Expression
    typed_bool: bool  # the checker proved the result is a bool (or an error)
    output: _Output
    cost: int = 0  # worst case at the caps in force when compiled (``CompiledRuleSet._caps``)


# Wall clock of the evaluation budget; tests replace it to simulate slow rules.
_clock = time.perf_counter


class CompiledRuleSet:
    """A validated, compiled version; immutable and safe to share between threads.

    Build it with ``compile_rules`` or ``compiled_for``.
    """

    __slots__ = ("_caps", "_costly", "_default", "_rules")

    def __init__(
        self, rules: tuple[_Rule, ...], default: _Output, caps: InputCaps | None = None
    ) -> None:
        self._rules = rules
        self._default = default
        self._caps = caps  # the caps ``_Rule.cost`` was computed for
        # Per (caps, cost limit): indices of the rules whose worst case is over the limit,
        # and their cost for rounded-up input shapes. Only stored versions compiled without
        # the cost check (or under looser settings) ever have such rules.
        self._costly: dict[tuple[Any, ...], Any] = {}

    def is_cheap(self) -> bool:
        """Its worst case (every rule run at the input caps) is at most a tenth of the budget.

        The data plane evaluates a version before it knows the request will be served
        it (``assignments.services``) only when this holds, so a guess that turns out
        wrong costs little.
        """
        limit = eval_limits().rule_cost_limit
        return sum(rule.cost for rule in self._rules) * 10 <= limit

    def evaluate(self, input: Mapping[str, Any], *, budget_ms: float | None = None) -> Evaluation:
        """First matching rule's output, else the default; failures become error outcomes.

        Never raises (except KeyboardInterrupt/SystemExit): a missing key, a type error,
        a non-bool result or an exhausted budget is reported with the rule's name; an input
        outside the caps (``check_input_bounds``) without one.

        Bounded: the input is checked against the caps first; a rule whose worst case on
        this input could exceed the budget is not run (only possible for versions stored
        before the cost check); and once ``CANARY_EVAL_BUDGET_MS`` of wall-clock time has
        passed the evaluation stops, at the end of the rule that was running, with an
        error naming it. The cost check bounds any one rule by the budget, so an
        evaluation never takes much more than twice the budget. ``budget_ms`` narrows
        the wall-clock budget (a shadow evaluation gets what the served one left).
        """
        started = _clock()
        if not isinstance(input, dict):
            if not isinstance(input, Mapping):
                kind = _json_kind(input)
                return _failure(None, f"input must be a JSON object, got {kind}")
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
        deadline = started + (limits.budget_ms if budget_ms is None else budget_ms) / 1000
        costly = self._costly_rules(limits)
        for position, rule in enumerate(self._rules):
            if costly and position in costly:
                refusal = self._refuse_costly(position, rule, shape, limits)
                if refusal is not None:
                    return _failure(rule.name, refusal)
            outcome = _run(rule, activation)
            if isinstance(outcome, str):
                return _failure(rule.name, outcome)
            if _clock() > deadline:
                count = f"rule {position + 1} of {len(self._rules)}"
                message = f"evaluation exceeded the {limits.budget_ms} ms budget"
                error = RuleError(rule.name, f"{message} (stopped after {count})")
                return Evaluation(False, None, None, error, exhausted=True)
            if outcome:
                return Evaluation(True, rule.output.value(), rule.name, None)
        return Evaluation(True, self._default.value(), None, None)

    def _costly_rules(self, limits: EvalLimits) -> frozenset[int]:
        key = (limits.caps, limits.rule_cost_limit)
        costly = self._costly.get(key)
        if costly is None:
            costly = frozenset(
                position
                for position, rule in enumerate(self._rules)
                if self._cost(rule, limits.caps) > limits.rule_cost_limit
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
        # Round the shape up (a valid bound: the cost only grows with it) to share estimates.
        rounded = InputCaps(
            max_elements=min(_next_power_of_two(shape.widest), caps.max_elements),
            max_size=min(_next_power_of_two(shape.size), caps.max_size),
            max_string=min(_next_power_of_two(shape.longest), caps.max_string),
        )
        key = (caps, limits.rule_cost_limit, position, rounded)
        cost = self._costly.get(key)
        if cost is None:
            cost = self._cost(rule, rounded)
            if len(self._costly) < 1024:
                self._costly[key] = cost
        if cost <= limits.rule_cost_limit:
            return None
        return (
            f"not evaluated: on this input its worst case ({cost:,} cost units) could exceed "
            f"the {limits.budget_ms} ms evaluation budget (limit {limits.rule_cost_limit:,} "
            "units); the version was saved before this limit or under larger input caps"
        )


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


def _next_power_of_two(value: int) -> int:
    return 1 if value <= 1 else 1 << (value - 1).bit_length()


# --- input bounds -------------------------------------------------------------------------
def check_input_bounds(input: Any) -> None:
    """Raise ``InputBoundsError`` unless ``input`` is a JSON object within the caps.

    The caps (``eval_limits()``): at most ``max_list_length`` elements in any list and keys
    in any object, ``max_string_length`` characters in any string or key, ``max_depth``
    levels of nesting (the input itself is level 1), and ``max_input_size`` in all, counting
    1 per value plus the characters of every string and key (never more than the JSON
    text's length); every integer within CEL's signed 64 bits (``INT_MIN``..``INT_MAX``).
    The API calls this before evaluating (a 400 naming ``input``);
    ``CompiledRuleSet.evaluate`` checks the same and answers an error outcome.
    """
    if not isinstance(input, Mapping):
        raise InputBoundsError(f"input must be a JSON object, got {_json_kind(input)}")
    _measured(input, eval_limits())


# The last input measured on this thread. An execute checks its input, evaluates the
# served version and, shadowed, the other one: the same document, measured once.
# Inputs are never changed once received, so the object's identity is its content.
_last_measured = threading.local()


def _measured(document: Mapping[str, Any], limits: EvalLimits) -> _InputShape:
    memo = getattr(_last_measured, "memo", None)
    if memo is not None and memo[0] is document and memo[1] == limits:
        return memo[2]
    shape = _measure_input(document, limits)
    _last_measured.memo = (document, limits, shape)
    return shape


@dataclass(frozen=True, slots=True)
class _InputShape:
    widest: int  # most elements/keys in one list/object
    longest: int  # most characters in one string or key
    size: int  # values plus characters


def _measure_input(document: Mapping[str, Any], limits: EvalLimits) -> _InputShape:
    """Walk ``document`` once; raise ``InputBoundsError`` at the first cap exceeded.

    Written for speed (it runs on every evaluation): exact type checks first, the ABCs
    only for unusual values.
    """
    max_elements = limits.max_list_length
    max_string = limits.max_string_length
    max_depth = limits.max_depth
    max_size = limits.max_input_size
    widest = longest = size = 0
    # (container, depth, path) where path is (parent path, key) or None for the input.
    stack: list[tuple[Any, int, Any]] = [(document, 1, None)]
    while stack:
        container, depth, path = stack.pop()
        is_object = type(container) is dict or isinstance(container, Mapping)
        count = len(container)
        if count > max_elements:
            what, where = ("keys", "object") if is_object else ("elements", "list")
            raise InputBoundsError(
                f"{_input_path(path)} has {count:,} {what}; at most {max_elements:,} are "
                f"allowed in one {where}"
            )
        if count > widest:
            widest = count
        size += 1
        if is_object:
            try:
                key_chars = sum(map(len, container))  # keys are strings in JSON
                key_longest = max(map(len, container), default=0)
            except TypeError:  # other keys: the library refuses them when converting
                key_chars, key_longest = count, 1
            if key_longest > max_string:
                key = next(k for k in container if type(k) is str and len(k) > max_string)
                raise InputBoundsError(
                    f"{_input_path(path)} has a key of {len(key):,} characters; at most "
                    f"{max_string:,} are allowed"
                )
            longest = max(longest, key_longest)
            size += key_chars + count
            values = container.values()
        else:
            values = container
        size += count
        kinds = set(map(type, values))  # at C speed: most containers hold one kind
        if kinds <= _NUMBERS:
            if int in kinds and not _ints_in_range(values, kinds):
                raise _wide_integer(container, path, is_object)
            if size > max_size:
                raise _too_large(max_size)
            continue
        if kinds == _STRING:
            lengths = list(map(len, values))
            size += sum(lengths)
            if max(lengths) > longest:
                longest = max(lengths)
                if longest > max_string:
                    raise _long_string(container, path, is_object, max_string)
            if size > max_size:
                raise _too_large(max_size)
            continue
        nested = wide = False
        for child in values:
            kind = type(child)
            if kind is str:
                length = len(child)
                size += length
                if length > longest:
                    longest = length
            elif kind is dict or kind is list:
                nested = True
            elif kind is int:
                if child > INT_MAX or child < INT_MIN:
                    wide = True
            elif kind is float or kind is bool or child is None:
                pass
            elif isinstance(child, str | bytes):
                length = len(child)
                size += length
                longest = max(longest, length)
            elif isinstance(child, Mapping | list | tuple):
                nested = True
        if longest > max_string:
            raise _long_string(container, path, is_object, max_string)
        if wide:
            raise _wide_integer(container, path, is_object)
        if nested:
            children = container.items() if is_object else enumerate(container)
            for key, child in children:
                kind = type(child)
                if (
                    kind is dict
                    or kind is list
                    or (kind not in _SCALARS and isinstance(child, Mapping | list | tuple))
                ):
                    if depth >= max_depth:
                        raise _too_deep(path, key, max_depth)
                    stack.append((child, depth + 1, (path, key)))
        if size > max_size:
            raise _too_large(max_size)
    return _InputShape(widest, longest, size)


# CEL's int is a signed 64-bit integer: a JSON integer outside it cannot be evaluated
# exactly (nor stored: orjson encodes 64 bits), so it is refused like any other cap.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1


def _ints_in_range(values: Any, kinds: set[type]) -> bool:
    if len(kinds) == 1:
        return min(values) >= INT_MIN and max(values) <= INT_MAX
    return all(INT_MIN <= value <= INT_MAX for value in values if type(value) is int)


def _wide_integer(container: Any, path: Any, is_object: bool) -> InputBoundsError:
    """The error for the first integer of ``container`` outside CEL's 64 bits."""
    children = container.items() if is_object else enumerate(container)
    key, number = next(
        (key, child)
        for key, child in children
        if type(child) is int and not INT_MIN <= child <= INT_MAX
    )
    shown = str(number)
    if len(shown) > 40:  # Python parses up to 4,300 digits; the message stays short
        shown = f"{shown[:20]}... ({len(shown.lstrip('-'))} digits)"
    return InputBoundsError(
        f"{_input_path((path, key))}: integer {shown} is outside the 64-bit range "
        "CEL evaluates exactly"
    )


def _too_large(limit: int) -> InputBoundsError:
    return InputBoundsError(
        f"input is larger than {limit:,} (values plus characters of strings and keys)"
    )


def _long_string(container: Any, path: Any, is_object: bool, limit: int) -> InputBoundsError:
    """The error for the first string of ``container`` longer than ``limit``."""
    children = container.items() if is_object else enumerate(container)
    for key, child in children:
        if isinstance(child, str | bytes) and len(child) > limit:
            return InputBoundsError(
                f"{_input_path((path, key))} has {len(child):,} characters; at most "
                f"{limit:,} are allowed in one string"
            )
    return InputBoundsError(f"{_input_path(path)} has a string over {limit:,} characters")


def _too_deep(path: Any, key: Any, limit: int) -> InputBoundsError:
    return InputBoundsError(f"{_input_path((path, key))} is nested more than {limit} levels deep")


_SCALARS = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float, bool, type(None)})
_STRING = frozenset({str})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _input_path(path: Any) -> str:
    """``input.items[3].name`` (or ``input["first-name"]``) from nested (parent, key) pairs."""
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    text = "input"
    for key in reversed(keys):
        if isinstance(key, int):
            text += f"[{key}]"
        elif isinstance(key, str) and _IDENTIFIER.fullmatch(key):
            text += f".{key}"
        else:
            text += f"[{json.dumps(key) if isinstance(key, str) else repr(key)}]"
    return text


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


# --- bounding: static checks on the checked expression ------------------------------------
# cel-expr-python exposes the checked AST only as a serialized cel.expr.CheckedExpr
# protobuf (wrapped in google.protobuf.Any); it is read with the generated cel.expr
# classes that xds-protos ships.
_NUMERIC_ADD = frozenset(
    {
        "add_int64",
        "add_uint64",
        "add_double",
        "add_timestamp_duration",
        "add_duration_timestamp",
        "add_duration_duration",
    }
)


class _Unbounded(Exception):
    def __init__(self, message: str, expr: syntax_pb2.Expr) -> None:
        super().__init__(message)
        self.expr = expr


def _read_checked(program: cel.Expression) -> checked_pb2.CheckedExpr | None:
    """The checked AST of a compiled program, or None if it cannot be read."""
    checked = checked_pb2.CheckedExpr()
    try:
        unpacked = any_pb2.Any.FromString(program.serialize()).Unpack(checked)
    except DecodeError:
        unpacked = False
    if not unpacked or not checked.HasField("expr"):
        return None
    return checked


def _check_bounded(
    program: cel.Expression, source: str, *, checked: checked_pb2.CheckedExpr | None = None
) -> tuple[str, str | None] | None:
    """Return (why, "line:col") if the condition could build huge values, else None.

    Each rule closes a blow-up measured on cel-expr-python 0.1.3 (see docs/rules.md):
    - ``+`` must add numbers or time: string/list concatenation inside macros doubles a
      value per step (``std::bad_alloc`` from a 400-character condition);
    - no ``map``/``filter``: the library copies their result list on every iteration,
      so memory grows with the square of the list (1 GB for 8,000 input items);
    - at most MAX_MACROS macros, nested at most MAX_MACRO_NESTING deep;
    - at most MAX_LITERAL_ELEMENTS_IN_MACRO literal elements inside macro bodies: each
      iteration builds them again and nothing is freed before the evaluation ends;
    - time zones (``getHours("Europe/Paris")``) must be literals: the runtime caches every
      zone name it is asked for, valid or not, for the life of the process (about 100
      bytes each: a list of invented names per request grows memory without end).
    """
    if checked is None:
        checked = _read_checked(program)
    if checked is None:
        return "the compiled expression could not be inspected (library changed?)", None
    checker = _BoundChecker(checked.reference_map)
    try:
        checker.visit(checked.expr, nesting=0, in_macro=False)
    except _Unbounded as exc:
        offset = checked.source_info.positions.get(exc.expr.id)
        return str(exc), None if offset is None else _line_col(source, offset)
    return None


class _BoundChecker:
    def __init__(self, references: Mapping[int, checked_pb2.Reference]) -> None:
        self.references = references
        self.macros = 0
        self.literal_elements = 0

    def visit(self, expr: syntax_pb2.Expr, *, nesting: int, in_macro: bool) -> None:
        kind = expr.WhichOneof("expr_kind")
        if kind == "comprehension_expr":
            self._visit_loop(expr, nesting=nesting)
            return
        if kind == "call_expr" and self._time_zone_from_data(expr):
            raise _Unbounded(
                'a time zone must be a string literal such as "Europe/Paris" (the runtime '
                "keeps every time zone name it is given for the life of the process)",
                expr,
            )
        if kind == "call_expr" and expr.call_expr.function == "_+_":
            reference = self.references.get(expr.id)
            overloads = ("?",) if reference is None else reference.overload_id
            if not set(overloads) <= _NUMERIC_ADD:
                raise _Unbounded(
                    "'+' may only add numbers, timestamps and durations (joining strings "
                    "or lists is disabled to keep evaluation bounded); for dynamic values "
                    "convert first, e.g. double(input.a) + double(input.b)",
                    expr,
                )
        elif kind in ("list_expr", "struct_expr") and in_macro:
            literal = expr.list_expr.elements if kind == "list_expr" else expr.struct_expr.entries
            self.literal_elements += len(literal)
            if self.literal_elements > MAX_LITERAL_ELEMENTS_IN_MACRO:
                raise _Unbounded(
                    f"more than {MAX_LITERAL_ELEMENTS_IN_MACRO} list/map literal elements "
                    "inside macros (each iteration builds them again)",
                    expr,
                )
        for child in _children(expr):
            self.visit(child, nesting=nesting, in_macro=in_macro)

    def _time_zone_from_data(self, expr: syntax_pb2.Expr) -> bool:
        """A getHours(tz)-style call whose time zone is not a literal."""
        reference = self.references.get(expr.id)
        overloads = () if reference is None else reference.overload_id
        if not any(overload.endswith("_with_tz") for overload in overloads):
            return False
        args = expr.call_expr.args
        zone = args[-1] if args else None
        return zone is None or zone.WhichOneof("expr_kind") != "const_expr"

    def _visit_loop(self, expr: syntax_pb2.Expr, *, nesting: int) -> None:
        loop = expr.comprehension_expr
        if loop.accu_init.WhichOneof("expr_kind") == "list_expr":  # map() and filter()
            raise _Unbounded(
                "map() and filter() are not available (this CEL library copies their "
                "result on every iteration); use all(), exists() or exists_one()",
                expr,
            )
        self.macros += 1
        if self.macros > MAX_MACROS:
            raise _Unbounded(f"more than {MAX_MACROS} macros (all, exists, exists_one)", expr)
        if nesting + 1 > MAX_MACRO_NESTING:
            raise _Unbounded(f"macros nested more than {MAX_MACRO_NESTING} deep", expr)
        self.visit(loop.iter_range, nesting=nesting, in_macro=nesting > 0)
        # accu_init is the macro's own start value (true, false or 0): not user code.
        for part in (loop.loop_condition, loop.loop_step, loop.result):
            self.visit(part, nesting=nesting + 1, in_macro=True)


def _children(expr: syntax_pb2.Expr) -> list[syntax_pb2.Expr]:
    """Sub-expressions of a non-loop node, in source order."""
    kind = expr.WhichOneof("expr_kind")
    if kind == "select_expr":
        return [expr.select_expr.operand]
    if kind == "call_expr":
        call = expr.call_expr
        return [call.target, *call.args] if call.HasField("target") else list(call.args)
    if kind == "list_expr":
        return list(expr.list_expr.elements)
    if kind == "struct_expr":
        children = []
        for entry in expr.struct_expr.entries:
            if entry.HasField("map_key"):  # message fields are named, not computed
                children.append(entry.map_key)
            children.append(entry.value)
        return children
    return []  # constants and identifiers


def _line_col(source: str, offset: int) -> str:
    """1-based line:col of a code-point offset, as the library reports positions."""
    line_start = source.rfind("\n", 0, offset) + 1
    return f"{source.count(chr(10), 0, offset) + 1}:{offset - line_start + 1}"


# --- cost -------------------------------------------------------------------------------
def _estimate(checked: checked_pb2.CheckedExpr, caps: InputCaps) -> CostEstimate:
    return rule_cost.estimate(checked, caps, iteration_budget=CEL_ITERATION_BUDGET)


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


def _describe_cost(
    cost: CostEstimate, limits: EvalLimits, checked: checked_pb2.CheckedExpr, source: str
) -> tuple[str, str | None]:
    """Why a condition is too costly, and the ``line:col`` of its costliest part."""
    position = None
    part = ""
    if cost.hotspot is not None:
        offset = checked.source_info.positions.get(cost.hotspot)
        position = None if offset is None else _line_col(source, offset)
        what = (
            "a loop" if cost.hotspot_function is None else f"'{_operator(cost.hotspot_function)}'"
        )
        where = f" at {position}" if position else ""
        part = f"; the costliest part is {what}{where} ({cost.hotspot_cost:,} units)"
    message = (
        f"too costly: in the worst case it could exceed the {limits.budget_ms} ms evaluation "
        f"budget (estimated cost {cost.total:,} units, limit {limits.rule_cost_limit:,}, for "
        f"inputs of up to {limits.max_list_length:,} items per list, "
        f"{limits.max_string_length:,} characters per string and {limits.max_input_size:,} "
        f'in all){part}. See "Bounded evaluation" in docs/rules.md'
    )
    return message, position


def _operator(function: str) -> str:
    """``_==_`` -> ``==``, ``@in`` -> ``in``, ``_[_]`` -> ``[]``."""
    return function.strip("@").replace("_", "") or function


# --- messages -----------------------------------------------------------------------------
_CEL_ERROR = re.compile(r"ERROR: <input>:(-?\d+):(-?\d+): ([^\n]*)")
_RECURSION = re.compile(r"recursion limit exceeded|max recursion depth", re.IGNORECASE)
_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]\s*$")


def _describe_compile_failure(text: str) -> tuple[str, str | None]:
    """Turn the library's multi-line error into one sentence and a ``line:col``."""
    # Lines starting with "|" echo the user's source: never classify on them.
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("|"))
    if _RECURSION.search(text):
        return f"expression is nested too deeply (limit {CEL_MAX_RECURSION_DEPTH} levels)", None
    match = _CEL_ERROR.search(text)
    if match is None:
        return f"invalid expression: {_clean_status(text)}", None
    line, col, detail = int(match[1]), int(match[2]), match[3].strip()
    detail = detail.replace(" (in container '')", "")
    position = f"{line}:{col}" if line > 0 and col > 0 else None
    kind = "type error"
    if detail.startswith("Syntax error: "):
        kind, detail = "syntax error", detail.removeprefix("Syntax error: ")
    where = f" at {position}" if position else ""
    return f"{kind}{where}: {detail}", position


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    if "Iteration budget exceeded" in text:
        return f"evaluation budget exceeded (more than {CEL_ITERATION_BUDGET} macro iterations)"
    if isinstance(exc, MemoryError):
        return "evaluation ran out of memory"
    return _clean_status(text) or type(exc).__name__


def _describe_non_bool(result: cel.Value) -> str:
    result_type = result.type()
    if result_type == cel.Type.ERROR:
        return f"condition could not be evaluated: {_clean_status(str(result.value()))}"
    if result_type == cel.Type.UNKNOWN:
        return "condition could not be evaluated: unknown value"
    return f"condition must be true or false, but it returned a {_type_name(result_type)}"


def _clean_status(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _STATUS_SUFFIX.sub("", _STATUS_PREFIX.sub("", first))


def _type_name(cel_type: cel.Type) -> str:
    return cel_type.name().lower()


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _failure(rule: str | None, message: str) -> Evaluation:
    return Evaluation(False, None, None, RuleError(rule, message))


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
