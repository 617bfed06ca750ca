from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        # The rule language imports no Django: it reads its CANARY_* limits from here.
        from django.conf import settings
        from django.core.signals import setting_changed

        from deployments.rules.limits import set_limits_source

        set_limits_source(lambda: settings)
        setting_changed.connect(_forget_limits, dispatch_uid="deployments.forget_limits")


def _forget_limits(*, setting: str, **_: object) -> None:
    if setting.startswith("CANARY_"):
        from deployments.rules.limits import forget_limits

        forget_limits()
