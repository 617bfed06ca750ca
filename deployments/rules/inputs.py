"""Input bounds: an input is measured once against the caps before any rule sees it."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployments.rules.limits import EvalLimits, eval_limits
from deployments.rules.messages import _json_kind
from deployments.rules.types import InputBoundsError


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
        remembered: _InputShape = memo[2]
        return remembered
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
                long_key = next(k for k in container if type(k) is str and len(k) > max_string)
                raise InputBoundsError(
                    f"{_input_path(path)} has a key of {len(long_key):,} characters; at most "
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
            key: Any
            for key, child in children:
                child_type = type(child)
                if (
                    child_type is dict
                    or child_type is list
                    or (child_type not in _SCALARS and isinstance(child, Mapping | list | tuple))
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
        return bool(min(values) >= INT_MIN and max(values) <= INT_MAX)
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
