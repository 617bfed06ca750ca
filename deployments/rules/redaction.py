"""Input paths that are never stored: validation and a precomputed redactor.

A rule set lists dotted paths into its input objects (``customer.email``);
before an execution record is encoded for storage, those keys are removed from
a copy of the input, and the paths actually removed are kept beside it so a
replay or a shadow difference can say what is missing instead of guessing.
Paths name object keys; a list on the way applies the rest of the path to each of
its elements (``orders.card`` removes ``card`` from every order). Django-free:
the data plane calls it on every recorded execution, so the path tree is built
once per set of paths and an input with nothing to remove is not copied.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

MAX_PATHS = 50
MAX_PATH_LENGTH = 200
MAX_DEPTH = 10
# Stored as the removed paths when CANARY_STORE_INPUTS is off: no input at all.
WHOLE_INPUT = "*"


def redaction_paths_errors(value: Any) -> list[str]:
    """What is wrong with a proposed list of paths (empty when it is valid)."""
    if not isinstance(value, list):
        return ["Must be a list of dotted input paths such as 'customer.email'."]
    if len(value) > MAX_PATHS:
        return [f"At most {MAX_PATHS} paths."]
    errors = []
    for index, path in enumerate(value):
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
            errors.append(f"Path {index}: a non-empty string of at most {MAX_PATH_LENGTH} chars.")
            continue
        parts = path.split(".")
        if any(not part or part != part.strip() for part in parts) or len(parts) > MAX_DEPTH:
            errors.append(
                f"Path {index} ('{path}'): dot-separated keys, none empty, "
                f"at most {MAX_DEPTH} deep."
            )
    if not errors and len(set(value)) != len(value):
        errors.append("Paths must not repeat.")
    return errors


@lru_cache(maxsize=1024)
def _tree(paths: tuple[str, ...]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:  # None marks a removed leaf: a longer path under it is moot
                if part in node:
                    break
                child = node[part] = {}
            node = child
        else:
            node[leaf] = None
    return tree


def _remove(value: Any, tree: dict[str, Any], prefix: str, removed: list[str]) -> Any:
    if isinstance(value, list):
        copied = None
        for index, item in enumerate(value):
            inner = _remove(item, tree, prefix, removed)
            if inner is not item:
                copied = copied if copied is not None else list(value)
                copied[index] = inner
        return value if copied is None else copied
    if not isinstance(value, dict):
        return value
    copy = None
    for key, subtree in tree.items():
        if key not in value:
            continue
        if subtree is None:
            copy = copy if copy is not None else dict(value)
            del copy[key]
            removed.append(prefix + key)
            continue
        inner = _remove(value[key], subtree, f"{prefix}{key}.", removed)
        if inner is not value[key]:
            copy = copy if copy is not None else dict(value)
            copy[key] = inner
    return value if copy is None else copy


def redact_input(
    value: Any, paths: tuple[str, ...], *, store_inputs: bool = True
) -> tuple[Any, list[str]]:
    """The input as it may be stored, and the paths removed from it.

    The caller's object is never modified; without any path present it is
    returned as is.
    """
    if not store_inputs:
        return {}, [WHOLE_INPUT]
    if not paths:
        return value, []
    removed: list[str] = []
    stored = _remove(value, _tree(paths), "", removed)
    return stored, list(dict.fromkeys(removed))  # once per path, however many elements


def redaction_note(paths: list[str] | None) -> str:
    """What a reader of a stored execution is told about its missing input."""
    if not paths:
        return ""
    if WHOLE_INPUT in paths:
        return "input not stored (CANARY_STORE_INPUTS is off)"
    return "input redacted: " + ", ".join(paths)
