"""The data plane over HTTP: execute and resolve, plus a deployment's assignments.

Plain ``APIView``s rather than viewsets: the hot path keeps DRF's
authentication, parsing and error handling and nothing else.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assignments import selectors, services
from assignments.api.serializers import (
    AssignmentListOutputSerializer,
    AssignmentOutputSerializer,
    ContextQuerySerializer,
    ExecuteInputSerializer,
    ExecuteOutputSerializer,
    ResolveOutputSerializer,
    execute_answer,
    resolve_answer,
)
from assignments.router import RoutingContext
from canary.api.limits import refuse_oversized_body
from canary.api.pagination import PageNumberPagination
from canary.api.permissions import RolePermission
from deployments.api.serializers import validated
from deployments.selectors import deployment_get

CONTEXT_PARAMETERS = [
    OpenApiParameter(name, str, required=False) for name in ("user_id", "session_id", "workflow_id")
]


def _context(data: dict[str, Any]) -> RoutingContext:
    return RoutingContext(
        workflow_id=data.get("workflow_id"),
        session_id=data.get("session_id"),
        user_id=data.get("user_id"),
    )


class ExecuteView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_scope = "dataplane"

    @extend_schema(request=ExecuteInputSerializer, responses=ExecuteOutputSerializer)
    def post(self, request: Request, ruleset_id: str) -> Response:
        refuse_oversized_body(request)
        data = validated(ExecuteInputSerializer, request.data)
        result = services.dataplane_execute(
            ruleset_id=ruleset_id, input=data["input"], context=_context(data)
        )
        response = Response(execute_answer(result))
        response["X-Canary-Version"] = result.resolution.canary_version
        return response


class ResolveView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_scope = "dataplane"

    @extend_schema(parameters=CONTEXT_PARAMETERS, responses=ResolveOutputSerializer)
    def get(self, request: Request, ruleset_id: str) -> Response:
        data = validated(ContextQuerySerializer, request.query_params.dict())
        resolution = services.dataplane_resolve(ruleset_id=ruleset_id, context=_context(data))
        response = Response(resolve_answer(resolution))
        response["X-Canary-Version"] = resolution.canary_version
        return response


class DeploymentAssignmentsView(APIView):
    permission_classes = [RolePermission]
    required_permissions = {"get": "assignments.view_assignment"}
    action = "get"

    @extend_schema(
        parameters=[
            *CONTEXT_PARAMETERS,
            OpenApiParameter("page", int, required=False),
            OpenApiParameter("page_size", int, required=False),
        ],
        responses=AssignmentListOutputSerializer,
    )
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        query = {
            key: value
            for key, value in request.query_params.dict().items()
            if key in ("user_id", "session_id", "workflow_id")
        }
        filters = validated(ContextQuerySerializer, query)
        assignments = selectors.assignment_list(deployment=deployment, **filters)
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(assignments, request, view=self)
        return Response(
            {
                "assignments": AssignmentOutputSerializer(page, many=True).data,
                "total": paginator.page.paginator.count,
            }
        )
