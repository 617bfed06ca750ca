"""OFREP over the API (SPEC §10.5): the answers of ``assignments.ofrep``, for a request the
data plane's fast path hands over (a client token, a browser's ``Origin``, a body it
does not accept without doubt, Redis down), so both paths answer alike."""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from assignments import ofrep
from assignments.api.authentication import client_grant
from assignments.api.throttling import ClientAddressThrottle
from canary.api.throttling import ScopedClientThrottle


class OfrepEvaluationRequest(serializers.Serializer):
    context = serializers.DictField(
        required=False, help_text="targetingKey (the user id), sessionId, workflowId"
    )


class OfrepFlagMetadata(serializers.Serializer):
    deploymentId = serializers.UUIDField()
    version = serializers.CharField()


class OfrepEvaluationSuccess(serializers.Serializer):
    key = serializers.CharField()
    value = serializers.ChoiceField(choices=["v1", "v2"])
    variant = serializers.ChoiceField(choices=["v1", "v2"])
    reason = serializers.ChoiceField(choices=["STATIC", "SPLIT", "TARGETING_MATCH", "DEFAULT"])
    metadata = OfrepFlagMetadata()


class OfrepBulkEvaluation(serializers.Serializer):
    flags = OfrepEvaluationSuccess(many=True)


class OfrepFailure(serializers.Serializer):
    key = serializers.CharField(required=False)
    errorCode = serializers.CharField()
    errorDetails = serializers.CharField()


_FAILURE = OpenApiResponse(
    OfrepFailure, description="FLAG_NOT_FOUND (404); INVALID_CONTEXT or PARSE_ERROR (400)"
)
_REQUEST = {"application/json": OfrepEvaluationRequest}
_FLAG_SCHEMA: dict[str, Any] = {
    "request": _REQUEST,
    "responses": {200: OfrepEvaluationSuccess, 400: _FAILURE, 404: _FAILURE},
}
_BULK_SCHEMA: dict[str, Any] = {
    "request": _REQUEST,
    "responses": {
        200: OfrepBulkEvaluation,
        304: OpenApiResponse(description="Unchanged since the ETag in If-None-Match."),
        400: _FAILURE,
    },
}


def json_answer(body: dict[str, Any], status: int = 200, **headers: str) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response


def bulk_answer(body: dict[str, Any], if_none_match: str | None) -> HttpResponse:
    payload = orjson.dumps(body)
    etag = ofrep.etag_of(payload)
    if ofrep.not_modified(if_none_match, etag):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(payload, content_type="application/json")
    response["ETag"] = etag
    return response


class _OfrepView(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ScopedClientThrottle, ClientAddressThrottle]
    throttle_scope = "dataplane"
    accepts_client_tokens = True
    client_token_methods = ("POST",)
    parser_classes: list[Any] = []  # the body is read as the protocol says (PARSE_ERROR)

    def _allowed(self, request: Request) -> frozenset[str] | None:
        grant = client_grant(request)
        return grant.ruleset_ids if grant is not None else None


class OfrepFlagView(_OfrepView):
    @extend_schema(operation_id="ofrep_evaluate_flag", **_FLAG_SCHEMA)
    def post(self, request: Request, key: str) -> HttpResponse:
        try:
            context = ofrep.routing_context(ofrep.parse_body(request.body))
            body = ofrep.evaluate_flag(key, context, allowed=self._allowed(request))
        except ofrep.OfrepError as exc:
            exc.key = key
            return json_answer(exc.body(), exc.status)
        return json_answer(body)


class OfrepBulkView(_OfrepView):
    @extend_schema(operation_id="ofrep_evaluate_flags", **_BULK_SCHEMA)
    def post(self, request: Request) -> HttpResponse:
        try:
            context = ofrep.routing_context(ofrep.parse_body(request.body))
        except ofrep.OfrepError as exc:
            return json_answer(exc.body(), exc.status)
        body = ofrep.evaluate_all(context, allowed=self._allowed(request))
        return bulk_answer(body, request.headers.get("If-None-Match"))
