"""Backtests and the preflight checklist (SPEC 10.2): thin views over ``automation``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary.api.pagination import PageNumberPagination
from canary.api.permissions import RolePermission
from canary.api.serializers import StrictInputSerializer
from canary.roles import TEST_RULESETVERSION
from deployments.api.serializers import validated
from deployments.selectors import deployment_get, ruleset_get
from monitoring.api.serializers import DecisionChangeSerializer, ShadowOutcomesSerializer
from monitoring.automation import backtests
from monitoring.automation.preflight import deployment_preflight

PAGE_PARAMETERS = [
    OpenApiParameter("page", int, required=False),
    OpenApiParameter("page_size", int, required=False),
]


class BacktestCreateInputSerializer(StrictInputSerializer):
    version = serializers.CharField(max_length=64)
    against = serializers.CharField(max_length=64, required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=backtests.MAX_LIMIT)
    expect_changes = serializers.CharField(
        required=False,
        max_length=backtests.MAX_EXPECT_CHANGES,
        help_text="A CEL condition over `input`: the inputs the change is meant to affect.",
    )


class BacktestOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    ruleset_id = serializers.UUIDField()
    version = serializers.CharField()
    against = serializers.CharField()
    status = serializers.CharField()
    progress = serializers.DictField()
    evaluated = serializers.IntegerField()
    agreed = serializers.IntegerField()
    disagreed = serializers.IntegerField()
    disagreement_rate = serializers.FloatField(allow_null=True)
    disagreement_rate_ci = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    outcomes = ShadowOutcomesSerializer()
    changes = DecisionChangeSerializer(many=True)
    latency = serializers.DictField()
    expect_changes = serializers.CharField(allow_null=True)
    unexpected = serializers.DictField()
    limit = serializers.IntegerField()
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_null=True)


class DifferenceSerializer(serializers.Serializer):
    input = serializers.JSONField()
    v1_output = serializers.JSONField(allow_null=True)
    v2_output = serializers.JSONField(allow_null=True)
    v1_rule = serializers.CharField(allow_null=True)
    v2_rule = serializers.CharField(allow_null=True)
    expected = serializers.BooleanField(allow_null=True)


class _PageSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)


class BacktestPageSerializer(_PageSerializer):
    results = BacktestOutputSerializer(many=True)


class DifferencePageSerializer(_PageSerializer):
    results = DifferenceSerializer(many=True)


class PreflightCheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    passed = serializers.BooleanField()
    required = serializers.BooleanField()
    observed = serializers.JSONField(allow_null=True)
    detail = serializers.CharField()


class PreflightOutputSerializer(serializers.Serializer):
    ready = serializers.BooleanField()
    checks = PreflightCheckSerializer(many=True)


class _View(APIView):
    permission_classes = [RolePermission]

    @property
    def action(self) -> str:
        """The permission to check is named by the method; HEAD is a GET."""
        method = (self.request.method or "GET").lower() if self.request is not None else "get"
        return "get" if method == "head" else method


def _page(view: APIView, request: Request, queryset: Any, rows: Any) -> Response:
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    assert paginator.page is not None and page is not None
    return Response(
        {
            "total": paginator.page.paginator.count,
            "page": paginator.page.number,
            "page_size": paginator.get_page_size(request),
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
            "results": rows(page),
        }
    )


class RuleSetBacktestsView(_View):
    """``GET``: the rule set's backtests, newest first; ``POST`` (Approver): queue one."""

    required_permissions = {"get": "deployments.view_ruleset", "post": TEST_RULESETVERSION}

    @extend_schema(parameters=PAGE_PARAMETERS, responses=BacktestPageSerializer)
    def get(self, request: Request, ruleset_id: str) -> Response:
        ruleset = ruleset_get(ruleset_id=ruleset_id)
        return _page(
            self,
            request,
            backtests.backtest_list(ruleset_id=ruleset.pk),
            lambda page: (
                BacktestOutputSerializer(
                    [backtests.backtest_report(backtest) for backtest in page], many=True
                ).data
            ),
        )

    @extend_schema(request=BacktestCreateInputSerializer, responses={202: BacktestOutputSerializer})
    def post(self, request: Request, ruleset_id: str) -> Response:
        ruleset = ruleset_get(ruleset_id=ruleset_id)
        data = validated(BacktestCreateInputSerializer, request.data)
        backtest = backtests.backtest_create(ruleset_id=ruleset.pk, actor=request.user, **data)
        fresh = backtests.backtest_get(backtest_id=backtest.pk)
        return Response(
            BacktestOutputSerializer(backtests.backtest_report(fresh)).data,
            status=status.HTTP_202_ACCEPTED,
        )


class BacktestView(_View):
    required_permissions = {"get": "deployments.view_ruleset"}

    @extend_schema(responses=BacktestOutputSerializer)
    def get(self, request: Request, backtest_id: str) -> Response:
        backtest = backtests.backtest_get(backtest_id=backtest_id)
        return Response(BacktestOutputSerializer(backtests.backtest_report(backtest)).data)


class BacktestDifferencesView(_View):
    """The inputs on which the versions disagreed, in the backtest's order (newest first)."""

    required_permissions = {"get": "deployments.view_ruleset"}

    @extend_schema(parameters=PAGE_PARAMETERS, responses=DifferencePageSerializer)
    def get(self, request: Request, backtest_id: str) -> Response:
        backtest = backtests.backtest_get(backtest_id=backtest_id)
        return _page(
            self,
            request,
            backtests.backtest_differences(backtest=backtest),
            lambda page: (
                DifferenceSerializer(
                    [
                        {
                            "input": row.input,
                            "v1_output": row.v1_output,
                            "v2_output": row.v2_output,
                            "v1_rule": row.v1_rule or None,
                            "v2_rule": row.v2_rule or None,
                            "expected": row.expected,
                        }
                        for row in page
                    ],
                    many=True,
                ).data
            ),
        )


class DeploymentPreflightView(_View):
    """The guide's "before the start" checklist of a draft."""

    required_permissions = {"get": "deployments.view_deployment"}

    @extend_schema(responses=PreflightOutputSerializer)
    def get(self, request: Request, deployment_id: str) -> Response:
        deployment = deployment_get(deployment_id=deployment_id)
        return Response(deployment_preflight(deployment=deployment))
