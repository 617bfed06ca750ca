"""Django's own error pages, as JSON under /api/: errors raised before DRF sees the request.

A URL that matches no route (``/api/v1/deployments/0.5/events``), a request
Django itself refuses (too many form fields, a body past
DATA_UPLOAD_MAX_MEMORY_SIZE) and an unhandled exception never reach DRF's
exception handler, so Django would answer with an HTML page.
"""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from canary.api.exceptions import database_unavailable


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        body = {"detail": "The request is malformed.", "code": "bad_request"}
        return JsonResponse(body, status=400)
    return defaults.bad_request(request, exception)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse(
            {"detail": f"No endpoint or object at {request.path}.", "code": "not_found"}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        # NOTE: Django calls this while handling the exception, so it is at hand: the
        # database unreachable in a middleware (CORS looks up client tokens) is a 503.
        unavailable = database_unavailable(sys.exc_info()[1])
        if unavailable is not None:
            response = JsonResponse(unavailable.as_dict(), status=unavailable.status_code)
            response["Retry-After"] = str(unavailable.retry_after)
            return response
        body = {"detail": "Internal server error.", "code": "server_error"}
        return JsonResponse(body, status=500)
    return defaults.server_error(request)
