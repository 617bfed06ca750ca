from django.apps import AppConfig


class AssignmentsConfig(AppConfig):
    name = "assignments"
    verbose_name = "Assignments"

    def ready(self) -> None:
        from assignments import receivers
        from deployments.signals import deployment_transitioned, deployment_transitioning

        deployment_transitioning.connect(
            receivers.follow_transition, dispatch_uid="assignments.follow_transition"
        )
        deployment_transitioned.connect(
            receivers.refresh_routing_state, dispatch_uid="assignments.refresh_routing"
        )
