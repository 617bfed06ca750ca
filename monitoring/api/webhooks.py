"""Webhooks and triggers over REST (SPEC 10.4): Admin only, except a trigger's own URL."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary.api.pagination import PageNumberPagination
from canary.api.permissions import RolePermission
from canary.api.serializers import StrictInputSerializer
from deployments.api.serializers import validated
from monitoring.automation import triggers
from monitoring.models import Trigger, Webhook, WebhookDelivery
from monitoring.notifications import webhooks

MAX_TRIGGER_BODY = 1024 * 1024

# --- serializers ---------------------------------------------------------------------------


class WebhookCreateInputSerializer(StrictInputSerializer):
    name = serializers.JSONField()
    url = serializers.JSONField()
    events = serializers.JSONField()
    ruleset_ids = serializers.JSONField(required=False)


class WebhookUpdateInputSerializer(StrictInputSerializer):
    name = serializers.JSONField(required=False)
    url = serializers.JSONField(required=False)
    events = serializers.JSONField(required=False)
    ruleset_ids = serializers.JSONField(required=False)
    active = serializers.JSONField(required=False)


class WebhookOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Webhook
        fields = ["id", "name", "url", "events", "ruleset_ids", "active", "created_at"]


class WebhookCreatedOutputSerializer(WebhookOutputSerializer):
    secret = serializers.CharField(help_text="The signing secret, shown only now.")

    class Meta(WebhookOutputSerializer.Meta):
        fields = [*WebhookOutputSerializer.Meta.fields, "secret"]


class DeliveryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "created_at",
            "delivered_at",
        ]


class DeliveryPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = DeliveryOutputSerializer(many=True)


class TriggerCreateInputSerializer(StrictInputSerializer):
    name = serializers.JSONField()
    ruleset_id = serializers.JSONField()
    action = serializers.JSONField()


class TriggerOutputSerializer(serializers.ModelSerializer):
    ruleset_id = serializers.UUIDField(read_only=True)
    action = serializers.CharField(read_only=True, help_text="rollback or pause")

    class Meta:
        model = Trigger
        fields = ["id", "name", "ruleset_id", "action", "created_at", "last_fired_at"]


class TriggerCreatedOutputSerializer(TriggerOutputSerializer):
    url = serializers.CharField(help_text="The trigger's secret URL, shown only now.")

    class Meta(TriggerOutputSerializer.Meta):
        fields = [*TriggerOutputSerializer.Meta.fields, "url"]


class TriggerFiredOutputSerializer(serializers.Serializer):
    acted = serializers.BooleanField()
    deployment_id = serializers.UUIDField(required=False)
    action = serializers.CharField(required=False)
    detail = serializers.CharField(required=False)


# --- webhooks ------------------------------------------------------------------------------


class _AdminView(APIView):
    permission_classes = [RolePermission]


class WebhookListView(_AdminView):
    required_permissions = {"list": "monitoring.view_webhook", "create": "monitoring.add_webhook"}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.action = "create" if request.method == "POST" else "list"
        super().initial(request, *args, **kwargs)

    @extend_schema(responses=WebhookOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        hooks = Webhook.objects.order_by("name", "created_at")
        return Response(WebhookOutputSerializer(hooks, many=True).data)

    @extend_schema(
        request=WebhookCreateInputSerializer, responses={201: WebhookCreatedOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        data = validated(WebhookCreateInputSerializer, request.data)
        webhook = webhooks.webhook_create(**data, created_by=request.user)
        return Response(
            WebhookCreatedOutputSerializer(webhook).data, status=status.HTTP_201_CREATED
        )


class WebhookDetailView(_AdminView):
    required_permissions = {
        "retrieve": "monitoring.view_webhook",
        "partial_update": "monitoring.change_webhook",
        "destroy": "monitoring.delete_webhook",
    }

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.action = {"PATCH": "partial_update", "DELETE": "destroy"}.get(
            request.method or "", "retrieve"
        )
        super().initial(request, *args, **kwargs)

    @extend_schema(responses=WebhookOutputSerializer)
    def get(self, request: Request, webhook_id: str) -> Response:
        webhook = webhooks.webhook_get(webhook_id=webhook_id)
        return Response(WebhookOutputSerializer(webhook).data)

    @extend_schema(request=WebhookUpdateInputSerializer, responses=WebhookOutputSerializer)
    def patch(self, request: Request, webhook_id: str) -> Response:
        data = validated(WebhookUpdateInputSerializer, request.data)
        webhook = webhooks.webhook_update(webhook_id=webhook_id, changes=data)
        return Response(WebhookOutputSerializer(webhook).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, webhook_id: str) -> Response:
        webhooks.webhook_delete(webhook_id=webhook_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveriesView(_AdminView):
    action = "list"
    required_permissions = {"list": "monitoring.view_webhookdelivery"}

    @extend_schema(responses=DeliveryPageSerializer)
    def get(self, request: Request, webhook_id: str) -> Response:
        webhook = webhooks.webhook_get(webhook_id=webhook_id)
        paginator = PageNumberPagination()
        deliveries = WebhookDelivery.objects.filter(webhook=webhook).order_by("-created_at", "id")
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(DeliveryOutputSerializer(page, many=True).data)


class WebhookRedeliverView(_AdminView):
    action = "redeliver"
    required_permissions = {"redeliver": "monitoring.change_webhookdelivery"}

    @extend_schema(request=None, responses={202: DeliveryOutputSerializer})
    def post(self, request: Request, webhook_id: str, delivery_id: str) -> Response:
        delivery = webhooks.delivery_redeliver(webhook_id=webhook_id, delivery_id=delivery_id)
        return Response(DeliveryOutputSerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


# --- triggers ------------------------------------------------------------------------------


class TriggerListView(_AdminView):
    required_permissions = {"list": "monitoring.view_trigger", "create": "monitoring.add_trigger"}

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        self.action = "create" if request.method == "POST" else "list"
        super().initial(request, *args, **kwargs)

    @extend_schema(responses=TriggerOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        found = Trigger.objects.order_by("name", "created_at")
        return Response(TriggerOutputSerializer(found, many=True).data)

    @extend_schema(
        request=TriggerCreateInputSerializer, responses={201: TriggerCreatedOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        data = validated(TriggerCreateInputSerializer, request.data)
        trigger, url = triggers.trigger_create(**data, created_by=request.user)
        body = {**TriggerOutputSerializer(trigger).data, "url": url}
        return Response(body, status=status.HTTP_201_CREATED)


class TriggerDetailView(_AdminView):
    action = "destroy"
    required_permissions = {"destroy": "monitoring.delete_trigger"}

    @extend_schema(responses={204: None})
    def delete(self, request: Request, trigger_id: str) -> Response:
        triggers.trigger_delete(trigger_id=trigger_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TriggerFireView(APIView):
    """The secret URL itself: any body, no other authentication (the URL is the secret)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []
    parser_classes: list[Any] = []

    @extend_schema(
        operation_id="v1_triggers_fire",
        request=None,
        responses={202: TriggerFiredOutputSerializer, 200: TriggerFiredOutputSerializer},
    )
    def post(self, request: Request, trigger_id: str, secret: str) -> Response:
        raw = request._request.read(MAX_TRIGGER_BODY)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body = None  # any body is accepted; only a JSON object's reason is read
        answer = triggers.trigger_fire(trigger_id=trigger_id, secret=secret, body=body)
        code = status.HTTP_202_ACCEPTED if answer["acted"] else status.HTTP_200_OK
        return Response(answer, status=code)
