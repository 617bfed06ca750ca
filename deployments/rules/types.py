"""The rule language's public types: compile errors, input errors and an evaluation's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
