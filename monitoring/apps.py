from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from assignments.hooks import hooks
        from deployments.signals import deployment_transitioned, deployment_transitioning
        from monitoring import receivers, services

        # The data plane records executions and asks the breaker through these seams.
        hooks.record_execution = services.execution_record
        hooks.breaker_gate = services.breaker_gate
        hooks.breaker_claim_trial = services.breaker_claim_trial
        deployment_transitioning.connect(
            receivers.flag_executions_for_compensation,
            dispatch_uid="monitoring.flag_for_compensation",
        )
        deployment_transitioned.connect(
            receivers.after_rollback, dispatch_uid="monitoring.after_rollback"
        )
        from monitoring import admin  # noqa: F401 (registers the admin's measurement panels)
