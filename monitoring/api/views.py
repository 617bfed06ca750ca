"""Measurement endpoints of a deployment: metrics, comparison, health."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary.api.pagination import PageNumberPagination, counted_pagination
from canary.api.permissions import RolePermission
from canary.api.serializers import StrictInputSerializer
from deployments import services as lifecycle
from deployments.api.serializers import DeploymentOutputSerializer, validated
from deployments.rules.redaction import redaction_note
from deployments.selectors import deployment_get
from monitoring.api.serializers import (
    ComparisonOutputSerializer,
    CompensationOutputSerializer,
    CompensationReplayOutputSerializer,
    HealthOutputSerializer,
    MetricsOutputSerializer,
    ReadinessOutputSerializer,
    SchedulerJobsOutputSerializer,
    ShadowDifferencesOutputSerializer,
    ShadowOutputSerializer,
)
from monitoring.automation import compensation
from monitoring.automation.compensation import compensation_replay_enqueue
from monitoring.automation.regressions import regression_dismiss
from monitoring.automation.scheduler import scheduler_jobs
from monitoring.decision import health
from monitoring.decision import readiness as promotion_readiness

WINDOW_PARAMETER = OpenApiParameter(
    "window_minutes", int, required=False, description="Default: the whole canary."
)


class WindowQuerySerializer(StrictInputSerializer):
    window_minutes = serializers.IntegerField(min_value=1, max_value=60 * 24 * 90, required=False)


class _DeploymentReadView(APIView):
    permission_classes = [RolePermission]
    required_permissions = {"get": "deployments.view_deployment"}
    action = "get"


class DeploymentMetricsView(_DeploymentReadView):
    @extend_schema(parameters=[WINDOW_PARAMETER], responses=MetricsOutputSerializer)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        query = validated(WindowQuerySerializer, request.query_params.dict())
        return Response(
            health.deployment_metrics(
                deployment=deployment, window_minutes=query.get("window_minutes")
            )
        )


class DeploymentComparisonView(_DeploymentReadView):
    @extend_schema(parameters=[WINDOW_PARAMETER], responses=ComparisonOutputSerializer)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        query = validated(WindowQuerySerializer, request.query_params.dict())
        return Response(
            health.deployment_comparison(
                deployment=deployment, window_minutes=query.get("window_minutes")
            )
        )


class DeploymentHealthView(_DeploymentReadView):
    @extend_schema(responses=HealthOutputSerializer)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        return Response(health.deployment_health(deployment=deployment))


class DeploymentShadowView(_DeploymentReadView):
    """Paired evaluation: v2 beside v1 on the same inputs (SPEC 9.1)."""

    @extend_schema(parameters=[WINDOW_PARAMETER], responses=ShadowOutputSerializer)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        query = validated(WindowQuerySerializer, request.query_params.dict())
        return Response(
            health.deployment_shadow(
                deployment=deployment, window_minutes=query.get("window_minutes")
            )
        )


class ShadowDifferencesQuerySerializer(WindowQuerySerializer):
    page = serializers.IntegerField(min_value=1, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=1000, required=False)


class DeploymentShadowDifferencesView(_DeploymentReadView):
    """The inputs on which the versions disagreed, newest first."""

    @extend_schema(
        parameters=[
            WINDOW_PARAMETER,
            OpenApiParameter("page", int, required=False),
            OpenApiParameter("page_size", int, required=False),
        ],
        responses=ShadowDifferencesOutputSerializer,
    )
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        query = validated(ShadowDifferencesQuerySerializer, request.query_params.dict())
        differences, total = health.shadow_differences_page(
            deployment=deployment, window_minutes=query.get("window_minutes")
        )
        paginator = counted_pagination(total)
        page = paginator.paginate_queryset(differences, request, view=self)
        return Response(
            {
                "total": paginator.page.paginator.count,
                "page": paginator.page.number,
                "page_size": paginator.get_page_size(request),
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "results": [
                    {
                        "execution_id": log.id,
                        "executed_at": log.created_at,
                        "served_version": log.served_version,
                        "input": log.input,
                        "redacted_paths": log.redacted_paths or [],
                        "redaction": redaction_note(log.redacted_paths),
                        "v1_output": log.v1_output,
                        "v2_output": log.v2_output,
                        "v1_rule": log.v1_rule or None,
                        "v2_rule": log.v2_rule or None,
                        "v1_success": log.v1_success,
                        "v2_success": log.v2_success,
                    }
                    for log in page
                ],
            }
        )


class DeploymentReadinessView(_DeploymentReadView):
    """The guide's pre-promote checklist, each check with what was observed and why."""

    @extend_schema(responses=ReadinessOutputSerializer)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        return Response(promotion_readiness.deployment_readiness(deployment=deployment))


class CompensationView(_DeploymentReadView):
    """The compensation state and the executions whose decision v1 would have made differently."""

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, required=False),
            OpenApiParameter("page_size", int, required=False),
        ],
        responses=CompensationOutputSerializer,
    )
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(
            compensation.compensation_differences(deployment=deployment), request, view=self
        )
        return Response(
            {
                **compensation.compensation_summary(deployment=deployment),
                "differences": [
                    {
                        "execution_id": log.id,
                        "executed_at": log.created_at,
                        "user_id": log.user_id or None,
                        "session_id": log.session_id or None,
                        "workflow_id": log.workflow_id or None,
                        "input": log.input,
                        "redacted_paths": log.redacted_paths or [],
                        "redaction": redaction_note(log.redacted_paths),
                        "v2_success": log.success,
                        "v2_output": log.output,
                        "v1_success": log.replay_success,
                        "v1_output": log.replay_output,
                    }
                    for log in page
                ],
                "total_differences": paginator.page.paginator.count,
            }
        )


class _CompensationActionView(APIView):
    permission_classes = [RolePermission]
    required_permissions = {"post": "deployments.change_deployment"}
    action = "post"


class CompensationCompleteView(_CompensationActionView):
    @extend_schema(request=None, responses=DeploymentOutputSerializer)
    def post(self, request: Request, deployment_id: str) -> Response:
        deployment_get(deployment_id=deployment_id)
        deployment = lifecycle.deployment_compensation_complete(
            deployment_id=deployment_id, actor=request.user
        )
        return Response(
            DeploymentOutputSerializer(deployment_get(deployment_id=deployment.pk)).data
        )


class CompensationReplayView(_CompensationActionView):
    @extend_schema(request=None, responses={202: CompensationReplayOutputSerializer})
    def post(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        summary = compensation_replay_enqueue(deployment=deployment)
        return Response({**summary, "replay": "queued"}, status=status.HTTP_202_ACCEPTED)


class DismissRegressionInputSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=lifecycle.MAX_REASON, allow_blank=False)


class DismissRegressionOutputSerializer(serializers.Serializer):
    deployment_id = serializers.UUIDField()
    status = serializers.CharField()
    dismissed = serializers.DictField()
    event_id = serializers.IntegerField()


class DismissRegressionView(_CompensationActionView):
    """An approver dismisses a regression the monitor holds (SPEC 9.6), with a reason."""

    @extend_schema(
        request=DismissRegressionInputSerializer, responses=DismissRegressionOutputSerializer
    )
    def post(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        body = validated(DismissRegressionInputSerializer, request.data)
        return Response(
            regression_dismiss(
                deployment_id=deployment.pk, reason=body["reason"], actor=request.user
            )
        )


class SchedulerJobsView(APIView):
    """Every periodic job and whether a worker ran it recently ("is auto-rollback running?")."""

    permission_classes = [RolePermission]
    required_permissions = {"get": "django_celery_beat.view_periodictask"}
    action = "get"

    @extend_schema(responses=SchedulerJobsOutputSerializer)
    def get(self, request: Request) -> Response:
        jobs = scheduler_jobs()
        return Response({"jobs": jobs, "total": len(jobs)})
