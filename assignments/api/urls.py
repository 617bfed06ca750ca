from django.urls import re_path

from assignments.api.views import (
    ClientTokenViewSet,
    DeploymentAssignmentsView,
    ExecuteView,
    ResolveView,
)
from canary.api.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("client-tokens", ClientTokenViewSet, basename="client-token")

urlpatterns = [
    re_path(r"^rulesets/(?P<ruleset_id>[^/]+)/execute/?$", ExecuteView.as_view(), name="execute"),
    re_path(r"^rulesets/(?P<ruleset_id>[^/]+)/resolve/?$", ResolveView.as_view(), name="resolve"),
    re_path(
        r"^deployments/(?P<deployment_id>[^/]+)/assignments/?$",
        DeploymentAssignmentsView.as_view(),
        name="deployment-assignments",
    ),
    *router.urls,
]
