"""Thin views: validate input, call one service or selector, serialize the result."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from canary.api.limits import refuse_oversized_body
from canary.api.permissions import RolePermission
from canary.roles import TEST_RULESETVERSION
from deployments import selectors, services
from deployments.api.serializers import (
    DeploymentCreateInputSerializer,
    DeploymentEventOutputSerializer,
    DeploymentOutputSerializer,
    DeploymentUpdateInputSerializer,
    DeprecateInputSerializer,
    PauseInputSerializer,
    PlanOutputSerializer,
    PromoteInputSerializer,
    PromotionPendingOutputSerializer,
    ResumeInputSerializer,
    RollbackInputSerializer,
    RuleSetCreateInputSerializer,
    RuleSetOutputSerializer,
    RuleSetTestInputSerializer,
    RuleSetTestOutputSerializer,
    RuleSetUpdateInputSerializer,
    RuleSetVersionCreateInputSerializer,
    RuleSetVersionOutputSerializer,
    StartCanaryInputSerializer,
    TestCaseCreateInputSerializer,
    TestCaseOutputSerializer,
    TestCaseRunInputSerializer,
    TestCaseRunOutputSerializer,
    TrafficInputSerializer,
    validated,
)
from deployments.filters import DeploymentFilter

VIEW_DEPLOYMENT = "deployments.view_deployment"
CHANGE_DEPLOYMENT = "deployments.change_deployment"


class RuleSetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = RuleSetOutputSerializer
    permission_classes = [RolePermission]
    required_permissions = {
        "list": "deployments.view_ruleset",
        "retrieve": "deployments.view_ruleset",
        "create": "deployments.add_ruleset",
        "partial_update": "deployments.change_ruleset",
        "versions": "deployments.view_rulesetversion",
        "create_version": "deployments.add_rulesetversion",
        "test": TEST_RULESETVERSION,
        # Test cases (SPEC 10.2): Viewers read them, Approvers keep and run them.
        "test_cases": "deployments.view_ruleset",
        "create_test_case": TEST_RULESETVERSION,
        "delete_test_case": TEST_RULESETVERSION,
        "run_test_cases": TEST_RULESETVERSION,
    }

    def get_queryset(self) -> Any:
        return selectors.ruleset_list()

    def get_object(self) -> Any:
        ruleset = selectors.ruleset_get(ruleset_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, ruleset)
        return ruleset

    @extend_schema(request=RuleSetCreateInputSerializer, responses={201: RuleSetOutputSerializer})
    def create(self, request: Request) -> Response:
        data = validated(RuleSetCreateInputSerializer, request.data)
        ruleset = services.ruleset_create(actor=request.user, **data)
        return Response(RuleSetOutputSerializer(ruleset).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=RuleSetUpdateInputSerializer, responses={200: RuleSetOutputSerializer})
    def partial_update(self, request: Request, pk: str) -> Response:
        ruleset = self.get_object()
        data = validated(RuleSetUpdateInputSerializer, request.data)
        ruleset = services.ruleset_update(ruleset_id=ruleset.pk, actor=request.user, **data)
        return Response(RuleSetOutputSerializer(ruleset).data)

    @extend_schema(responses=RuleSetVersionOutputSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, pk: str) -> Response:
        ruleset = self.get_object()
        page = self.paginate_queryset(selectors.ruleset_version_list(ruleset=ruleset))
        return self.get_paginated_response(RuleSetVersionOutputSerializer(page, many=True).data)

    @extend_schema(
        request=RuleSetVersionCreateInputSerializer,
        responses={201: RuleSetVersionOutputSerializer},
    )
    @versions.mapping.post
    def create_version(self, request: Request, pk: str) -> Response:
        ruleset = self.get_object()
        data = validated(RuleSetVersionCreateInputSerializer, request.data)
        version = services.ruleset_version_create(ruleset=ruleset, actor=request.user, **data)
        return Response(
            RuleSetVersionOutputSerializer(version).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=RuleSetTestInputSerializer, responses=RuleSetTestOutputSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        refuse_oversized_body(request)
        ruleset = self.get_object()
        data = validated(RuleSetTestInputSerializer, request.data)
        result = services.ruleset_test(ruleset=ruleset, **data)
        return Response(RuleSetTestOutputSerializer(result).data)

    @extend_schema(responses=TestCaseOutputSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="test-cases")
    def test_cases(self, request: Request, pk: str) -> Response:
        ruleset = self.get_object()
        page = self.paginate_queryset(selectors.ruleset_test_case_list(ruleset=ruleset))
        return self.get_paginated_response(TestCaseOutputSerializer(page, many=True).data)

    @extend_schema(request=TestCaseCreateInputSerializer, responses={201: TestCaseOutputSerializer})
    @test_cases.mapping.post
    def create_test_case(self, request: Request, pk: str) -> Response:
        refuse_oversized_body(request)
        ruleset = self.get_object()
        data = validated(TestCaseCreateInputSerializer, request.data)
        case = services.ruleset_case_create(ruleset=ruleset, actor=request.user, **data)
        return Response(TestCaseOutputSerializer(case).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"test-cases/(?P<case_id>[0-9]+)",
        url_name="test-case",
    )
    def delete_test_case(self, request: Request, pk: str, case_id: str) -> Response:
        ruleset = self.get_object()
        services.ruleset_case_delete(ruleset=ruleset, case_id=int(case_id), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=TestCaseRunInputSerializer, responses=TestCaseRunOutputSerializer)
    @action(detail=True, methods=["post"], url_path="test-cases/run")
    def run_test_cases(self, request: Request, pk: str) -> Response:
        ruleset = self.get_object()
        data = validated(TestCaseRunInputSerializer, request.data)
        report = services.ruleset_cases_run(ruleset=ruleset, version=data["version"])
        return Response(TestCaseRunOutputSerializer(report).data)


class DeploymentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = DeploymentOutputSerializer
    filterset_class = DeploymentFilter
    permission_classes = [RolePermission]
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]
    required_permissions = {
        "list": VIEW_DEPLOYMENT,
        "retrieve": VIEW_DEPLOYMENT,
        "events": VIEW_DEPLOYMENT,
        "create": "deployments.add_deployment",
        "partial_update": CHANGE_DEPLOYMENT,
        "start_canary": CHANGE_DEPLOYMENT,
        "traffic": CHANGE_DEPLOYMENT,
        "promote": CHANGE_DEPLOYMENT,
        "rollback": CHANGE_DEPLOYMENT,
        "deprecate": CHANGE_DEPLOYMENT,
        "plan": VIEW_DEPLOYMENT,
        "pause": CHANGE_DEPLOYMENT,
        "resume": CHANGE_DEPLOYMENT,
        "destroy": "deployments.delete_deployment",
    }

    def get_queryset(self) -> Any:
        return selectors.deployment_list()

    def get_object(self) -> Any:
        deployment = selectors.deployment_get(deployment_id=self.kwargs["pk"])
        self.check_object_permissions(self.request, deployment)
        return deployment

    @staticmethod
    def _expected_status(data: dict[str, Any], seen: Any) -> str:
        """The status the caller named, else the one this request read: compare-and-set."""
        return data.pop("expected_status", None) or seen.status

    def _respond(self, deployment: Any, code: int = status.HTTP_200_OK) -> Response:
        fresh = selectors.deployment_get(deployment_id=deployment.pk)
        return Response(DeploymentOutputSerializer(fresh).data, status=code)

    @extend_schema(
        request=DeploymentCreateInputSerializer, responses={201: DeploymentOutputSerializer}
    )
    def create(self, request: Request) -> Response:
        data = validated(DeploymentCreateInputSerializer, request.data)
        if data.get("canary_config") is None:
            data.pop("canary_config", None)
        deployment = services.deployment_create(actor=request.user, **data)
        return self._respond(deployment, status.HTTP_201_CREATED)

    @extend_schema(request=DeploymentUpdateInputSerializer, responses=DeploymentOutputSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(DeploymentUpdateInputSerializer, request.data)
        deployment = services.deployment_update(
            deployment_id=pk, actor=request.user, expected_status=seen.status, **data
        )
        return self._respond(deployment)

    def destroy(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        services.deployment_delete(
            deployment_id=pk, actor=request.user, expected_status=seen.status
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=StartCanaryInputSerializer, responses=DeploymentOutputSerializer)
    @action(detail=True, methods=["post"], url_path="start-canary")
    def start_canary(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(StartCanaryInputSerializer, request.data)
        target_filter = data.get("canary_target_filter")
        deployment = services.deployment_start_canary(
            deployment_id=pk,
            actor=request.user,
            canary_pct=data.get("canary_pct"),
            canary_target_filter=dict(target_filter) if target_filter else None,
            expected_status=self._expected_status(data, seen),
            override_reason=data.get("override_reason"),
        )
        return self._respond(deployment)

    @extend_schema(request=TrafficInputSerializer, responses=DeploymentOutputSerializer)
    @action(detail=True, methods=["put"])
    def traffic(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(TrafficInputSerializer, request.data)
        expected_status = self._expected_status(data, seen)
        deployment = services.deployment_set_traffic(
            deployment_id=pk, actor=request.user, expected_status=expected_status, **data
        )
        return self._respond(deployment)

    @extend_schema(
        request=PromoteInputSerializer,
        responses={200: DeploymentOutputSerializer, 202: PromotionPendingOutputSerializer},
        description=(
            "Promote to 100%. With canary_config.required_approvals > 1 each approver's call "
            "records an approval (202) until the last one promotes (200); the same approver "
            "twice is 409 already_approved. With enforce_readiness an unready canary is 409 "
            "not_ready (with the checks) unless override_reason is given."
        ),
    )
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(PromoteInputSerializer, request.data)
        outcome = services.deployment_promote_or_approve(
            deployment_id=pk,
            actor=request.user,
            expected_status=self._expected_status(data, seen),
            override_reason=data.get("override_reason"),
        )
        if outcome.promoted:
            return self._respond(outcome.deployment)
        pending = {
            "deployment_id": outcome.deployment.pk,
            "status": outcome.deployment.status,
            "approvals": outcome.approvals,
            "required_approvals": outcome.required_approvals,
            "approved_by": list(outcome.approved_by),
            "detail": f"Approval recorded ({outcome.approvals} of {outcome.required_approvals});"
            " another approver's promote completes it.",
        }
        return Response(
            PromotionPendingOutputSerializer(pending).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(request=RollbackInputSerializer, responses=DeploymentOutputSerializer)
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(RollbackInputSerializer, request.data)
        expected_status = self._expected_status(data, seen)
        deployment = services.deployment_rollback(
            deployment_id=pk, actor=request.user, expected_status=expected_status, **data
        )
        return self._respond(deployment)

    @extend_schema(request=DeprecateInputSerializer, responses=DeploymentOutputSerializer)
    @action(detail=True, methods=["post"])
    def deprecate(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(DeprecateInputSerializer, request.data)
        deployment = services.deployment_deprecate(
            deployment_id=pk, actor=request.user, expected_status=self._expected_status(data, seen)
        )
        return self._respond(deployment)

    def _plan(self, deployment: Any) -> Response:
        fresh = selectors.deployment_get(deployment_id=deployment.pk)
        return Response(PlanOutputSerializer(selectors.deployment_plan_get(deployment=fresh)).data)

    @extend_schema(filters=False, responses=PlanOutputSerializer)
    @action(detail=True, methods=["get"])
    def plan(self, request: Request, pk: str) -> Response:
        return self._plan(self.get_object())

    @extend_schema(request=PauseInputSerializer, responses=PlanOutputSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(PauseInputSerializer, request.data)
        services.deployment_pause(
            deployment_id=pk,
            actor=request.user,
            reason=data.get("reason"),
            expected_status=self._expected_status(data, seen),
        )
        return self._plan(seen)

    @extend_schema(request=ResumeInputSerializer, responses=PlanOutputSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        seen = self.get_object()
        data = validated(ResumeInputSerializer, request.data)
        services.deployment_resume(
            deployment_id=pk, actor=request.user, expected_status=self._expected_status(data, seen)
        )
        return self._plan(seen)

    @extend_schema(filters=False, responses=DeploymentEventOutputSerializer(many=True))
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        page = self.paginate_queryset(selectors.deployment_event_list(deployment=deployment))
        return self.get_paginated_response(DeploymentEventOutputSerializer(page, many=True).data)
