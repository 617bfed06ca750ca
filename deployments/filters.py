import django_filters

from deployments.choices import DeploymentStatus
from deployments.models import Deployment


class DeploymentFilter(django_filters.FilterSet):
    ruleset_id = django_filters.UUIDFilter(field_name="ruleset_id")
    status = django_filters.ChoiceFilter(choices=DeploymentStatus.choices)
    version = django_filters.CharFilter(field_name="version__version")

    class Meta:
        model = Deployment
        fields = ["ruleset_id", "status", "version"]
