"""The rule language: compiling, evaluating and refusing hostile conditions (no database)."""

from __future__ import annotations

import dataclasses
import pickle
import threading
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from deployments.rules import (
    CompiledRuleSet,
    Evaluation,
    RuleCompileError,
    RuleError,
    compile_rules,
    compiled_for,
    prepare_input,
)
from deployments.rules import language as rl

# Hostile cases must finish; the bound is generous so slow CI machines do not flake.
GENEROUS_SECONDS = 5.0


def rule(name: str, condition: str, output: Any = None) -> dict[str, Any]:
    return {"name": name, "condition": condition, "output": output if output is not None else name}


def one(condition: str) -> CompiledRuleSet:
    return compile_rules([rule("r", condition, "matched")], "default")


def compile_error(rules: Any, default: Any = None) -> RuleCompileError:
    with pytest.raises(RuleCompileError) as info:
        compile_rules(rules, default)
    return info.value


# --- compile errors -------------------------------------------------------------------------
def test_syntax_error_names_rule_index_field_and_position() -> None:
    error = compile_error([rule("ok", "true"), rule("hot", "input.temperature > 27 &&")])

    assert (error.rule_index, error.rule_name, error.field) == (1, "hot", "condition")
    assert error.position == "1:26"
    assert error.message.startswith("syntax error at 1:26: ")
    assert str(error).startswith("rule 'hot' (#1) condition: syntax error at 1:26: ")
    assert error.as_field_errors() == {"rules": {"1": {"condition": [error.message]}}}
    assert isinstance(error, ValueError)


def test_position_counts_lines_and_columns() -> None:
    error = compile_error([rule("multi", "input.a > 1 &&\n  input.b >")])

    assert error.position is not None
    assert error.position.startswith("2:")


def test_type_error_at_compile_time_has_position() -> None:
    error = compile_error([rule("mixed", 'input.a > 1 || 1 > "a"')])

    assert error.position == "1:18"
    assert error.message.startswith("type error at 1:18: ")


def test_unknown_variable_is_a_compile_error() -> None:
    error = compile_error([rule("typo", "inptu.temperature > 27")])

    assert error.position == "1:6"
    assert "undeclared reference to 'inptu.temperature'" in error.message


def test_condition_of_non_bool_type_is_refused() -> None:
    error = compile_error([rule("sum", "1 + 2")])

    assert error.field == "condition"
    assert "boolean" in error.message


def test_compile_error_survives_pickling() -> None:
    error = compile_error([rule("hot", "input.x >")])

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object

    assert (copy.rule_index, copy.rule_name, copy.position, str(copy)) == (
        error.rule_index,
        error.rule_name,
        error.position,
        str(error),
    )


# --- evaluation: outputs ----------------------------------------------------------------------
V2 = [
    rule("hot", "input.temperature > 27", {"alert": "raise"}),
    rule("zone", 'input.zone in ["A", "B"]', {"alert": "watch"}),
]


def test_first_matching_rule_wins() -> None:
    rules = compile_rules(V2, {"alert": "none"})

    both = rules.evaluate({"temperature": 30, "zone": "A"})
    second = rules.evaluate({"temperature": 20, "zone": "B"})

    assert both == Evaluation(True, {"alert": "raise"}, "hot", None)
    assert second == Evaluation(True, {"alert": "watch"}, "zone", None)


def test_default_applies_when_no_rule_matches() -> None:
    rules = compile_rules(V2, {"alert": "none"})

    assert rules.evaluate({"temperature": 20, "zone": "C"}) == Evaluation(
        True, {"alert": "none"}, None, None
    )


def test_empty_rule_list_and_null_default_are_valid() -> None:
    assert compile_rules([], None).evaluate({}) == Evaluation(True, None, None, None)


def test_outputs_are_fresh_copies() -> None:
    rules = compile_rules([rule("r", "true", {"tags": ["a"]})], None)

    first = rules.evaluate({})
    first.output["tags"].append("mutated")

    assert rules.evaluate({}).output == {"tags": ["a"]}


def test_any_mapping_is_accepted_as_input() -> None:
    rules = compile_rules(V2, "none")

    assert rules.evaluate(MappingProxyType({"temperature": 28, "zone": "Z"})).matched_rule == "hot"


# --- evaluation: the language -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("condition", "document", "expected"),
    [
        ("input.temperature > 27", {"temperature": 28}, True),
        ("input.temperature > 27", {"temperature": 27.5}, True),
        ("input.temperature > 27", {"temperature": 27}, False),
        ("input.temperature > 27", {"temperature": 26.9}, False),
        ("input.temperature >= 27.0", {"temperature": 27}, True),
        ("input.count == 3", {"count": 3}, True),
        ("input.count == 3", {"count": 3.0}, True),
        ("input.count != 3", {"count": 3.5}, True),
        ("input.count in [1, 2, 3]", {"count": 3.0}, True),
        ('input.zone in ["A", "B"]', {"zone": "A"}, True),
        ('input.zone in ["A", "B"]', {"zone": "C"}, False),
        ('"vip" in input.tags', {"tags": ["new", "vip"]}, True),
        ('input.sku.startsWith("AB-")', {"sku": "AB-123"}, True),
        ('input.sku.startsWith("AB-")', {"sku": "XAB-1"}, False),
        ('input.email.endsWith("@example.com")', {"email": "a@example.com"}, True),
        ('input.name.contains("ann")', {"name": "Joanna"}, True),
        ('input.code.matches("^[A-Z]{2}[0-9]+$")', {"code": "FR75"}, True),
        ("size(input.items) >= 2", {"items": [1, 2]}, True),
        ("has(input.vip) && input.vip", {}, False),
        ("input.items.exists(i, i.qty > 3)", {"items": [{"qty": 1}, {"qty": 5}]}, True),
        ("input.items.all(i, i.qty > 3)", {"items": [{"qty": 1}, {"qty": 5}]}, False),
        (
            'input.user.country == "FR" && input.user.age >= 18',
            {"user": {"country": "FR", "age": 30}},
            True,
        ),
        ("double(input.a) + double(input.b) > 2.0", {"a": 1, "b": 1.5}, True),
        ("input.flag", {"flag": True}, True),
        ("input.flag", {"flag": False}, False),
    ],
)
def test_condition_semantics(condition: str, document: dict[str, Any], expected: bool) -> None:
    evaluation = one(condition).evaluate(document)

    assert evaluation.success, evaluation.error
    assert (evaluation.matched_rule == "r") is expected


# --- evaluation: error outcomes ---------------------------------------------------------------
def assert_error(evaluation: Evaluation, rule_name: str | None, *fragments: str) -> None:
    assert evaluation.success is False
    assert evaluation.output is None
    assert evaluation.matched_rule is None
    assert isinstance(evaluation.error, RuleError)
    assert evaluation.error.rule == rule_name
    for fragment in fragments:
        assert fragment in evaluation.error.message


def test_missing_key_is_an_error_naming_the_rule_not_a_match() -> None:
    rules = compile_rules([rule("cold", "false"), *V2], "none")

    evaluation = rules.evaluate({"zone": "A"})

    assert_error(evaluation, "hot", "temperature")


def test_string_compared_with_number_is_an_error() -> None:
    assert_error(one("input.name > 3").evaluate({"name": "x"}), "r", "No matching overload")


def test_non_bool_result_is_an_error() -> None:
    assert_error(one("input.name").evaluate({"name": "x"}), "r", "true or false", "string")


def test_runtime_errors_are_outcomes() -> None:
    assert_error(one("1 / input.zero == 1").evaluate({"zero": 0}), "r", "divide by zero")
    assert_error(one("input.a.b == 1").evaluate({"a": [1]}), "r")


@pytest.mark.parametrize(
    "document",
    # An integer past 64 bits is an input error, named without a rule (test_rule_cost.py).
    [{"x": (1, 2)}, {"x": object()}, {"x": {1: "non-string key"}}],
)
def test_values_the_library_cannot_represent_are_errors(document: dict[str, Any]) -> None:
    evaluation = one("input.x.y == 1").evaluate(document)

    assert_error(evaluation, "r")


@pytest.mark.parametrize("document", [None, [1, 2], "text", 3])
def test_non_object_input_is_an_error_without_rule(document: Any) -> None:
    assert_error(one("true").evaluate(document), None, "JSON object")


@pytest.mark.parametrize(
    "document",
    [
        {"amount": 50, "country": "FR"},
        {"amount": 500},
        {"x": (1, 2)},
        {"amount": 2**64},
        {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        [1, 2],
    ],
)
def test_versions_sharing_one_prepared_input_answer_what_each_evaluation_does(
    document: Any,
) -> None:
    first = compile_rules([rule("big", "input.amount > 100", {"d": "review"})], {"d": "ok"})
    second = compile_rules(
        [rule("fr", 'input.country == "FR"'), rule("big", "input.amount > 400")], "ok"
    )
    prepared = prepare_input(document)

    for version in (first, second, first):
        assert version.evaluate_prepared(prepared) == version.evaluate(document)


class _Panic(BaseException):
    """Stands for a library panic that does not derive from Exception."""


class _ExplodingProgram:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def eval(self, *args: Any, **kwargs: Any) -> Any:
        raise self.exc


def with_program(rules: CompiledRuleSet, program: Any) -> CompiledRuleSet:
    first = rules._rules[0]
    rules._rules = (dataclasses.replace(first, program=program), *rules._rules[1:])
    return rules


@pytest.mark.parametrize("exc", [RuntimeError("INTERNAL: boom [INTERNAL]"), _Panic("panic")])
def test_any_library_exception_becomes_an_error_outcome(exc: BaseException) -> None:
    rules = with_program(one("true"), _ExplodingProgram(exc))

    assert_error(rules.evaluate({}), "r")


def test_keyboard_interrupt_is_not_swallowed() -> None:
    rules = with_program(one("true"), _ExplodingProgram(KeyboardInterrupt()))

    with pytest.raises(KeyboardInterrupt):
        rules.evaluate({})


# --- structure errors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rules", "default", "field", "index"),
    [
        ({"name": "a"}, None, "rules", None),
        ("rules", None, "rules", None),
        (["not a rule"], None, "rules", 0),
        ([{"condition": "true", "output": 1}], None, "name", 0),
        ([{"name": "a", "output": 1}], None, "condition", 0),
        ([{"name": "a", "condition": "true"}], None, "output", 0),
        ([rule("a", "true"), rule("a", "false")], None, "name", 1),
        ([{**rule("a", "true"), "when": "later"}], None, "rules", 0),
        ([rule("", "true")], None, "name", 0),
        ([rule("   ", "true")], None, "name", 0),
        ([rule("x" * (rl.MAX_NAME_LENGTH + 1), "true")], None, "name", 0),
        ([{"name": 7, "condition": "true", "output": 1}], None, "name", 0),
        ([rule("a", 42)], None, "condition", 0),  # type: ignore[arg-type]
        ([rule("a", "  ")], None, "condition", 0),
        ([rule("a", "true", {1, 2})], None, "output", 0),
        ([rule("a", "true", float("nan"))], None, "output", 0),
        ([rule("a", "true", {1: "x"})], None, "output", 0),
        ([rule("a", "true", "x" * rl.MAX_OUTPUT_CHARS)], None, "output", 0),
        ([], object(), "default", None),
    ],
)
def test_structure_errors_name_the_field(
    rules: Any, default: Any, field: str, index: int | None
) -> None:
    error = compile_error(rules, default)

    assert (error.field, error.rule_index) == (field, index)
    errors = error.as_field_errors()
    if index is None:
        assert errors == {field: [error.message]}
    else:
        key = "non_field_errors" if field == "rules" else field
        assert errors == {"rules": {str(index): {key: [error.message]}}}


def test_duplicate_name_message_and_sentence() -> None:
    error = compile_error([rule("a", "true"), rule("a", "false")])

    assert str(error) == "rule 'a' (#1) name: duplicate rule name 'a'; names must be unique"


def test_unknown_keys_are_listed() -> None:
    error = compile_error([{**rule("a", "true"), "when": 1}])

    assert "'when'" in error.message
    assert str(error).startswith("rule 'a' (#0): unknown keys")


def test_too_many_rules() -> None:
    rules = [rule(f"r{i}", "true") for i in range(rl.MAX_RULES + 1)]

    error = compile_error(rules)

    assert error.field == "rules"
    assert error.rule_index is None
    assert str(error).startswith("rules: at most")


def test_maximum_rule_count_is_accepted() -> None:
    rules = [rule(f"r{i}", f"input.n == {i}") for i in range(rl.MAX_RULES)]

    assert compile_rules(rules, None).evaluate({"n": rl.MAX_RULES - 1}).matched_rule == "r199"


def test_condition_too_long() -> None:
    long_condition = "true" + " && true" * (rl.MAX_CONDITION_LENGTH // 8)

    error = compile_error([rule("long", long_condition)])

    assert (error.field, error.rule_index, error.rule_name) == ("condition", 0, "long")
    assert "at most" in error.message


# --- hostile conditions: refused, or bounded error outcomes -----------------------------------
DIGITS_100 = "[" + ",".join(str(i) for i in range(100)) + "]"
DIGITS_2000 = "[" + ",".join(str(i % 10) for i in range(2000)) + "]"
MAP_101 = "{" + ",".join(f"{i}: {i}" for i in range(101)) + "}"


def nested_all(levels: int) -> str:
    condition = "true"
    for level in range(levels):
        condition = f"[1,2,3,4,5,6,7,8,9,10].all(a{level}, {condition})"
    return condition


def chained_doubling(steps: int, seed: str) -> str:
    condition = f"[{seed}]"
    for _ in range(steps):
        condition += ".map(x, x + x + x + x + x + x + x + x)"
    return f"size({condition}) > 0"


HOSTILE: dict[str, tuple[str, dict[str, Any]]] = {
    "100k open parentheses": ("(" * 100_000, {}),
    "balanced parentheses under the length limit": ("(" * 2000 + "true" + ")" * 2000, {}),
    "long && chain": ("&&".join(["true"] * 1000), {}),
    "deep member access": ("input" + ".a" * 2000 + " == 1", {}),
    "huge list literal": ("1 in [" + ",".join(["1"] * 50_000) + "]", {}),
    "list literal rebuilt in every iteration": (
        f"input.items.exists(i, i in {DIGITS_100[:-1]},100,101])",
        {"items": list(range(5000))},
    ),
    "nested comprehensions 3 levels": (nested_all(3), {}),
    "nested comprehensions 12 levels": (nested_all(12), {}),
    "two levels over big literals": (f"{DIGITS_2000}.all(a, [1,2,3,4,5].all(b, true))", {}),
    "two levels over input": (
        "input.l.all(a, input.l.all(b, true))",
        {"l": list(range(1000))},
    ),
    "one level over a huge input list": ("input.l.all(a, a >= 0)", {"l": list(range(50_000))}),
    "one level over a list at the cap": ("input.l.all(a, input.l.all(b, true))", {"l": [0] * 1000}),
    "string multiplication": ('size("a" * 1000000) > 0', {}),
    "string doubling by concatenation": (
        "size(" + " + ".join(['"aaaaaaaaaaaaaaaa"'] * 20) + ") > 0",
        {},
    ),
    "string doubling through map chains": (chained_doubling(10, '"aaaaaaaaaaaaaaaa"'), {}),
    "input string doubling": (chained_doubling(3, "input.s"), {"s": "a" * 100_000}),
    "list doubling through map chains": (chained_doubling(10, "[1,2,3,4,5,6,7,8]"), {}),
    "dynamic concatenation in a loop": (
        "input.l.exists(x, size(input.s + input.s + input.s + input.s) == 0)",
        {"l": list(range(100)), "s": "a" * 1_000_000},
    ),
    "map over an input list": ("input.l.map(x, x).size() > 0", {"l": list(range(10_000))}),
    "filter over an input list": ("input.l.filter(x, true).size() > 0", {"l": list(range(10_000))}),
    "many macros": (" && ".join(["[1].exists(a, true)"] * 6), {}),
    "invalid regular expression": ('input.s.matches("(")', {"s": "x"}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_condition_is_refused_or_bounded(name: str) -> None:
    condition, document = HOSTILE[name]
    started = time.monotonic()
    try:
        compiled = compile_rules([rule("hostile", condition)], None)
    except RuleCompileError as error:
        assert error.rule_index == 0
        assert error.field == "condition"
    else:
        evaluation = compiled.evaluate(document)
        assert evaluation.success is False, f"{name} evaluated to {evaluation}"
        assert evaluation.error is not None
        # An input over the caps is refused before any rule runs.
        over_caps = evaluation.error.message.startswith("input")
        assert evaluation.error.rule == (None if over_caps else "hostile")
    assert time.monotonic() - started < GENEROUS_SECONDS


@pytest.mark.parametrize(
    ("condition", "fragment"),
    [
        ("(" * 100_000, "at most"),
        ("(" * 2000 + "true" + ")" * 2000, "nested too deeply"),
        (nested_all(3), "nested more than"),
        ('"a" + "b" == "ab"', "'+' may only add"),
        ("input.l.map(x, x).size() > 0", "map() and filter()"),
        (f"{DIGITS_2000}.all(a, [1,2,3,4,5].all(b, true))", "budget"),
        (f"input.items.exists(i, i in {DIGITS_100[:-1]},100,101])", "literal elements"),
        (f"input.l.exists(x, {MAP_101}[x] == 1)", "literal elements"),
    ],
)
def test_refusals_say_why(condition: str, fragment: str) -> None:
    error = compile_error([rule("hostile", condition)])

    assert fragment in error.message


def test_refusal_points_at_the_offending_operator() -> None:
    error = compile_error([rule("concat", 'input.first + " " == "x"')])

    assert error.position == "1:13"


def test_iteration_budget_exhausted_by_input_is_an_error_outcome() -> None:
    compiled = one("input.l.all(a, input.l.all(b, true))")

    assert compiled.evaluate({"l": [1, 2]}).success
    assert_error(compiled.evaluate({"l": list(range(200))}), "r", "budget")


def test_allowed_macros_still_work() -> None:
    compiled = one('input.orders.exists(o, o.items.exists(i, i.sku in ["A", "B"]))')

    assert compiled.evaluate({"orders": [{"items": [{"sku": "C"}, {"sku": "B"}]}]}).success
    assert compiled.evaluate({"orders": [{"items": [{"sku": "B"}]}]}).matched_rule == "r"
    assert one("input.l.exists_one(x, x > 1)").evaluate({"l": [1, 2]}).matched_rule == "r"


class _Unreadable:
    """A compiled program whose serialized form is not a CheckedExpr."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff",
        b"",
        b"\n)type.googleapis.com/google.protobuf.Empty",
    ],
    ids=["garbage", "empty", "other-message"],
)
def test_bound_check_fails_closed_when_the_expression_cannot_be_read(data: bytes) -> None:
    violation = rl._check_bounded(_Unreadable(data), "true")  # type: ignore[arg-type]

    assert violation is not None
    assert "could not be inspected" in violation[0]


# --- cache ------------------------------------------------------------------------------------
def test_compiled_for_returns_the_same_object_for_the_same_key() -> None:
    first = compiled_for(("test-same", 1), V2, "none")
    again = compiled_for(("test-same", 1), [], "ignored on a hit")
    other = compiled_for(("test-same", 2), V2, "none")

    assert first is again
    assert other is not first


def test_compiled_for_does_not_cache_errors() -> None:
    for _ in range(2):
        with pytest.raises(RuleCompileError):
            compiled_for(("test-error", 1), [rule("bad", "input.x >")], None)

    assert compiled_for(("test-error", 1), V2, None).evaluate({"temperature": 30}).success


def test_compiled_for_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rl, "CACHE_SIZE", 2)
    first = compiled_for(("test-lru", 1), V2, None)
    compiled_for(("test-lru", 2), V2, None)
    compiled_for(("test-lru", 1), V2, None)  # refresh 1, so 2 is the oldest
    compiled_for(("test-lru", 3), V2, None)

    assert len(rl._cache) == 2
    assert compiled_for(("test-lru", 1), V2, None) is first
    assert ("test-lru", 2) not in rl._cache


def test_compiled_for_compiles_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_compile: Callable[..., CompiledRuleSet] = rl.compile_rules

    def slow_compile(rules: Any, default: Any, **options: Any) -> CompiledRuleSet:
        calls.append(1)
        time.sleep(0.05)
        return real_compile(rules, default, **options)

    monkeypatch.setattr(rl, "compile_rules", slow_compile)
    results: list[CompiledRuleSet] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(compiled_for(("test-concurrent", 1), V2, None))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(calls) == 1
    assert len(results) == 8
    assert all(result is results[0] for result in results)


def test_evaluation_is_thread_safe() -> None:
    compiled = compile_rules(V2, "none")
    failures: list[str] = []

    def worker(offset: int) -> None:
        for i in range(300):
            temperature = (i + offset) % 40
            expected = "hot" if temperature > 27 else None
            # Eight threads share one core's GIL: the wall-clock budget is not what this
            # test is about, so it is set far out of reach.
            evaluation = compiled.evaluate(
                {"temperature": temperature, "zone": "Z"}, budget_ms=60_000
            )
            if evaluation.matched_rule != expected or evaluation.error is not None:
                failures.append(f"{temperature}: {evaluation}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []


def test_outputs_only_the_standard_library_reads_come_back_exactly() -> None:
    rules = compile_rules([rule("r", "true", {"id": 2**70, "tags": ["a"]})], None)

    assert rules.evaluate({}).output == {"id": 2**70, "tags": ["a"]}


def test_versions_judged_on_one_prepared_input_answer_as_alone() -> None:
    # A shadowed execute prepares its input once and evaluates both versions on it.
    document = {"temperature": 28, "zone": "Z"}
    v1 = compile_rules([rule("warm", "input.temperature > 25", "warm")], "cold")
    v2 = compile_rules(V2, "none")
    prepared = prepare_input(document)

    shared = (v1.evaluate(document, prepared=prepared), v2.evaluate(document, prepared=prepared))
    assert shared == (v1.evaluate(document), v2.evaluate(document))
    assert shared[1].matched_rule == "hot"
    refused = prepare_input({"readings": "x" * 100_000})
    assert v1.evaluate({}, prepared=refused) == refused  # the input's own error outcome


def test_a_change_of_limits_prepares_the_input_again(settings: Any) -> None:
    document = {"readings": [1, 2, 3, 4]}
    rules = compile_rules([rule("r", "size(input.readings) > 2", "many")], "few")
    assert rules.evaluate(document).output == "many"

    settings.CANARY_INPUT_MAX_LIST_LENGTH = 3

    refused = rules.evaluate(document)
    assert not refused.success
    assert "at most 3" in refused.error.message
