from django.urls import re_path

from monitoring.api.views import (
    DeploymentComparisonView,
    DeploymentHealthView,
    DeploymentMetricsView,
)

urlpatterns = [
    re_path(r"^deployments/(?P<deployment_id>[^/]+)/metrics/?$", DeploymentMetricsView.as_view()),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/comparison/?$", DeploymentComparisonView.as_view()
    ),
    re_path(r"^deployments/(?P<deployment_id>[^/]+)/health/?$", DeploymentHealthView.as_view()),
]
