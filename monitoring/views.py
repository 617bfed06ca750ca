import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST

from monitoring.prometheus import render_metrics


def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """The scrape endpoint: request metrics of every worker plus canary metrics.

    Open when ``CANARY_METRICS_TOKEN`` is unset (expose it only inside the
    network); when set, a scrape must send ``Authorization: Bearer <token>``.
    """
    token = settings.CANARY_METRICS_TOKEN
    if token and not _bearer_matches(request, token):
        response = JsonResponse(
            {
                "detail": "Send Authorization: Bearer <CANARY_METRICS_TOKEN> to read metrics.",
                "code": "not_authenticated",
            },
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # NOTE: constant-time comparison, so the answer time says nothing about the token.
    return hmac.compare_digest(given.strip().encode(), token.encode())
