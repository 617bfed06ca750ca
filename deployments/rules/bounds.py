"""Static checks on a checked expression: the constructs that could build huge values are
refused, and the worst-case cost of a condition is estimated (``cost``).
"""

from __future__ import annotations

from collections.abc import Mapping

from cel.expr import checked_pb2, syntax_pb2
from cel_expr_python import cel
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from deployments.rules import cost as rule_cost
from deployments.rules.cost import CostEstimate, InputCaps
from deployments.rules.limits import (
    CEL_ITERATION_BUDGET,
    MAX_LITERAL_ELEMENTS_IN_MACRO,
    MAX_MACRO_NESTING,
    MAX_MACROS,
    EvalLimits,
)

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
