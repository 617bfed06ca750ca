from django.apps import AppConfig


class AssignmentsConfig(AppConfig):
    name = "assignments"
    verbose_name = "Assignments"

    def ready(self) -> None:
        from assignments import buffer, receivers, services, sticky
        from deployments.signals import (
            deployment_transitioned,
            deployment_transitioning,
            ruleset_routing_changed,
        )

        deployment_transitioning.connect(
            receivers.follow_transition, dispatch_uid="assignments.follow_transition"
        )
        deployment_transitioned.connect(
            receivers.announce_generation, dispatch_uid="assignments.announce_generation"
        )
        ruleset_routing_changed.connect(
            receivers.announce_ruleset_generation, dispatch_uid="assignments.announce_ruleset"
        )
        buffer.register_sink(sticky.ASSIGNMENT_STREAM, services.assignments_write_batch)

        # The fast path accepts tokens vouched for by Redis; revocation removes them.
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save
        from knox.models import AuthToken

        from canary.api import signals

        post_delete.connect(
            signals.token_deleted, sender=AuthToken, dispatch_uid="canary.token_gone"
        )
        post_save.connect(signals.user_saved, sender=get_user_model(), dispatch_uid="canary.user")

        # CORS on resolve, decided per request by client tokens' origins.
        from corsheaders.signals import check_request_enabled

        from assignments.cors import resolve_cors_allowed

        check_request_enabled.connect(resolve_cors_allowed, dispatch_uid="assignments.cors")
