from canary.api.routers import OptionalSlashRouter
from deployments.api.views import DeploymentViewSet, RuleSetViewSet

router = OptionalSlashRouter()
router.register("rulesets", RuleSetViewSet, basename="ruleset")
router.register("deployments", DeploymentViewSet, basename="deployment")

urlpatterns = router.urls
