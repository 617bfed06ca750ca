"""Turns every error into JSON ``{"detail", "code", ...}``; field errors stay keyed by field."""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from canary.errors import DomainError, ServiceUnavailable, _summarise

logger = logging.getLogger(__name__)

# How long a client should wait after the database was unreachable.
DATABASE_RETRY_AFTER_SECONDS = 5


def database_unavailable(exc: BaseException | None) -> ServiceUnavailable | None:
    """The 503 for an error that says the database cannot be reached (or lost the
    connection, or cancelled the statement), else None.

    DB-API's ``OperationalError`` and ``InterfaceError`` are failures of the
    database's operation, not of the request: a process that has not loaded a
    rule set or seen a token yet cannot answer while PostgreSQL is down, and says
    so with a 503 and ``Retry-After`` rather than a 500. Other database errors
    (an integrity or programming error) stay 500s.
    """
    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    return ServiceUnavailable(
        "The database is unreachable; nothing was done. Try again shortly.",
        retry_after=DATABASE_RETRY_AFTER_SECONDS,
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    unavailable = database_unavailable(exc)
    if unavailable is not None:
        logger.warning("database unavailable (%s); answered 503", exc)
        set_rollback()
        exc = unavailable
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
