"""Turns every error into JSON ``{"detail", "code", ...}``; field errors stay keyed by field."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from canary.errors import DomainError, _summarise


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        response = Response(exc.as_dict(), status=exc.status_code)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            response["Retry-After"] = str(retry_after)
        return response

    response = drf_exception_handler(exc, context)
    if response is None:
        return None

    if isinstance(exc, exceptions.ValidationError):
        errors = response.data
        if isinstance(errors, list):
            errors = {"non_field_errors": errors}
        response.data = {
            **errors,
            "detail": _summarise(errors) or "Invalid input.",
            "code": "invalid",
        }
        response.status_code = status.HTTP_400_BAD_REQUEST
        return response

    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {
            "detail": response.data.get("detail", str(exc))
            if isinstance(response.data, dict)
            else str(exc),
            "code": codes if isinstance(codes, str) else exc.default_code,
        }
    return response
