from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST

from monitoring.prometheus import render_metrics


def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """The scrape endpoint: request metrics of every worker plus canary metrics."""
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
