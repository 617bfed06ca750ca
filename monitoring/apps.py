from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from assignments.hooks import hooks
        from monitoring import services

        # The data plane records every canary execution through this seam.
        hooks.record_execution = services.execution_record
