from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from assignments import buffer
        from assignments.hooks import hooks
        from assignments.sticky import EXECUTION_STREAM
        from deployments.hooks import hooks as promotion_hooks
        from deployments.signals import (
            deployment_transitioned,
            deployment_transitioning,
            promotion_approval_recorded,
        )
        from monitoring import receivers
        from monitoring.decision import readiness as promotion_readiness
        from monitoring.recording import breaker, captures, executions

        # The data plane records executions and asks the breaker through these seams.
        hooks.record_execution = executions.execution_record
        hooks.observe_execution = executions.execution_observe
        hooks.breaker_gate = breaker.breaker_gate
        hooks.breaker_claim_trial = breaker.breaker_claim_trial
        hooks.record_capture = captures.capture_record
        buffer.register_sink(EXECUTION_STREAM, executions.execution_write_batch)
        deployment_transitioning.connect(
            receivers.flag_executions_for_compensation,
            dispatch_uid="monitoring.flag_for_compensation",
        )
        deployment_transitioned.connect(
            receivers.after_rollback, dispatch_uid="monitoring.after_rollback"
        )
        # Release governance (SPEC 9.3): the promote gate judges with monitoring's evidence.
        promotion_hooks.readiness = promotion_readiness.readiness_gate
        promotion_hooks.settle = promotion_readiness.settle
        # Before the start (SPEC 10.2): start-canary's preflight gate.
        from monitoring.automation import preflight

        promotion_hooks.preflight = preflight.preflight_gate
        promotion_approval_recorded.connect(
            receivers.after_approval, dispatch_uid="monitoring.after_approval"
        )
        # Webhooks and gates (SPEC 10.4): deliveries written with each event; gates asked.
        from deployments.hooks import release_hooks
        from monitoring.notifications import gates, webhooks

        release_hooks.event_recorded = webhooks.deployment_event_announce
        release_hooks.ask_gate = gates.gate_ask
        from monitoring import (
            admin,  # noqa: F401 (registers the admin's measurement panels)
            admin_backtests,  # noqa: F401 (the draft page's preflight panel)
        )
