"""JSON request bodies that every layer below can store and render.

Python's ``json`` accepts three things the rest of the stack cannot handle:
documents nested past the interpreter's recursion limit (``RecursionError``),
lone UTF-16 surrogates such as ``"\\ud800"`` (a ``str`` that cannot be encoded
to UTF-8, so neither rendered nor stored), and ``"\\u0000"`` (PostgreSQL's
``jsonb`` and ``text`` refuse it). Each is refused here with a 400 naming the
field, before any view or service sees the body.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

MAX_JSON_DEPTH = 64


def json_problem(value: Any) -> tuple[str, str] | None:
    """The first ``(path, message)`` that makes ``value`` unsafe, or None; iterative."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return path, f"nested more than {MAX_JSON_DEPTH} levels deep."
        if isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                return path, problem
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _string_problem(key)
                child_path = f"{path}.{key}" if path else str(key)
                if problem:
                    return path or "non_field_errors", f"key {key!a}: {problem}"
                stack.append((child, child_path, depth + 1))
        elif isinstance(item, list):
            stack.extend(
                (child, f"{path}.{i}" if path else str(i), depth + 1)
                for i, child in enumerate(item)
            )
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "Null characters (\\u0000) are not allowed."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Lone surrogate characters (\\ud800-\\udfff) are not valid Unicode."
    return None


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError(
                f"JSON parse error - the document is nested more than {MAX_JSON_DEPTH} levels deep."
            ) from exc
        found = json_problem(data)
        if found is not None:
            path, message = found
            field, _, inner = path.partition(".")
            messages = [f"{inner}: {message}" if inner else message]
            raise ValidationError({field or "non_field_errors": messages})
        return data
