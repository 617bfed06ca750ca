"""Measurement endpoints of a deployment: metrics, comparison, health."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary.api.permissions import RolePermission
from canary.api.serializers import StrictInputSerializer
from deployments.api.serializers import validated
from deployments.selectors import deployment_get
from monitoring import health

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
    @extend_schema(parameters=[WINDOW_PARAMETER], responses=dict)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        query = validated(WindowQuerySerializer, request.query_params.dict())
        return Response(
            health.deployment_metrics(
                deployment=deployment, window_minutes=query.get("window_minutes")
            )
        )


class DeploymentComparisonView(_DeploymentReadView):
    @extend_schema(parameters=[WINDOW_PARAMETER], responses=dict)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        query = validated(WindowQuerySerializer, request.query_params.dict())
        return Response(
            health.deployment_comparison(
                deployment=deployment, window_minutes=query.get("window_minutes")
            )
        )


class DeploymentHealthView(_DeploymentReadView):
    @extend_schema(responses=dict)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        return Response(health.deployment_health(deployment=deployment))
