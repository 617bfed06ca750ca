"""Webhooks and triggers in the admin (SPEC 10.4), Admin role only (their model permissions).

Writes go through the same services as the API: ``monitoring.notifications.webhooks``
and ``monitoring.automation.triggers``. A webhook's page lists its deliveries, each
with a redeliver button; a secret (webhook) or secret URL (trigger) is shown once,
in the message after it is created.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from canary.errors import DomainError
from deployments.models import RuleSet
from monitoring.automation import triggers
from monitoring.models import Trigger, Webhook, WebhookDelivery
from monitoring.notifications import sender, webhooks

DELIVERIES_SHOWN = 50


class WebhookForm(forms.ModelForm):
    url = forms.CharField(max_length=2000, help_text="http or https; vetted as deliveries are.")
    events = forms.MultipleChoiceField(
        choices=[("*", "every event")] + [(name, name) for name in webhooks.EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
    )
    rulesets = forms.ModelMultipleChoiceField(
        queryset=RuleSet.objects.order_by("name"),
        required=False,
        help_text="None selected: every rule set.",
    )

    class Meta:
        model = Webhook
        fields = ["name", "url", "events", "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["rulesets"] = self.instance.ruleset_ids

    def clean_url(self) -> str:
        url = str(self.cleaned_data["url"])
        try:
            sender.url_vet(url)
        except sender.UnsafeURL as exc:
            raise forms.ValidationError(str(exc)) from None
        return url

    def clean_events(self) -> list[str]:
        events = list(self.cleaned_data["events"])
        return ["*"] if "*" in events else events


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    show_change_link = False
    fields = [
        "created_at",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "redeliver",
    ]
    readonly_fields = fields
    ordering = ["-created_at"]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).order_by("-created_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="")
    def redeliver(self, delivery: WebhookDelivery) -> str:
        url = reverse("admin:monitoring_webhook_redeliver", args=[delivery.webhook_id, delivery.pk])
        return format_html(
            '<button type="submit" class="button" formaction="{}" formmethod="post">'
            "Redeliver</button>",
            url,
        )


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookForm
    list_display = ["name", "url", "event_list", "active", "created_at"]
    search_fields = ["name", "url"]
    inlines = [DeliveryInline]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["name", "url", "events", "rulesets", "active"]

    @admin.display(description="events")
    def event_list(self, webhook: Webhook) -> str:
        return ", ".join(webhook.events)

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return [DeliveryInline] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Webhook, form: Any, change: bool) -> None:
        rulesets = [str(ruleset.pk) for ruleset in form.cleaned_data.get("rulesets") or []]
        data = form.cleaned_data
        if change:
            webhooks.webhook_update(
                webhook_id=obj.pk,
                changes={
                    "name": data["name"],
                    "url": data["url"],
                    "events": data["events"],
                    "ruleset_ids": rulesets,
                    "active": data["active"],
                },
            )
            return
        created = webhooks.webhook_create(
            name=data["name"],
            url=data["url"],
            events=data["events"],
            ruleset_ids=rulesets,
            created_by=request.user,  # type: ignore[arg-type]
        )
        obj.pk = created.pk
        obj.secret = created.secret
        messages.warning(
            request,
            f"The signing secret of {created.name}, shown only now: {created.secret}",
        )

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<uuid:webhook_id>/redeliver/<uuid:delivery_id>/",
                self.admin_site.admin_view(self.redeliver_view),
                name="monitoring_webhook_redeliver",
            )
        ]
        return extra + super().get_urls()

    def redeliver_view(self, request: HttpRequest, webhook_id: Any, delivery_id: Any) -> Any:
        if request.method != "POST" or not request.user.has_perm(
            "monitoring.change_webhookdelivery"
        ):
            raise PermissionDenied("Only an Admin may redeliver.")
        try:
            webhooks.delivery_redeliver(webhook_id=webhook_id, delivery_id=delivery_id)
            messages.success(request, "The delivery is queued again, with the same id.")
        except DomainError as exc:
            messages.error(request, exc.detail)
        return HttpResponseRedirect(reverse("admin:monitoring_webhook_change", args=[webhook_id]))


class TriggerForm(forms.ModelForm):
    class Meta:
        model = Trigger
        fields = ["name", "ruleset", "action"]


@admin.register(Trigger)
class TriggerAdmin(admin.ModelAdmin):
    form = TriggerForm
    list_display = ["name", "ruleset", "action", "created_at", "last_fired_at"]
    search_fields = ["name", "ruleset__name"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "ruleset", "action"]
        return ["name", "ruleset", "action", "created_at", "last_fired_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else ["name", "ruleset", "action", "created_at", "last_fired_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # created or revoked, never edited

    def save_model(self, request: HttpRequest, obj: Trigger, form: Any, change: bool) -> None:
        data = form.cleaned_data
        trigger, url = triggers.trigger_create(
            name=data["name"],
            ruleset_id=data["ruleset"].pk,
            action=data["action"],
            created_by=request.user,  # type: ignore[arg-type]
        )
        obj.pk = trigger.pk
        messages.warning(request, f"The URL of trigger {trigger.name}, shown only now: {url}")

    def delete_model(self, request: HttpRequest, obj: Trigger) -> None:
        triggers.trigger_delete(trigger_id=obj.pk)
