from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        # The rule language imports no Django: it reads its CANARY_* limits from here.
        from django.conf import settings

        from deployments.rules.limits import set_limits_source

        set_limits_source(lambda: settings)
