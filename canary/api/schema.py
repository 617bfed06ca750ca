"""The OpenAPI schema: its views, and every operation documenting the errors it can answer.

drf-spectacular documents only the success response of each operation; the API
answers 400/401/403/404/409/429/503 as well, always as ``{"detail", "code", ...}``
(``canary.api.exceptions``). This hook adds them, so clients and contract
tests (tests/fuzz) know every status code an operation may return.

The schema is YAML (or JSON) and its page HTML, but their errors (a wrong token,
a rate limit, a method not allowed) are JSON like every error under ``/api/``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response


class JSONErrorsMixin:
    """Errors rendered as JSON, whatever the view's own renderers and the ``Accept`` header."""

    def handle_exception(self, exc: Exception) -> Response:
        request = self.request  # type: ignore[attr-defined]
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)  # type: ignore[misc]


class SchemaView(JSONErrorsMixin, SpectacularAPIView):
    pass


class SchemaDocsView(JSONErrorsMixin, SpectacularSwaggerView):
    pass


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Every error. Validation errors (400) also carry one entry per offending field: "
        "a list of messages, or an object of nested fields. A refused lifecycle "
        "transition (409) carries current_status and allowed_actions."
    ),
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "current_status": {"type": "string"},
        "allowed_actions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["detail", "code"],
    "additionalProperties": True,
}

DESCRIPTIONS = {
    "400": "Invalid input: the body names each offending field.",
    "401": "No or unknown token.",
    "403": "The caller's role does not allow this action.",
    "404": "No such object (or no such page).",
    "409": "The current state forbids this action.",
    "429": "Rate limit exceeded (CANARY_THROTTLE_RATES).",
    "503": "A dependency (the database, the task queue) is unreachable; retry after Retry-After.",
}
METHODS = ("get", "put", "post", "patch", "delete")
# Paths whose writes (or reads) depend on the lifecycle state.
CONFLICT_SUFFIXES = ("/execute/", "/resolve/", "/replay/", "/complete/")


def _codes(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    parameters = operation.get("parameters", [])
    in_path = any(p.get("in") == "path" for p in parameters)
    in_query = [p.get("name") for p in parameters if p.get("in") == "query"]
    codes = ["401", "403", "429", "503"]
    if "requestBody" in operation or in_query:
        codes.append("400")
    if in_path or "page" in in_query:
        codes.append("404")
    if (in_path and method != "get" and path.startswith("/api/v1/deployments/")) or path.endswith(
        CONFLICT_SUFFIXES
    ):
        codes.append("409")
    return codes


def add_error_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for code in _codes(path, method, operation):
                responses.setdefault(code, {"description": DESCRIPTIONS[code], "content": content})
    return result
