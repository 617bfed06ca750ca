"""The one exception family for domain errors; the API handler maps each to HTTP."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A business rule refused the request; ``status_code`` is how HTTP reports it."""

    status_code = 400
    code = "error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code, **self.extra}


class ValidationFailed(DomainError):
    """Input that a service rejected; ``field_errors`` name the offending fields."""

    status_code = 400
    code = "invalid"

    def __init__(self, field_errors: dict[str, Any], detail: str | None = None) -> None:
        super().__init__(detail or _summarise(field_errors))
        self.field_errors = field_errors

    def as_dict(self) -> dict[str, Any]:
        return {**self.field_errors, "detail": self.detail, "code": self.code}


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    """The request is valid but the current state forbids it."""

    status_code = 409
    code = "conflict"


class NotReady(Conflict):
    """Promote refused: ``canary_config.enforce_readiness`` is on and a required check fails.

    ``checks`` carries the whole checklist so the caller sees what to wait for.
    """

    code = "not_ready"


class AlreadyApproved(Conflict):
    """The same person pressed promote twice: four eyes need a second pair."""

    code = "already_approved"


class GateClosed(Conflict):
    """An outside system (``canary_config.gates``) did not say yes to this action.

    ``gate`` is the gate's ``{type, url}``, ``status_code`` its answer (None when it
    could not be reached: an unreachable gate is closed).
    """

    code = "gate_closed"

    def __init__(
        self, detail: str, *, gate: dict[str, Any], status_code: int | None, **extra: Any
    ) -> None:
        super().__init__(detail, gate=gate, status_code=status_code, **extra)
        self.gate = gate
        self.status_code_answered = status_code


class TrafficJump(Conflict):
    """A manual traffic raise larger than ``canary_config.max_traffic_jump`` without a reason."""

    code = "traffic_jump"


class ServiceUnavailable(DomainError):
    """A dependency (the task queue) is unreachable; nothing changed, try again later."""

    status_code = 503
    code = "unavailable"

    def __init__(self, detail: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class InvalidTransition(Conflict):
    code = "invalid_transition"

    def __init__(self, detail: str, *, current_status: str, allowed_actions: list[str]) -> None:
        super().__init__(detail, current_status=current_status, allowed_actions=allowed_actions)
        self.current_status = current_status
        self.allowed_actions = allowed_actions


def _summarise(field_errors: dict[str, Any], prefix: str = "") -> str:
    """Flatten nested field errors into one readable sentence for ``detail``."""
    parts: list[str] = []
    for field, errors in field_errors.items():
        path = f"{prefix}{field}"
        if isinstance(errors, dict):
            parts.append(_summarise(errors, prefix=f"{path}."))
        elif isinstance(errors, list | tuple):
            parts.extend(f"{path}: {error}" for error in errors)
        else:
            parts.append(f"{path}: {errors}")
    return "; ".join(parts)
