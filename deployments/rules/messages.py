"""CEL's messages turned into sentences an author can act on."""

from __future__ import annotations

import re
from typing import Any

from cel_expr_python import cel

from deployments.rules.limits import CEL_ITERATION_BUDGET, CEL_MAX_RECURSION_DEPTH
from deployments.rules.types import Evaluation, RuleError

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
    return str(cel_type.name()).lower()


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _failure(rule: str | None, message: str) -> Evaluation:
    return Evaluation(False, None, None, RuleError(rule, message))
