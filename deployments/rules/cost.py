"""Worst-case cost of a checked CEL condition, in the spirit of cel-go's ``checker/cost.go``.

The estimate is an upper bound on the work one evaluation of a condition can do, in *cost
units* (one unit is calibrated to about ``NANOSECONDS_PER_UNIT`` of cel-expr-python time on
the development container; see docs/rules.md). It is computed from the checked expression
and the input caps, never from a particular input, so it holds for every input the caps
allow:

- every node evaluated costs 1 (constants 0); a list or map literal also costs its entries
  (``LIST_ENTRY``, ``MAP_ENTRY``), as it is built again each time it is evaluated;
- a node inside a loop (``all``/``exists``/``exists_one``) is evaluated once per iteration:
  its cost is multiplied by the iterations of every enclosing loop, each at most
  ``max_elements`` for a list or object from the input (exactly the length of a literal),
  and never more than the library's per-evaluation iteration budget in total;
- work proportional to data is charged per element or character: ``x in list`` compares
  ``x`` with every element; ``==`` and the orderings walk both values (a scalar is one
  cheap comparison, every further node of a list or object costs more); ``size()``,
  ``contains()``, ``matches()`` and the string conversions walk the string (``matches()``
  also by the size of the compiled pattern); ``matches()`` also compiles its pattern on
  every call, once per iteration in a loop (``REGEX_CALL``, ``regex_compile_size``);
- anything read from ``input`` may be as large as the caps allow: ``max_elements`` entries
  and ``max_size`` nodes plus characters. But when a value is part of the element of a loop
  over the input, the sum over the loop's iterations is bounded by the size of the whole
  list: ``input.items.exists(i, i.name.contains("x"))`` walks every name once, not
  ``max_elements`` times the largest possible string.

The module reads only the ``cel.expr`` protos; it has no Django or CEL-runtime imports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cel.expr import checked_pb2, syntax_pb2

from deployments.rules.regex import REGEX_MAX_REPEAT, regex_compile_size, regex_size

# Calibration (docs/rules.md "Cost model"): one unit is about 50 ns of evaluation.
NANOSECONDS_PER_UNIT = 50
UNITS_PER_MILLISECOND = 1_000_000 // NANOSECONDS_PER_UNIT

# Per-element and per-character charges, in units (measurements in docs/rules.md).
COMPARE_PER_ELEMENT = 0.6  # ==, <, in: one comparison of scalars (measured 8-18 ns)
COMPARE_PER_NESTED_NODE = 2.0  # each further node of lists/objects compared (45-90 ns)
COMPARE_PER_CHAR = 0.002  # byte comparison of strings (measured < 0.05 ns per character)
HASH_PER_CHAR = 0.002  # hashing a map key
SCAN_PER_CHAR = 0.05  # size(), conversions, parsing: one pass over the UTF-8 text (~1 ns)
SEARCH_PER_CHAR = 0.2  # contains(): a search over the text (measured up to 5 ns a character)
SEARCH_PER_CHAR_PAIR = 0.01  # contains() with a long needle: naive search worst case
REGEX_PER_CHAR_INSTRUCTION = 0.1  # matches(): RE2's NFA simulation (measured <= 3.5 ns)
# matches() compiles its pattern on every call (cel-expr-python has no precompilation):
# a fixed cost, then about 150-560 ns per instruction of the program (measured), far more
# for Unicode classes (see ``regex_compile_size``). Charged per call, so once per iteration.
REGEX_CALL = 150  # a call with the smallest pattern (measured 3.7-5.6 us)
REGEX_COMPILE_PER_INSTRUCTION = 10  # per weighted instruction (``regex_compile_size``)
LIST_ENTRY = 3  # building a list literal, per element (measured 85 ns, rebuilt per iteration)
MAP_ENTRY = 5  # building a map literal, per entry (measured 140 ns)
TIME_ZONE_LOOKUP = 400  # getHours(tz) and friends with a time zone that is not a literal


@dataclass(frozen=True)
class InputCaps:
    """What an input may contain: entries per list/object, characters per string, total size.

    ``max_size`` bounds the sum over the document of 1 per value plus the characters of every
    string and key (a lower bound on its JSON length).
    """

    max_elements: int
    max_size: int
    max_string: int


@dataclass(frozen=True)
class CostEstimate:
    """An upper bound on one evaluation's work; ``hotspot`` is the costliest node's id."""

    total: int
    hotspot: int | None
    hotspot_function: str | None
    hotspot_cost: int


@dataclass(frozen=True, slots=True)
class _Size:
    """Bounds on a value: nodes (containers and scalars), characters, entries if a container.

    ``root`` is the id of the loop whose current element this value is part of; ``dynamic``
    means it may come from the input.
    """

    nodes: float
    chars: float
    elems: float
    root: int | None = None
    dynamic: bool = False


_SCALAR = _Size(1, 0, 0)
_ONE = (1.0, None)


@dataclass(frozen=True, slots=True)
class _Loop:
    id: int
    iterations: float  # per evaluation of the range
    weight: float  # bound on the sum of the sizes of all its elements


_CONVERSIONS = frozenset({"int", "uint", "double", "string", "bytes", "timestamp", "duration"})
_COMPARISONS = frozenset({"_==_", "_!=_", "_<_", "_<=_", "_>_", "_>=_"})
_CHEAP = frozenset(
    {
        "_&&_",
        "_||_",
        "!_",
        "@not_strictly_false",
        "-_",
        "_+_",
        "_-_",
        "_*_",
        "_/_",
        "_%_",
        "bool",
        "type",
    }
)
_PASS_THROUGH = frozenset({"dyn"})


def estimate(
    checked: checked_pb2.CheckedExpr,
    caps: InputCaps,
    *,
    iteration_budget: int,
    variable: str = "input",
) -> CostEstimate:
    """The worst-case cost of one evaluation of ``checked`` over inputs within ``caps``."""
    coster = _Coster(checked.reference_map, checked.type_map, caps, iteration_budget, variable)
    coster.visit(checked.expr)
    hotspot = None
    hotspot_function = None
    hotspot_cost = 0
    if coster.by_node:
        hotspot, cost = max(coster.by_node.items(), key=lambda item: item[1])
        hotspot_function = coster.functions.get(hotspot)
        hotspot_cost = _ceil(cost)
    return CostEstimate(_ceil(coster.total), hotspot, hotspot_function, hotspot_cost)


def _ceil(value: float) -> int:
    if math.isinf(value) or value > 2**62:
        return 2**62
    return math.ceil(value)


class _Coster:
    def __init__(
        self,
        references: Mapping[int, checked_pb2.Reference],
        types: Mapping[int, checked_pb2.Type],
        caps: InputCaps,
        iteration_budget: int,
        variable: str,
    ) -> None:
        self.references = references
        self.types = types
        self.budget = float(iteration_budget)
        self.variable = variable
        self.input = _Size(
            float(caps.max_size), float(caps.max_size), float(caps.max_elements), None, True
        )
        self.max_elements = float(caps.max_elements)
        self.max_string = float(min(caps.max_string, caps.max_size))
        self.loops: list[_Loop] = []
        self.scopes: dict[str, list[_Size]] = {}
        self.total = 0.0
        self.by_node: dict[int, float] = {}
        self.functions: dict[int, str] = {}

    # --- multiplicities -----------------------------------------------------------------
    def _times(self, without: int | None = None) -> float:
        """How often the current node runs (optionally grouping one loop's iterations)."""
        product = 1.0
        for loop in self.loops:
            if loop.id != without:
                product *= loop.iterations
        return min(product, self.budget) if self.loops else product

    def _weight(self, loop_id: int) -> float:
        for loop in self.loops:
            if loop.id == loop_id:
                return loop.weight
        raise AssertionError("root outside its loop")  # pragma: no cover

    def _term(self, factors: Sequence[tuple[float, int | None]]) -> float:
        """Sum over all runs of the product of ``factors`` (each a bound and its root)."""
        product = 1.0
        for value, _ in factors:
            product *= value
        best = self._times() * product
        for value, root in factors:
            if root is None or value <= 0:
                continue
            others = product / value
            best = min(best, others * self._times(without=root) * self._weight(root))
        return best

    def charge(self, expr: syntax_pb2.Expr, coefficient: float, *options: list[Any]) -> None:
        """Add ``coefficient`` times the cheapest bound among ``options`` (lists of factors).

        Each option bounds the same work; the sum over runs of a minimum is at most the
        minimum of the sums. No option means a fixed charge per run.
        """
        if coefficient == 0:
            return
        if not options:
            cost = coefficient * self._times()
        else:
            cost = coefficient * min(self._term(option) for option in options)
        self.total += cost
        self.by_node[expr.id] = self.by_node.get(expr.id, 0.0) + cost

    # --- the walk -------------------------------------------------------------------------
    def visit(self, expr: syntax_pb2.Expr) -> _Size:
        kind = expr.WhichOneof("expr_kind")
        if kind == "const_expr":
            return _constant_size(expr.const_expr)
        if kind == "ident_expr":
            self.charge(expr, 1)
            return self._ident(expr.ident_expr.name)
        if kind == "select_expr":
            operand = self.visit(expr.select_expr.operand)
            self.charge(expr, 1)
            if expr.select_expr.test_only:
                return _SCALAR
            return self._part(operand)
        if kind == "call_expr":
            return self._call(expr)
        if kind == "list_expr":
            # A literal is built again on every evaluation of the node: inside a macro, on
            # every iteration (cel-expr-python folds no constants).
            elements = [self.visit(element) for element in expr.list_expr.elements]
            text = _literal_chars(expr.list_expr.elements)
            self.charge(expr, 1 + LIST_ENTRY * len(elements) + SCAN_PER_CHAR * text)
            return _container(elements, len(elements))
        if kind == "struct_expr":
            parts: list[_Size] = []
            for entry in expr.struct_expr.entries:
                if entry.HasField("map_key"):
                    parts.append(self.visit(entry.map_key))
                parts.append(self.visit(entry.value))
            entries = expr.struct_expr.entries
            keys = [entry.map_key for entry in entries if entry.HasField("map_key")]
            text = _literal_chars([entry.value for entry in entries]) + _literal_chars(keys)
            self.charge(expr, 1 + MAP_ENTRY * len(entries) + SCAN_PER_CHAR * text)
            return _container(parts, len(entries))
        if kind == "comprehension_expr":
            return self._loop(expr)
        return self.input  # unknown node kind: assume the worst

    def _ident(self, name: str) -> _Size:
        stack = self.scopes.get(name)
        if stack:
            return stack[-1]
        if name == self.variable:
            return self.input
        return _SCALAR  # type names such as `int` in `type(x) == int`

    def _part(self, whole: _Size) -> _Size:
        """A field or element of ``whole``: never bigger than it."""
        elems = self.max_elements if whole.dynamic else whole.nodes
        return _Size(whole.nodes, whole.chars, elems, whole.root, whole.dynamic)

    def _loop(self, expr: syntax_pb2.Expr) -> _Size:
        loop = expr.comprehension_expr
        source = self.visit(loop.iter_range)
        self.visit(loop.accu_init)
        iterations = min(source.elems, self.max_elements) if source.dynamic else source.elems
        element = _Size(
            source.nodes,
            source.chars,
            self.max_elements if source.dynamic else source.nodes,
            expr.id,
            source.dynamic,
        )
        self._push(loop.iter_var, element)
        self._push(loop.accu_var, _SCALAR)  # all/exists/exists_one accumulate a bool or int
        self.loops.append(_Loop(expr.id, iterations, max(source.nodes, source.chars)))
        self.visit(loop.loop_condition)
        self.visit(loop.loop_step)
        self.loops.pop()
        self.scopes[loop.iter_var].pop()
        self.visit(loop.result)
        self.scopes[loop.accu_var].pop()
        return _SCALAR

    def _push(self, name: str, size: _Size) -> None:
        self.scopes.setdefault(name, []).append(size)

    def _call(self, expr: syntax_pb2.Expr) -> _Size:
        call = expr.call_expr
        function = call.function
        operands = [call.target] if call.HasField("target") else []
        operands.extend(call.args)
        sizes = [self.visit(operand) for operand in operands]
        self.functions[expr.id] = function
        self.charge(expr, 1)
        reference = self.references.get(expr.id)
        overloads = tuple(reference.overload_id) if reference is not None else ()

        if function in _COMPARISONS and len(sizes) == 2:
            left, right = sizes
            self.charge(expr, COMPARE_PER_ELEMENT)
            self.charge(expr, COMPARE_PER_NESTED_NODE, [_inner(left)], [_inner(right)])
            self.charge(expr, COMPARE_PER_CHAR, [_chars(left)], [_chars(right)])
            return _SCALAR
        if function == "@in" and len(sizes) == 2:
            needle, haystack = sizes
            # Every element is compared with the needle: a scalar comparison each, plus the
            # nested nodes both share (at most all of the list's).
            self.charge(expr, COMPARE_PER_ELEMENT, [_elems(haystack)])
            self.charge(
                expr,
                COMPARE_PER_NESTED_NODE,
                [_elems(haystack), _inner(needle)],
                [_inner(haystack)],
            )
            self.charge(
                expr, COMPARE_PER_CHAR, [_elems(haystack), _chars(needle)], [_chars(haystack)]
            )
            self.charge(expr, HASH_PER_CHAR, [_chars(needle)])
            return _SCALAR
        if function == "_[_]" and len(sizes) == 2:
            self.charge(expr, HASH_PER_CHAR, [_chars(sizes[1])])
            return self._part(sizes[0])
        if function in _PASS_THROUGH and len(sizes) == 1:
            return sizes[0]
        if function == "_?_:_" and len(sizes) == 3:
            return _union(sizes[1], sizes[2])
        if function == "size" and len(sizes) == 1:
            if any(o.startswith(("string_", "bytes_")) or o == "size_string" for o in overloads):
                self.charge(expr, SCAN_PER_CHAR, [self._text(sizes[0])])
            return _SCALAR
        if function == "contains" and len(sizes) == 2:
            text, pattern = (self._text(size) for size in sizes)
            self.charge(expr, SEARCH_PER_CHAR, [text])
            self.charge(expr, SEARCH_PER_CHAR_PAIR, [text, pattern])
            return _SCALAR
        if function in ("startsWith", "endsWith") and len(sizes) == 2:
            text, prefix = (self._text(size) for size in sizes)
            self.charge(expr, COMPARE_PER_CHAR, [text], [prefix])
            return _SCALAR
        if function == "matches" and len(sizes) == 2:
            self._matches(expr, operands[1], self._text(sizes[0]), self._text(sizes[1]))
            return _SCALAR
        if function in _CONVERSIONS:
            for size in sizes:
                self.charge(expr, SCAN_PER_CHAR, [self._text(size)])
            return self._result(expr, sizes)
        if any(o.endswith("_with_tz") for o in overloads) and len(sizes) == 2:
            if operands[1].WhichOneof("expr_kind") != "const_expr":
                self.charge(expr, TIME_ZONE_LOOKUP)
            self.charge(expr, SCAN_PER_CHAR, [self._text(sizes[1])])
            return _SCALAR
        if function not in _CHEAP:
            # Anything else: assume it may walk every string it is given.
            for size in sizes:
                self.charge(expr, SEARCH_PER_CHAR, [_chars(size)])
        return self._result(expr, sizes)

    def _text(self, size: _Size) -> tuple[float, int | None]:
        """The length of ``size`` as one string: a string from the input is capped."""
        return (min(size.chars, self.max_string) if size.dynamic else size.chars, size.root)

    def _matches(
        self,
        expr: syntax_pb2.Expr,
        pattern: syntax_pb2.Expr,
        text: tuple[float, int | None],
        regex: tuple[float, int | None],
    ) -> None:
        # Every call compiles the pattern (a fixed cost, then per instruction), then runs
        # the program over the text: once per iteration of every enclosing macro.
        length, root = text
        self.charge(expr, REGEX_CALL)
        if pattern.WhichOneof("expr_kind") == "const_expr" and pattern.const_expr.HasField(
            "string_value"
        ):
            literal = pattern.const_expr.string_value
            program = float(regex_size(literal))
            self.charge(expr, REGEX_COMPILE_PER_INSTRUCTION * regex_compile_size(literal))
            self.charge(expr, REGEX_PER_CHAR_INSTRUCTION * program, [(length + 1, root)])
            return
        # A pattern from the input may be as large as RE2 allows: its size is the
        # pattern's length times the largest counted repetition.
        program = regex[0] * REGEX_MAX_REPEAT
        self.charge(expr, REGEX_COMPILE_PER_INSTRUCTION, [(program, regex[1])])
        self.charge(expr, REGEX_PER_CHAR_INSTRUCTION * program, [(length + 1, root)])

    def _result(self, expr: syntax_pb2.Expr, sizes: list[_Size]) -> _Size:
        """The size of a function's result, from the type the checker proved."""
        result_type = self.types.get(expr.id)
        kind = result_type.WhichOneof("type_kind") if result_type is not None else None
        if kind == "primitive" and result_type is not None:
            if result_type.primitive in (checked_pb2.Type.STRING, checked_pb2.Type.BYTES):
                # A conversion's text is at most its argument's plus a number's digits.
                return _Size(1, sum(self._text(size)[0] for size in sizes) + 64, 0)
            return _SCALAR
        if kind in ("well_known", "type", "null"):
            return _SCALAR
        return self.input


def _inner(size: _Size) -> tuple[float, int | None]:
    """Nodes beyond the first: what comparing a list or object adds to a scalar's cost."""
    return (max(size.nodes - 1, 0.0), size.root)


def _chars(size: _Size) -> tuple[float, int | None]:
    return (size.chars, size.root)


def _elems(size: _Size) -> tuple[float, int | None]:
    return (size.elems, size.root)


def _constant_size(constant: syntax_pb2.Constant) -> _Size:
    kind = constant.WhichOneof("constant_kind")
    if kind == "string_value":
        return _Size(1, len(constant.string_value), 0)
    if kind == "bytes_value":
        return _Size(1, len(constant.bytes_value), 0)
    return _SCALAR


def _literal_chars(elements: Sequence[syntax_pb2.Expr]) -> int:
    """Characters of the string constants among ``elements``: copied when a literal is built."""
    total = 0
    for element in elements:
        if element.WhichOneof("expr_kind") == "const_expr":
            total += int(_constant_size(element.const_expr).chars)
    return total


def _container(parts: list[_Size], entries: int) -> _Size:
    nodes = 1 + sum(part.nodes for part in parts)
    chars = sum(part.chars for part in parts)
    return _Size(nodes, chars, entries, None, any(part.dynamic for part in parts))


def _union(left: _Size, right: _Size) -> _Size:
    root = left.root if left.root == right.root else None
    return _Size(
        max(left.nodes, right.nodes),
        max(left.chars, right.chars),
        max(left.elems, right.elems),
        root,
        left.dynamic or right.dynamic,
    )
