"""The data plane over HTTP: execute and resolve, a deployment's assignments, client tokens.

Plain ``APIView``s rather than viewsets for the hot path: it keeps DRF's
authentication, parsing and error handling and nothing else. ``resolve`` is the
one endpoint a client token may call (``accepts_client_tokens``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assignments import client_tokens, selectors, services
from assignments.api.authentication import client_grant
from assignments.api.serializers import (
    AssignmentListOutputSerializer,
    AssignmentOutputSerializer,
    ClientTokenCreatedOutputSerializer,
    ClientTokenCreateInputSerializer,
    ClientTokenOutputSerializer,
    ContextQuerySerializer,
    ExecuteInputSerializer,
    ExecuteOutputSerializer,
    ResolveOutputSerializer,
    execute_answer,
    resolve_answer,
)
from assignments.api.throttling import ClientAddressThrottle
from assignments.router import RoutingContext
from canary.api.limits import refuse_oversized_body
from canary.api.pagination import PageNumberPagination
from canary.api.permissions import RolePermission
from canary.api.throttling import ScopedClientThrottle
from canary.login_lockout import client_address
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
    throttle_classes = [ScopedClientThrottle, ClientAddressThrottle]
    throttle_scope = "dataplane"
    accepts_client_tokens = True

    @extend_schema(parameters=CONTEXT_PARAMETERS, responses=ResolveOutputSerializer)
    def get(self, request: Request, ruleset_id: str) -> Response:
        grant = client_grant(request)
        quota_client = None
        if grant is not None:
            client_tokens.client_token_check_scope(grant=grant, ruleset_id=ruleset_id)
            # A public token: its new decisions are bounded per address (docs/durability.md).
            address = client_address(request._request) or "unknown"
            quota_client = f"{grant.token_id}:{address}"
        data = validated(ContextQuerySerializer, request.query_params.dict())
        resolution = services.dataplane_resolve(
            ruleset_id=ruleset_id, context=_context(data), quota_client=quota_client
        )
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


class ClientTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Browser-safe tokens for ``resolve`` (Admin): issue, list, revoke (SPEC §9.5)."""

    serializer_class = ClientTokenOutputSerializer
    permission_classes = [RolePermission]
    required_permissions = {
        "list": "assignments.view_clienttoken",
        "retrieve": "assignments.view_clienttoken",
        "create": "assignments.add_clienttoken",
        "destroy": "assignments.delete_clienttoken",
    }

    def get_queryset(self) -> Any:
        return client_tokens.client_token_list()

    def get_object(self) -> Any:
        return client_tokens.client_token_get(token_id=self.kwargs["pk"])

    @extend_schema(
        request=ClientTokenCreateInputSerializer,
        responses={201: ClientTokenCreatedOutputSerializer},
    )
    def create(self, request: Request) -> Response:
        data = validated(ClientTokenCreateInputSerializer, request.data)
        created, token = client_tokens.client_token_create(actor=request.user, **data)
        created = client_tokens.client_token_get(token_id=created.pk)
        body = ClientTokenCreatedOutputSerializer(created, context={"token": token}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, pk: str) -> Response:
        client_tokens.client_token_revoke(token_id=pk, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
