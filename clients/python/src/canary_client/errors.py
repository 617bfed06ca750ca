"""What a failed call raises: the answer's ``code``, ``detail`` and per-field messages."""

from __future__ import annotations

from typing import Any


class CanaryError(Exception):
    """Anything the client could not do."""


class CanaryUnreachable(CanaryError):
    """The server could not be reached (connection refused, DNS, timeouts), retries spent."""


class CanaryHTTPError(CanaryError):
    """The server answered with an error status.

    ``fields``: the per-field messages of a validation error (``{"version": [...]}``),
    everything in the body but ``detail`` and ``code``.
    """

    def __init__(
        self, status_code: int, body: Any, method: str = "", url: str = "", *, attempts: int = 1
    ) -> None:
        self.status_code = status_code
        self.attempts = attempts  # more than one: an earlier attempt may have landed
        self.body = body
        self.method = method
        self.url = url
        document = body if isinstance(body, dict) else {}
        detail = document.get("detail") or document.get("errorDetails")
        self.detail: str = str(detail) if detail is not None else _text(body, status_code)
        self.code: str | None = document.get("code") or document.get("errorCode")
        self.fields: dict[str, Any] = {
            key: value for key, value in document.items() if key not in ("detail", "code")
        }
        super().__init__(f"{status_code} {self.code or ''}: {self.detail}".replace("  ", " "))

    @property
    def is_client_error(self) -> bool:
        return 400 <= self.status_code < 500


def _text(body: Any, status_code: int) -> str:
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return f"HTTP {status_code}"
