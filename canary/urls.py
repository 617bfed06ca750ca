from django.contrib import admin
from django.urls import include, path

from canary.api.schema import SchemaDocsView, SchemaView
from canary.health import healthz, readyz
from monitoring.views import prometheus_metrics

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("deployments.api.urls")),
    path("api/v1/", include("assignments.api.urls")),
    path("api/v1/", include("monitoring.api.urls")),
    # OpenFeature's remote evaluation protocol (SPEC 10.5), beside the data plane.
    path("ofrep/v1/", include("assignments.api.ofrep_urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", SchemaDocsView.as_view(url_name="schema"), name="api-docs"),
    path("metrics", prometheus_metrics, name="prometheus-metrics"),
    # The React package's demo; answers 404 unless CANARY_DEMO (on with DEBUG).
    path("demo/", include("assignments.demo.urls")),
]

handler400 = "canary.api.error_views.bad_request"
handler404 = "canary.api.error_views.not_found"
handler500 = "canary.api.error_views.server_error"
